"""SCAFFOLD's client side: control-variate corrected local steps, active when the server sends
its control variate ``c``; the client's own ``c_i`` lives in its store and back goes
``extras["dc"] = c_i+ - c_i``.

SCAFFOLD (Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378), option II. The paper's
local step is ``y <- y - lr (g(y) - c_i + c)``. fedvlm's local optimizer is AdamW, whose
step is not ``lr * g``, so, as OpenFedLLM does, the correction is applied after each
optimizer step as ``y <- y - lr_t (c - c_i)``. The new client control variate uses the sum
of the step sizes actually taken, ``c_i+ = c_i - c + (x - y) / sum_t lr_t``, which is the
paper's ``(x - y) / (K lr)`` when the learning rate is constant; ``x`` is where this client
started, its own payload.

A client of a lower LoRA rank (heterogeneous ranks) owns only its first components: the
correction is applied to those only, and outside them ``c_i`` stays as it was (``dc = 0``).
"""

import numpy as np
import torch

from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import trainable_by_state_key
from fedvlm.train.rank_mask import within_rank


class ScaffoldCorrection:
    """``owned``: per key a boolean mask of the entries this client trains (None: all)."""

    def __init__(
        self,
        params: dict[str, torch.nn.Parameter],
        c: AdapterState,
        c_i: AdapterState,
        owned: dict[str, np.ndarray] | None = None,
    ):
        self.params = params
        self.c, self.c_i = c, c_i
        self.owned = owned or {k: np.ones(a.shape, dtype=bool) for k, a in c.items()}
        self.drift = {
            k: torch.from_numpy(np.where(self.owned[k], c[k] - c_i[k], 0).astype(c[k].dtype)).to(p.device, p.dtype)
            for k, p in params.items()
        }
        self.lr_sum = 0.0

    def extra_loss(self, model: torch.nn.Module) -> None:
        return None

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, lr: float) -> None:
        for k, p in self.params.items():
            p.sub_(lr * self.drift[k])
        self.lr_sum += lr

    def new_control(self, x: AdapterState, y: AdapterState) -> AdapterState:
        """``c_i+`` from the round's start ``x`` and end ``y`` (float64 math, the adapter's
        dtype out) for the arrays the control variates cover; ``c_i`` where not owned, and
        everywhere if no step had a positive learning rate (nothing to estimate from)."""
        if self.lr_sum <= 0:
            return {k: v.copy() for k, v in self.c_i.items()}
        out = {}
        for k in self.c:
            c_new = self.c_i[k].astype(np.float64) - self.c[k] + (x[k].astype(np.float64) - y[k]) / self.lr_sum
            out[k] = np.where(self.owned[k], c_new, self.c_i[k]).astype(x[k].dtype)
        return out


STORE_NAME = "scaffold_c"


class ScaffoldClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return "c" in extras

    def __init__(self, node, config, extras: dict, start: AdapterState):
        c = extras["c"]
        c_i = node.store.load(STORE_NAME, before_round=config.round)
        if c_i is None or set(c_i) != set(c):  # first round, or a new two-stage stage
            c_i = {k: np.zeros_like(v) for k, v in c.items()}
        owned = within_rank({k: v.shape for k, v in c.items()}, config.rank)
        params = trainable_by_state_key(node.model)
        self.correction = ScaffoldCorrection({k: p for k, p in params.items() if k in c}, c, c_i, owned)
        self.hooks = [self.correction]
        self.node, self.round = node, config.round

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        c_new = self.correction.new_control(start, sent)
        self.node.store.save(STORE_NAME, c_new, self.round)
        return {"dc": {k: c_new[k] - self.correction.c_i[k] for k in c_new}}
