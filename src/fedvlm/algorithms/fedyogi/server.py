"""FedYogi: Yogi as the server optimizer."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.sampling import broadcast
from fedvlm.core.server_opt import initial_moments, optimizer_round
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class FedYogiOptions:
    """FedYogi's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


@dataclass
class FedYogi:
    """FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization",
    https://arxiv.org/abs/2003.00295, Algorithm 2).

    Each round: ``Delta = weighted_mean(client states) - x``;
    ``m = beta1 m + (1-beta1) Delta``; ``v = v - (1-beta2) Delta^2 sign(v - Delta^2)``;
    ``x = x + server_lr * m / (sqrt(v) + tau)``; no bias correction. ``m`` and ``v`` live in
    ``ServerState.buffers["m"]`` / ``["v"]`` so they are checkpointed.

    ``v_init`` is the starting value of ``v``: 0 by default, as Flower's code does (its
    first step then equals FedAdam's); the paper's Algorithm 2 asks for
    ``v_{-1} >= tau^2``, i.e. ``v_init=tau**2``. Defaults are the published ones, Flower
    1.42's ``FedYogi``: ``server_lr=1e-2``, ``beta1=0.9``, ``beta2=0.99``, ``tau=1e-3``
    (Flower bias-corrects the step as for FedAdam; Algorithm 2 does not). On the embedded
    default job a sweep found ``beta1=0``, ``tau=0.1``, ``server_lr=0.1`` at FedAvg's
    accuracy and ``beta1=0.9`` or ``tau <= 1e-2`` at most 48% (docs/results.md).
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    v_init: float = 0.0
    options: FedYogiOptions = field(default_factory=FedYogiOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial), buffers=initial_moments("yogi", initial, self.v_init))

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return optimizer_round("yogi", round_num, state, updates, self.weighting, lr=self.options.server_lr, beta1=self.options.beta1, beta2=self.options.beta2, tau=self.options.tau)
