"""FedAdagrad: Adagrad as the server optimizer."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.sampling import broadcast
from fedvlm.core.server_opt import initial_moments, optimizer_round
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class FedAdagradOptions:
    """FedAdagrad's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    server_lr: float = 0.1
    beta1: float = 0.0
    tau: float = 1e-3


@dataclass
class FedAdagrad:
    """FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization",
    https://arxiv.org/abs/2003.00295, Algorithm 2).

    Each round: ``Delta = weighted_mean(client states) - x``;
    ``m = beta1 m + (1-beta1) Delta``; ``v = v + Delta^2``;
    ``x = x + server_lr * m / (sqrt(v) + tau)``. ``m`` and ``v`` live in
    ``ServerState.buffers["m"]`` / ``["v"]`` so they are checkpointed.

    ``v_init`` is the starting value of ``v``: 0 by default as in Flower's code; the paper
    asks for ``v_{-1} >= tau^2`` (``v_init=tau**2``). Defaults are the published ones,
    Flower 1.42's ``FedAdagrad``: ``server_lr=0.1``, ``tau=1e-3``, and no momentum
    (``beta1=0``: Flower fixes it; the paper's Algorithm 2 allows ``beta1``, 0.9 in its
    experiments); Flower's older ``flwr.server.strategy.FedAdagrad`` has ``tau=1e-9``.
    ``v`` only grows, so the step keeps shrinking.
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    v_init: float = 0.0
    options: FedAdagradOptions = field(default_factory=FedAdagradOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial), buffers=initial_moments("adagrad", initial, self.v_init))

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return optimizer_round("adagrad", round_num, state, updates, self.weighting, lr=self.options.server_lr, beta1=self.options.beta1, tau=self.options.tau)
