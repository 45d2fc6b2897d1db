"""FedALT's adaptive mixing of two LoRAs per layer (https://arxiv.org/abs/2503.11880).

Every adapted linear layer computes

    h = W0 x + s [g_row(x) B_row A_row x + g_own(x) B_own A_own x],   g(x) = softmax(G x)

per token, with ``G`` a bias-free ``Linear(d_in -> 2)`` (the mixer), the own LoRA the PEFT
adapter the client trains, and the rest-of-world LoRA a frozen copy of what the server
sent. PEFT has no such layer, so it is written here: a forward hook on each PEFT LoRA
layer adds the mixed term while that layer's own scaling is held at zero (PEFT still
computes the plain ``s B A x``, times zero), and the mixers are attached to the model (a
``fedalt_gates`` module dict beside PEFT's tuner layers, so PEFT's adapter state never
holds them) so that the one training loop optimizes them with the own LoRA.
``fixed=True`` is the paper's ablation: ``g = (0.5, 0.5)``, no mixer. A fresh mixer starts
as the reference code's (``nn.Linear``'s default initialization, Kaiming-uniform with
``a = sqrt(5)``: each weight uniform in +-1/sqrt(d_in)), drawn from the client's own seed
so that every engine and a resumed run start it alike, and learns from there. Where a layer's input dropout is
active, both LoRAs see the same dropped input.
"""

from __future__ import annotations

import numpy as np
import torch
from peft.tuners.lora import LoraLayer

from fedvlm.core.lora import lora_pairs
from fedvlm.core.types import AdapterState

ADAPTER = "default"
GATE = "fedalt_gate"  # state keys: <layer>.fedalt_gate.weight
GATES = "fedalt_gates"  # the model's module dict of mixers while installed


def _tensor(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device, like.dtype)


class MixedLoRA:
    """The mixing installed on ``model``'s LoRA layers until `remove`: ``row`` the
    rest-of-world arrays (adapter-state keys), ``mixer`` the gates' weights
    (``<layer>.fedalt_gate.weight``; None: fresh, drawn from ``init_seed``, layer by layer
    in the model's order)."""

    def __init__(self, model, row: AdapterState, mixer: AdapterState | None = None, fixed: bool = False,
                 init_seed: int = 0):
        self.fixed = fixed
        self.model = model
        self.layers: dict[str, LoraLayer] = {}
        self.mixers: dict[str, torch.nn.Linear] = {}
        self.row: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles, self._scaling = [], {}
        pairs = lora_pairs(row)
        fresh = torch.Generator().manual_seed(init_seed)
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or name not in pairs:
                continue
            a_key, b_key = pairs[name]
            a_own = module.lora_A[ADAPTER].weight
            self.layers[name] = module
            self.row[name] = (_tensor(row[a_key], a_own), _tensor(row[b_key], a_own))
            if not fixed:
                gate = torch.nn.Linear(a_own.shape[1], 2, bias=False, device=a_own.device, dtype=a_own.dtype)
                key = f"{name}.{GATE}.weight"
                with torch.no_grad():
                    if mixer and key in mixer:
                        gate.weight.copy_(_tensor(mixer[key], a_own))
                    else:  # nn.Linear's own initialization, from the client's seed
                        init = torch.empty(gate.weight.shape, dtype=torch.float32)
                        torch.nn.init.kaiming_uniform_(init, a=5**0.5, generator=fresh)
                        gate.weight.copy_(init.to(gate.weight))
                self.mixers[name] = gate
            self._scaling[name] = module.scaling[ADAPTER]
            module.scaling[ADAPTER] = 0.0
            self._handles.append(module.register_forward_hook(self._hook(name)))
        if not self.layers:
            raise ValueError("FedALT: no LoRA layer of the model matches the rest-of-world arrays")
        if self.mixers:
            model.add_module(GATES, torch.nn.ModuleDict({n.replace(".", "/"): g for n, g in self.mixers.items()}))

    def gates(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``(g_row, g_own)`` per token of input ``x`` to layer ``name``: the last dim, 2."""
        if self.fixed:
            return torch.full((*x.shape[:-1], 2), 0.5, device=x.device, dtype=x.dtype)
        gate = self.mixers[name]
        return torch.softmax(gate(x.to(gate.weight.dtype)), dim=-1)

    def _hook(self, name: str):
        module, s = self.layers[name], self._scaling[name]

        def hook(_module, args, output):
            a_own, b_own = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
            a_row, b_row = self.row[name]
            x = module.lora_dropout[ADAPTER](args[0].to(a_own.dtype))
            own = torch.nn.functional.linear(torch.nn.functional.linear(x, a_own), b_own)
            row = torch.nn.functional.linear(torch.nn.functional.linear(x, a_row), b_row)
            g = self.gates(name, args[0].to(a_own.dtype))
            return output + (s * (g[..., :1] * row + g[..., 1:] * own)).to(output.dtype)

        return hook

    def orthogonality(self) -> torch.Tensor:
        """FedALT-VLM's penalty: ``sum |cos(vec A_own, vec A_row)|`` over the layers whose
        rest of world is not empty (its B has a non-zero entry)."""
        terms = [
            torch.nn.functional.cosine_similarity(
                self.layers[name].lora_A[ADAPTER].weight.flatten(), a_row.flatten(), dim=0
            ).abs()
            for name, (a_row, b_row) in self.row.items()
            if bool(b_row.any())
        ]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def mixer_state(self) -> AdapterState:
        """The gates' weights, to keep in the client's store (empty when fixed)."""
        if self.fixed:
            return {}
        return {
            f"{name}.{GATE}.weight": gate.weight.detach().float().cpu().numpy().copy()
            for name, gate in self.mixers.items()
        }

    def remove(self) -> None:
        """Give the model its plain LoRA layers back."""
        for handle in self._handles:
            handle.remove()
        for name, module in self.layers.items():
            module.scaling[ADAPTER] = self._scaling[name]
        if GATES in self.model._modules:
            del self.model._modules[GATES]
        self._handles = []
