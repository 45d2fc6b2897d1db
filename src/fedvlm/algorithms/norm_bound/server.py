"""Norm-bounded averaging: every update clipped to one norm, then averaged."""

from dataclasses import dataclass, field

import numpy as np

from fedvlm.algorithms.base import OptionError
from fedvlm.core.aggregate import client_weights
from fedvlm.core.lora import A_SUFFIX
from fedvlm.core.robust import exact_mean, update_norms
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import ServerState


@dataclass(frozen=True)
class NormBoundOptions:
    clip_norm: float | None = None  # None: the median of the round's update norms

    def __post_init__(self):
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise OptionError("clip_norm", "a positive norm or null", self.clip_norm)


@dataclass
class NormBound:
    """Norm-bounded averaging (Sun et al. 2019, "Can you really backdoor federated
    learning?", https://arxiv.org/abs/1911.07963).

    Each client's update ``dW_k`` (LoRA layers as products ``s B A``, ``core.robust``) is
    scaled by ``c_k = min(1, C / ||dW_k||)`` and the clipped updates are averaged with the
    FedAvg weights ``p_k``: the new global product is ``sum_k p_k c_k s B_k A_k +
    (1 - sum_k p_k c_k) s B_g A_g``, exact in factored form and truncated to rank r. ``C``
    is ``clip_norm``, or the median of the round's update norms. It limits how far any one
    update moves the model (a scaled or boosted backdoor update), not an attacker whose
    update has a normal norm (a sign flip of normal size).
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"
    lora_scaling: float = 1.0
    options: NormBoundOptions = field(default_factory=NormBoundOptions)

    def initialize(self, initial):
        return ServerState(round=0, global_state=dict(initial))

    def configure(self, round_num, state, client_ids, rng):
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num, state, updates):
        states, g = [u.state for u in updates], state.global_state
        norms = update_norms(states, g, self.lora_scaling)
        bound = self.options.clip_norm if self.options.clip_norm is not None else float(np.median(norms))
        clip = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
        weights = np.asarray(client_weights(updates, self.weighting), dtype=np.float64)
        weights = weights / weights.sum() * clip
        rank = next((a.shape[0] for k, a in g.items() if k.endswith(A_SUFFIX)), 0)
        new = exact_mean([*states, g], [*weights, max(0.0, 1.0 - weights.sum())], self.lora_scaling, rank)
        scalars = {**state.scalars, "clipped": int(np.sum(clip < 1.0)), "clip_norm": bound}
        return state.advance(round_num, new, scalars)
