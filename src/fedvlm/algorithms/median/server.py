"""Coordinate-wise median of the clients' updates."""

from dataclasses import dataclass

from fedvlm.core.robust import coordinatewise, median
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import ServerState


@dataclass
class Median:
    """Coordinate-wise median (Yin et al. 2018, https://arxiv.org/abs/1803.01498) of the
    clients' updates, of each LoRA layer's product ``dW_k`` (``core.robust``), unweighted.

    Tolerates fewer than half the round's clients sending arbitrary updates (its breakdown
    point is 1/2), at the price of a noisier step than the mean when every client is honest
    and their data differ. The new LoRA is the median step factored back to rank r by SVD.
    """

    fraction: float = 1.0
    min_clients: int = 1
    lora_scaling: float = 1.0

    def initialize(self, initial):
        return ServerState(round=0, global_state=dict(initial))

    def configure(self, round_num, state, client_ids, rng):
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num, state, updates):
        new = coordinatewise([u.state for u in updates], state.global_state, self.lora_scaling, median)
        return state.advance(round_num, new)
