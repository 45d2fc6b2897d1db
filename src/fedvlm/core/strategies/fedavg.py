"""FedAvg over adapter state."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.sampling import sample_clients
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass
class FedAvg:
    """Federated Averaging (McMahan et al. 2017, https://arxiv.org/abs/1602.05629).

    Each sampled client starts from the global adapter; the new global adapter is the mean
    of the returned states weighted by the examples each client trained on this round.
    On LoRA this averages A and B separately (FedIT, https://arxiv.org/abs/2305.05644) and
    any other trainable module (e.g. the projector) in the same way.
    """

    fraction: float = 1.0
    min_clients: int = 1

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial))

    def configure(
        self,
        round_num: int,
        state: ServerState,
        client_ids: Sequence[str],
        rng: np.random.Generator,
    ) -> dict[str, Instruction]:
        chosen = sample_clients(client_ids, self.fraction, self.min_clients, rng)
        return {cid: Instruction(payload=state.global_state) for cid in chosen}

    def aggregate(
        self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]
    ) -> ServerState:
        new_global = weighted_mean([u.state for u in updates], [u.num_examples for u in updates])
        return ServerState(
            round=round_num, global_state=new_global, buffers=state.buffers, scalars=state.scalars
        )
