"""Train a lower LoRA rank inside a higher-rank adapter (heterogeneous client ranks)."""

import numpy as np
import torch

from fedvlm.core.lora import A_SUFFIX, B_SUFFIX


def within_rank(shapes: dict[str, tuple[int, ...]], rank: int) -> dict[str, np.ndarray]:
    """Per adapter key a boolean mask of the entries a rank-``rank`` client owns: A's first
    ``rank`` rows, B's first ``rank`` columns, every entry of any other array."""
    masks = {}
    for key, shape in shapes.items():
        mask = np.zeros(shape, dtype=bool)
        if key.endswith(A_SUFFIX):
            mask[:rank] = True
        elif key.endswith(B_SUFFIX):
            mask[:, :rank] = True
        else:
            mask[...] = True
        masks[key] = mask
    return masks


class RankMask:
    """Zero the gradients of LoRA components at index >= ``rank`` (A's rows, B's columns).

    With those components zero at the start, AdamW leaves them zero (zero gradient, zero
    moments, decoupled weight decay of zero), so the client trains exactly a rank-``rank``
    LoRA inside the shared model's rank-``r_max`` adapter: the zero-padding view of HetLoRA
    (https://arxiv.org/abs/2401.06432) with one alpha/r scaling for all ranks.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], rank: int):
        lora = {k: tuple(p.shape) for k, p in params.items() if k.endswith((A_SUFFIX, B_SUFFIX))}
        self.handles = []
        for key, mask in within_rank(lora, rank).items():
            m = torch.from_numpy(mask).to(params[key].device, params[key].dtype)
            self.handles.append(params[key].register_hook(lambda g, m=m: g * m))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
