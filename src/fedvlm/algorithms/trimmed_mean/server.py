"""Coordinate-wise trimmed mean of the clients' updates."""

from dataclasses import dataclass, field

from fedvlm.algorithms.base import OptionError
from fedvlm.core.robust import coordinatewise, trimmed_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import ServerState


@dataclass(frozen=True)
class TrimmedMeanOptions:
    trim_beta: float = 0.2  # the fraction dropped at each end, per coordinate

    def __post_init__(self):
        if not 0 <= self.trim_beta < 0.5:
            raise OptionError("trim_beta", "0 <= beta < 0.5", self.trim_beta)


@dataclass
class TrimmedMean:
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018, https://arxiv.org/abs/1803.01498)
    of the clients' updates, of each LoRA layer's product ``dW_k`` (``core.robust``),
    unweighted: per coordinate the ``floor(beta n)`` largest and smallest values are
    dropped and the rest averaged.

    Tolerates up to ``floor(beta n)`` attackers among the round's ``n`` clients (more at a
    coordinate and their values can pass); with ``trim_beta=0`` it is the unweighted mean.
    """

    fraction: float = 1.0
    min_clients: int = 1
    lora_scaling: float = 1.0
    options: TrimmedMeanOptions = field(default_factory=TrimmedMeanOptions)

    def initialize(self, initial):
        return ServerState(round=0, global_state=dict(initial))

    def configure(self, round_num, state, client_ids, rng):
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num, state, updates):
        reduce = trimmed_mean(self.options.trim_beta)
        return state.advance(round_num, coordinatewise([u.state for u in updates], state.global_state, self.lora_scaling, reduce))
