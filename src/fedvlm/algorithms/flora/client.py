"""A node's base weights absorbing merged LoRA updates (FLoRA, FedEx-LoRA).

Each adapted layer's base weight is recomputed as ``W0 + B A`` from a kept copy of the
original ``W0``, never by adding increments, so a resumed run computes exactly the same
weights as an uninterrupted one. One instance per loaded model: in the simulator every
client shares it, and it recomputes only when the delta asked for differs from the one
applied.
"""

import numpy as np
import torch
from peft.tuners.lora import LoraLayer

from fedvlm.core.base_delta import extend
from fedvlm.core.lora import A_SUFFIX, lora_pairs
from fedvlm.core.types import AdapterState
from fedvlm.errors import ModelError
from fedvlm.models.load import is_quantized


def _fingerprint(delta: AdapterState) -> tuple:
    """Identifies a base delta of one run: its rank and the last row of its first A (the
    factors only grow, so two deltas of a run with the same rank are the same)."""
    a = next((a for k, a in sorted(delta.items()) if k.endswith(A_SUFFIX)), None)
    return (0, b"") if a is None else (a.shape[0], a[-1].tobytes())


class MergedBase:
    def __init__(self, model, what: str = "this variant"):
        if is_quantized(model):
            raise ModelError(
                f"{what} merges updates into the base weights, which needs a full-precision base; "
                "this model is quantized (load it without 4/8-bit)"
            )
        self.layers = {
            name: module.get_base_layer()
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer)
        }
        self.original = {name: layer.weight.detach().clone() for name, layer in self.layers.items()}
        self.applied = _fingerprint({})

    @torch.no_grad()
    def apply(self, delta: AdapterState) -> None:
        """Set every adapted layer's weight to ``W0 + B A`` (``W0`` where ``delta`` has none)."""
        if _fingerprint(delta) == self.applied:
            return
        merged = lora_pairs(delta) if delta else {}
        for name, layer in self.layers.items():
            w0 = self.original[name]
            if name in merged:
                a_key, b_key = merged[name]
                # in float32, rounded once to the base's dtype (a 16-bit product would round twice)
                b = torch.from_numpy(np.ascontiguousarray(delta[b_key])).to(w0.device, torch.float32)
                a = torch.from_numpy(np.ascontiguousarray(delta[a_key])).to(w0.device, torch.float32)
                layer.weight.copy_((w0.float() + b @ a).to(w0.dtype))
            else:
                layer.weight.copy_(w0)
        self.applied = _fingerprint(delta)


class BaseIncrements:
    """The client side of FLoRA / FedEx-LoRA: add the factors the server sent
    (``extras["base_increment"]``, possibly none this round) to the delta this node holds
    in its store, and train on ``W0 + delta``. Nothing goes back beyond the usual update."""

    KEY = "base_increment"

    @staticmethod
    def applies(config, extras: dict) -> bool:
        return BaseIncrements.KEY in extras

    def __init__(self, node, config, extras: dict, start: AdapterState):
        if node.base is None:
            raise ModelError(f"client {node.client_id}: the server sent base increments, and this node's model cannot absorb them")
        held = node.store.load("base_delta", before_round=config.round) or {}
        if extras[self.KEY]:
            held = extend(held, extras[self.KEY])
            node.store.save("base_delta", held, config.round)
        node.base.apply(held)
        self.hooks = []

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        return {}
