"""Base weights that absorb merged LoRA updates (FLoRA, FedEx-LoRA) in the one shared model.

The server keeps the merged updates as factors ``B A`` per layer (scaling 1). Every time
they change, each adapted layer's base weight is recomputed as ``W0 + B A`` from a kept copy
of the original ``W0``, never by adding increments, so a resumed run computes exactly the
same weights as an uninterrupted one.
"""

import numpy as np
import torch
from peft.tuners.lora import LoraLayer

from fedvlm.core.lora import lora_pairs
from fedvlm.core.types import AdapterState
from fedvlm.errors import ModelError
from fedvlm.models.load import is_quantized


class MergedBase:
    def __init__(self, model, aggregation: str):
        if is_quantized(model):
            raise ModelError(
                f"federated.aggregation={aggregation} merges updates into the base weights, "
                "which needs a full-precision base; this model is quantized (load it without 4/8-bit)"
            )
        self.layers = {
            name: module.get_base_layer()
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer)
        }
        self.original = {name: layer.weight.detach().clone() for name, layer in self.layers.items()}

    @torch.no_grad()
    def apply(self, delta: AdapterState) -> None:
        """Set every adapted layer's weight to ``W0 + B A`` (``W0`` where ``delta`` has none)."""
        merged = {prefix: pair for prefix, pair in lora_pairs(delta).items()} if delta else {}
        for name, layer in self.layers.items():
            w0 = self.original[name]
            if name in merged:
                a_key, b_key = merged[name]
                b = torch.from_numpy(np.ascontiguousarray(delta[b_key])).to(w0.device, w0.dtype)
                a = torch.from_numpy(np.ascontiguousarray(delta[a_key])).to(w0.device, w0.dtype)
                layer.weight.copy_(w0 + b @ a)
            else:
                layer.weight.copy_(w0)


def export_merged(state: AdapterState, delta: AdapterState, scaling: float) -> tuple[AdapterState, dict]:
    """One standard LoRA adapter equal to ``base delta + current LoRA``: A stacks
    ``[A_delta; A]``, B stacks ``[B_delta, s B]``, with ``lora_alpha = r`` (scaling 1).
    Returns the state and the adapter-config fields to override (``r``, ``lora_alpha``)."""
    if not delta:
        return state, {}
    out = dict(state)
    rank = None
    for a_key, b_key in lora_pairs(state).values():
        out[a_key] = np.vstack([delta[a_key], state[a_key]])
        out[b_key] = np.hstack([delta[b_key], scaling * state[b_key].astype(np.float64)]).astype(state[b_key].dtype)
        rank = out[a_key].shape[0]
    return out, {"r": rank, "lora_alpha": rank}
