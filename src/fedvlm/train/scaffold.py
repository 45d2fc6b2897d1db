"""SCAFFOLD's client side: control-variate corrected local steps.

SCAFFOLD (Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378), option II. The paper's
local step is ``y <- y - lr (g(y) - c_i + c)``. fedvlm's local optimizer is AdamW, whose
step is not ``lr * g``, so, as OpenFedLLM does, the correction is applied after each
optimizer step as ``y <- y - lr_t (c - c_i)``. The new client control variate uses the sum
of the step sizes actually taken, ``c_i+ = c_i - c + (x - y) / sum_t lr_t``, which is the
paper's ``(x - y) / (K lr)`` when the learning rate is constant.
"""

import numpy as np
import torch

from fedvlm.core.types import AdapterState


class ScaffoldCorrection:
    def __init__(self, params: dict[str, torch.nn.Parameter], c: AdapterState, c_i: AdapterState):
        self.params = params
        self.c, self.c_i = c, c_i
        self.drift = {k: torch.from_numpy(c[k] - c_i[k]).to(p.device, p.dtype) for k, p in params.items()}
        self.lr_sum = 0.0

    def extra_loss(self, model: torch.nn.Module) -> None:
        return None

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, lr: float) -> None:
        for k, p in self.params.items():
            p.sub_(lr * self.drift[k])
        self.lr_sum += lr

    def new_control(self, x: AdapterState, y: AdapterState) -> AdapterState:
        """``c_i+`` from the round's start ``x`` and end ``y`` (float64 math, float32 out),
        for the arrays the control variates cover."""
        return {
            k: (self.c_i[k].astype(np.float64) - self.c[k] + (x[k].astype(np.float64) - y[k]) / self.lr_sum).astype(
                x[k].dtype
            )
            for k in self.c
        }
