"""FedProx's client side: a proximal term keeping the local weights near the ones the round
started from, active when the round's options carry ``mu`` > 0."""

import torch

from fedvlm.algorithms.base import options_from_record
from fedvlm.algorithms.fedprox.server import FedProxOptions
from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import trainable_by_state_key


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


class FedProxClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return config.options.get("mu", 0) > 0  # FedProx's options are the round's

    def __init__(self, node, config, extras: dict, start: AdapterState):
        mu = options_from_record(FedProxOptions, config.options).mu
        self.hooks = [ProximalTerm(trainable_by_state_key(node.model), start, mu)]

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        return {}
