"""FedAvg over adapter state."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedvlm.core.aggregate import client_weights, weighted_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass
class FedAvg:
    """Federated Averaging (McMahan et al. 2017, https://arxiv.org/abs/1602.05629).

    Each sampled client starts from the global adapter; the new global adapter is the mean
    of the returned states weighted by ``p_k = n_k / sum n``, ``n_k`` the client's
    training-set size (``weighting``; see ``core.aggregate.client_weights``). LoRA's A and B
    are averaged separately (FedIT, https://arxiv.org/abs/2305.05644), which is not the mean
    of the clients' updates ``s B_k A_k``; ``federated.aggregation`` svd, flora and fedex are
    the exact ones (``fedvlm.algorithms``).
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial))

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return state.advance(round_num, weighted_mean([u.state for u in updates], client_weights(updates, self.weighting)))
