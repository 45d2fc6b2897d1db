"""Aggregation math as pure functions over named arrays."""

from collections.abc import Sequence

import numpy as np

from fedvlm.core.types import AdapterState, ClientUpdate


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    """Return ``weights`` scaled to sum to one (float64). All must be >= 0, sum > 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(w)}")
    return w / w.sum()


def weighted_mean(states: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
    """Weighted mean of each named array: ``sum_k p_k x_k`` with ``p_k = w_k / sum w``.

    Accumulates in float64 and casts back to each array's own dtype, so the result does
    not depend on client order beyond float64 rounding.
    """
    if not states:
        raise ValueError("weighted_mean needs at least one state")
    p = normalized_weights(weights)
    if len(p) != len(states):
        raise ValueError(f"{len(states)} states but {len(p)} weights")
    out: AdapterState = {}
    for name, first in states[0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for p_k, state in zip(p, states):
            acc += p_k * state[name].astype(np.float64)
        out[name] = acc.astype(first.dtype)
    return out


WEIGHTINGS = ("data_size", "examples", "uniform")


def client_weights(updates: Sequence[ClientUpdate], weighting: str = "data_size") -> list[float]:
    """Each update's aggregation weight (normalized by the caller).

    ``data_size``: the client's training-set size ``n_k`` (``ClientUpdate.num_examples``),
    so ``p_k = n_k / sum n`` over the sampled clients, as in FedAvg (McMahan et al. 2017,
    https://arxiv.org/abs/1602.05629) and as Flower clients report it; ``examples``: the
    examples the client trained on this round (``metrics["examples"]``); ``uniform``: 1/K.
    """
    if weighting == "data_size":
        return [float(u.num_examples) for u in updates]
    if weighting == "examples":
        return [float(u.metrics["examples"]) for u in updates]
    if weighting == "uniform":
        return [1.0] * len(updates)
    raise ValueError(f"unknown weighting {weighting!r} (valid: {', '.join(WEIGHTINGS)})")


def client_weighted_mean(updates: Sequence[ClientUpdate], weighting: str = "data_size") -> AdapterState:
    """The mean of the clients' states weighted as ``weighting`` says (`client_weights`)."""
    return weighted_mean([u.state for u in updates], client_weights(updates, weighting))
