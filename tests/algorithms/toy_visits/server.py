"""The toy's server side (numpy only): FedAvg, and how many rounds each client has trained."""

from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.aggregate import client_weights, weighted_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import ServerState


@dataclass(frozen=True)
class ToyOptions:
    toy_decay: float = 0.0  # weight of sum(p^2) over the trained arrays (0: FedAvg's training)


@dataclass
class ToyServer:
    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"
    options: ToyOptions = field(default_factory=ToyOptions)

    def initialize(self, initial):
        return ServerState(round=0, global_state=dict(initial), scalars={"toy_visits": {}})

    def configure(self, round_num, state, client_ids, rng):
        instructions = broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)
        for cid, instruction in instructions.items():
            seen = state.scalars["toy_visits"].get(cid, 0)
            instruction.extras = {"toy_seen": {"visits": np.array([seen], dtype=np.float32)}}
        return instructions

    def expected_extras(self, state):
        return {"toy_visits": {"visits": np.zeros(1, dtype=np.float32)}}

    def aggregate(self, round_num, state, updates):
        visits = {**state.scalars["toy_visits"], **{u.client_id: int(u.extras["toy_visits"]["visits"][0]) for u in updates}}
        new_global = weighted_mean([u.state for u in updates], client_weights(updates, self.weighting))
        return state.advance(round_num, new_global, {**state.scalars, "toy_visits": visits})
