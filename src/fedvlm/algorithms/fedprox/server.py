"""FedProx: FedAvg aggregation, clients add a proximal term."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.aggregate import client_weighted_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class FedProxOptions:
    """FedProx's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    mu: float = 0.01


@dataclass
class FedProx:
    """FedProx (Li et al. 2020, https://arxiv.org/abs/1812.06127).

    The server is FedAvg; each client minimizes ``loss + mu/2 ||w - w_global||^2`` over
    the trainable parameters (``fedvlm.algorithms.fedprox.client.ProximalTerm``), ``mu`` reaching them
    in the round's options (``RoundConfig.options``). ``mu=0`` is exactly FedAvg. OpenFedLLM's default is ``mu=0.01``.
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    options: FedProxOptions = field(default_factory=FedProxOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial))

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        new_global = client_weighted_mean(updates, self.weighting)
        return state.advance(round_num, new_global)
