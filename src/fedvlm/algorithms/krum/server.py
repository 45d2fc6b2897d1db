"""Krum and Multi-Krum: keep the updates closest to their neighbours."""

from dataclasses import dataclass, field

import numpy as np

from fedvlm.algorithms.base import OptionError
from fedvlm.core.robust import exact_mean, krum_scores
from fedvlm.core.lora import A_SUFFIX
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import ServerState
from fedvlm.errors import UpdateError


@dataclass(frozen=True)
class KrumOptions:
    krum_f: int = 1  # attackers assumed among a round's clients
    krum_m: int = 1  # updates kept: 1 is Krum, more is Multi-Krum (their exact mean)

    def __post_init__(self):
        if isinstance(self.krum_f, bool) or self.krum_f < 0:
            raise OptionError("krum_f", "a number of attackers >= 0", self.krum_f)
        if isinstance(self.krum_m, bool) or self.krum_m < 1:
            raise OptionError("krum_m", "a number of kept updates >= 1", self.krum_m)


@dataclass
class Krum:
    """Krum / Multi-Krum (Blanchard et al. 2017, https://arxiv.org/abs/1703.02757).

    Each client's score is the sum of squared distances from its update to its
    ``n - f - 2`` nearest others, with LoRA layers compared by their products ``s B A``
    in factored form (``core.robust``). Krum (``krum_m=1``) makes the best-scoring client's
    adapter the new global one, exactly; Multi-Krum keeps the ``krum_m`` best and takes the
    exact mean of their products, truncated to rank r (as FlexLoRA). Tolerates ``krum_f``
    attackers when a round has more than ``2 f + 2`` clients, and assumes honest updates
    lie closer to each other than to an attacker's; unweighted.
    """

    fraction: float = 1.0
    min_clients: int = 1
    lora_scaling: float = 1.0
    options: KrumOptions = field(default_factory=KrumOptions)

    def initialize(self, initial):
        return ServerState(round=0, global_state=dict(initial))

    def configure(self, round_num, state, client_ids, rng):
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num, state, updates):
        states = [u.state for u in updates]
        try:
            scores = krum_scores(states, self.lora_scaling, self.options.krum_f)
        except ValueError as e:
            raise UpdateError(f"round {round_num}: {e}") from None
        keep = np.argsort(scores, kind="stable")[: self.options.krum_m]
        if len(keep) == 1:
            return state.advance(round_num, dict(states[keep[0]]))
        rank = next((a.shape[0] for k, a in state.global_state.items() if k.endswith(A_SUFFIX)), 0)
        return state.advance(round_num, exact_mean([states[i] for i in keep], [1.0] * len(keep), self.lora_scaling, rank))
