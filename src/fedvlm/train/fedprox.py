"""FedProx's client side: a proximal term keeping local weights near the global ones."""

import torch

from fedvlm.core.types import AdapterState


class ProximalTerm:
    """FedProx (Li et al. 2020, https://arxiv.org/abs/1812.06127): adds
    ``mu / 2 * ||w - w_global||^2`` over the trainable (exchanged) parameters only, so
    the frozen base never enters the term."""

    def __init__(self, params: dict[str, torch.nn.Parameter], global_state: AdapterState, mu: float):
        self.mu = mu
        self.pairs = [(p, torch.from_numpy(global_state[k]).to(p.device, p.dtype)) for k, p in params.items()]

    def extra_loss(self, model: torch.nn.Module) -> torch.Tensor:
        return 0.5 * self.mu * sum(((p - g) ** 2).sum() for p, g in self.pairs)

    def after_step(self, model: torch.nn.Module, lr: float) -> None:
        return None
