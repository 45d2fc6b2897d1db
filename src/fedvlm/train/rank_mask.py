"""Train a lower LoRA rank inside a higher-rank adapter (heterogeneous client ranks)."""

import torch


class RankMask:
    """Zero the gradients of LoRA components at index >= ``rank`` (A's rows, B's columns).

    With those components zero at the start, AdamW leaves them zero (zero gradient, zero
    moments, decoupled weight decay of zero), so the client trains exactly a rank-``rank``
    LoRA inside the shared model's rank-``r_max`` adapter: the zero-padding view of HetLoRA
    (https://arxiv.org/abs/2401.06432) with one alpha/r scaling for all ranks.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], rank: int):
        self.handles = []
        for key, p in params.items():
            if key.endswith(".lora_A.weight"):
                mask = torch.zeros_like(p)
                mask[:rank] = 1
            elif key.endswith(".lora_B.weight"):
                mask = torch.zeros_like(p)
                mask[:, :rank] = 1
            else:
                continue
            self.handles.append(p.register_hook(lambda g, m=mask: g * m))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
