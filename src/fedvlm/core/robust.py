"""Robust aggregation of LoRA updates: coordinate-wise median, trimmed mean, Krum /
Multi-Krum and norm-bounded averaging (ALGORITHMS.md, "Robustness").

A LoRA layer's update is compared and combined as the weight change it makes,
``dW_k = s (B_k A_k - B_g A_g)`` (``g``: the global adapter the round started from), never as
raw factors: ``B A = (B M)(M^-1 A)``, so factors of equal products can differ arbitrarily.
Arrays that are not a LoRA pair (a projector, a head, or B alone when A is shared and
frozen, FFA-LoRA) are compared coordinate by coordinate as they are. Krum's distances and
the update norms stay in factored form (r x r Gram products, no d_out x d_in matrix);
the coordinate-wise statistics need every coordinate, so they form each layer's dense
``dW_k`` one layer at a time and factor the result back to rank r by SVD.
"""

from collections.abc import Callable, Sequence

import numpy as np

from fedvlm.core.lora import lora_pairs, svd_aggregate
from fedvlm.core.types import AdapterState


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _others(reference: AdapterState, pairs: dict) -> list[str]:
    lora = {k for pair in pairs.values() for k in pair}
    return [k for k in reference if k not in lora]


def gram(states: Sequence[AdapterState], scaling: float) -> np.ndarray:
    """``G[i, j] = <u_i, u_j>`` over every array, where a LoRA layer of state ``i``
    contributes its product ``s B_i A_i`` (``<s B_i A_i, s B_j A_j>_F = s^2 sum((B_i^T B_j) *
    (A_i A_j^T))``, r x r) and any other array itself."""
    pairs = lora_pairs(states[0])
    n = len(states)
    g = np.zeros((n, n))
    for a_key, b_key in pairs.values():
        bs, as_ = [_f64(s[b_key]) for s in states], [_f64(s[a_key]) for s in states]
        for i in range(n):
            for j in range(i, n):
                g[i, j] += scaling**2 * float(np.sum((bs[i].T @ bs[j]) * (as_[i] @ as_[j].T)))
    for key in _others(states[0], pairs):
        flat = np.stack([_f64(s[key]).ravel() for s in states])
        g += np.triu(flat @ flat.T)
    return np.triu(g) + np.triu(g, 1).T


def squared_distances(gram_matrix: np.ndarray) -> np.ndarray:
    """``D[i, j] = ||u_i - u_j||^2`` from a Gram matrix (clipped at 0 against round-off)."""
    diag = np.diag(gram_matrix)
    return np.maximum(diag[:, None] + diag[None, :] - 2 * gram_matrix, 0.0)


def update_norms(states: Sequence[AdapterState], reference: AdapterState, scaling: float) -> np.ndarray:
    """``||dW_k||`` over every array of each client's update (factored, as `gram`)."""
    d = squared_distances(gram([*states, reference], scaling))
    return np.sqrt(d[:-1, -1])


def krum_scores(states: Sequence[AdapterState], scaling: float, f: int) -> np.ndarray:
    """Krum (Blanchard et al. 2017, https://arxiv.org/abs/1703.02757): each client's sum of
    squared distances to its ``n - f - 2`` nearest others (needs ``n > 2 f + 2``)."""
    n = len(states)
    if n <= 2 * f + 2:
        raise ValueError(f"Krum with f={f} assumed attackers needs more than {2 * f + 2} updates, got {n}")
    d = squared_distances(gram(states, scaling))
    return np.array([np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)])


def _refactor(target: np.ndarray, rank: int, scaling: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(B, A)`` with ``s B A`` the best rank-``rank`` approximation of ``target``; A's
    rows orthonormal (past the target's rank too), B's columns carry the singular values."""
    u, sv, vt = np.linalg.svd(target, full_matrices=False)
    k = min(rank, sv.size)
    b = np.zeros((target.shape[0], rank))
    a = np.zeros((rank, target.shape[1]))
    b[:, :k], a[:k] = u[:, :k] * sv[:k] / scaling, vt[:k]
    return b.astype(dtype), a.astype(dtype)


def coordinatewise(
    states: Sequence[AdapterState], reference: AdapterState, scaling: float, reduce: Callable[[np.ndarray], np.ndarray]
) -> AdapterState:
    """The global adapter moved by ``reduce`` (over axis 0: one row per client) of the
    clients' updates, coordinate by coordinate: per LoRA layer of the dense ``dW_k``, then
    factored back to the adapter's rank (`_refactor`); any other array directly."""
    pairs = lora_pairs(reference)
    out = {}
    for a_key, b_key in pairs.values():
        start = scaling * _f64(reference[b_key]) @ _f64(reference[a_key])
        deltas = np.stack([scaling * _f64(s[b_key]) @ _f64(s[a_key]) - start for s in states])
        out[b_key], out[a_key] = _refactor(start + reduce(deltas), reference[a_key].shape[0], scaling, reference[a_key].dtype)
    for key in _others(reference, pairs):
        deltas = np.stack([_f64(s[key]) - reference[key] for s in states])
        out[key] = (reference[key] + reduce(deltas)).astype(reference[key].dtype)
    return {k: out[k] for k in reference}


def median(deltas: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018, https://arxiv.org/abs/1803.01498)."""
    return np.median(deltas, axis=0)


def trimmed_mean(beta: float) -> Callable[[np.ndarray], np.ndarray]:
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018): per coordinate drop the
    ``floor(beta n)`` largest and smallest values and average the rest."""

    def reduce(deltas: np.ndarray) -> np.ndarray:
        n = deltas.shape[0]
        k = int(np.floor(beta * n))
        if n - 2 * k < 1:
            raise ValueError(f"trimmed mean with beta={beta} leaves nothing of {n} updates")
        return np.sort(deltas, axis=0)[k : n - k].mean(axis=0)

    return reduce


def exact_mean(states: Sequence[AdapterState], weights: Sequence[float], scaling: float, rank: int) -> AdapterState:
    """The weighted mean of the states' products ``s B A`` (and of their other arrays),
    exact in factored form and truncated to ``rank`` (`core.lora.svd_aggregate`)."""
    new, _, _ = svd_aggregate(states, weights, [scaling] * len(states), rank, scaling)
    return new
