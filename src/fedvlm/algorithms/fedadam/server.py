"""FedAdam: Adam as the server optimizer."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.sampling import broadcast
from fedvlm.core.server_opt import initial_moments, optimizer_round
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class FedAdamOptions:
    """FedAdam's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


@dataclass
class FedAdam:
    """FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization",
    https://arxiv.org/abs/2003.00295, Algorithm 2).

    Each round: ``Delta = weighted_mean(client states) - x``;
    ``m = beta1 m + (1-beta1) Delta``; ``v = beta2 v + (1-beta2) Delta^2``;
    ``x = x + server_lr * m / (sqrt(v) + tau)``; no bias correction. ``m`` and ``v`` start
    at zero and live in ``ServerState.buffers["m"]`` / ``["v"]`` so they are checkpointed.

    Defaults are the published ones: ``server_lr=0.1``, ``beta1=0.9``, ``beta2=0.99``,
    ``tau=1e-3``, Flower 1.42's ``flwr.serverapp.strategy.FedAdam`` (the paper tunes
    ``server_lr`` and ``tau`` per task from grids that hold these). Where they differ:
    Flower multiplies the step by Adam's bias correction ``sqrt(1 - beta2^t) / (1 -
    beta1^t)``, which Algorithm 2 (and fedvlm) does not; Flower's older
    ``flwr.server.strategy.FedAdam`` has ``tau=1e-9``. On LoRA these steps are large: a
    per-coordinate normalized step moves B's near-zero coordinates as far as its real ones,
    and a 48-run sweep on the embedded default job found only ``beta1=0`` with ``tau=0.1``
    at FedAvg's accuracy (docs/results.md, "Server-optimizer defaults").
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    options: FedAdamOptions = field(default_factory=FedAdamOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial), buffers=initial_moments("adam", initial))

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return optimizer_round("adam", round_num, state, updates, self.weighting, lr=self.options.server_lr, beta1=self.options.beta1, beta2=self.options.beta2, tau=self.options.tau)
