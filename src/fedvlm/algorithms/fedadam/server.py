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
    beta1: float = 0.0
    beta2: float = 0.99
    tau: float = 0.1


@dataclass
class FedAdam:
    """FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization",
    https://arxiv.org/abs/2003.00295, Algorithm 2).

    Each round: ``Delta = weighted_mean(client states) - x``;
    ``m = beta1 m + (1-beta1) Delta``; ``v = beta2 v + (1-beta2) Delta^2``;
    ``x = x + server_lr * m / (sqrt(v) + tau)``; no bias correction. ``m`` and ``v`` start
    at zero and live in ``ServerState.buffers["m"]`` / ``["v"]`` so they are checkpointed.

    Defaults ``server_lr=0.1``, ``tau=0.1``, ``beta1=0.0``, ``beta2=0.99``: the best of a
    48-run sweep on the embedded default job (docs/results.md, "Server-optimizer
    defaults"), where they end at FedAvg's accuracy (86.0% vs 86.0%). With ``tau`` above
    the size of a round's update the step is about ``server_lr / tau`` times the mean
    update, damped where a coordinate's update RMS approaches ``tau``. Every setting with
    ``beta1=0.9`` (the paper's) or ``tau <= 1e-2`` ended 38-86 points below FedAvg there:
    per-coordinate normalized steps of a LoRA update move B's near-zero coordinates as far
    as its real ones. Flower's FedAdam uses ``eta=1e-1``, ``beta1=0.9``, ``beta2=0.99`` and
    ``tau=1e-3`` (1e-9 in its older ``flwr.server.strategy``) with a bias-corrected step;
    a much smaller ``tau`` risks huge steps / NaNs (Flower issue #1060).
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
