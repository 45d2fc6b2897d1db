"""Distributed DP-FedAvg's client part (``federated.dp_noise=clients``): the client clips
its own update and adds its share of the noise before the update leaves it."""

import numpy as np

from fedvlm.algorithms.dp_fedavg.server import clip_factor, update_norm
from fedvlm.core.types import AdapterState


def clip_and_noise(state: AdapterState, start: AdapterState, clip: float, std: float,
                   rng: np.random.Generator) -> AdapterState:
    """``start + min(1, C / ||delta||) delta + N(0, std^2)`` per coordinate, with
    ``delta = state - start`` over every array of ``state`` as one vector."""
    factor = clip_factor(update_norm(state, {k: start[k] for k in state}), clip)
    out = {}
    for k in sorted(state):
        delta = factor * (state[k].astype(np.float64) - start[k])
        out[k] = (start[k] + delta + rng.normal(0.0, std, size=delta.shape)).astype(state[k].dtype)
    return out
