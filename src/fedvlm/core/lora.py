"""LoRA-aware aggregation math over adapter state (see ALGORITHMS.md, "LoRA aggregation").

A LoRA layer appears in an ``AdapterState`` as two PEFT-named arrays, ``X.lora_A.weight``
(r x d_in) and ``X.lora_B.weight`` (d_out x r); ``X`` is the layer's *prefix*. Client k's
update of that layer is ``dW_k = s_k B_k A_k`` with scaling ``s_k = alpha / r_k``. Every
other key (``modules_to_save`` projector weights, biases, ...) is averaged with
``weighted_mean``. Everything here computes in float64 and casts results back to the
adapter's dtype; nothing materializes a d_out x d_in matrix except ``fedex_residual`` and
``dense_delta``, which say so.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from fedvlm.core.aggregate import normalized_weights, weighted_mean
from fedvlm.core.types import AdapterState

A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"

Factors = dict[str, tuple[np.ndarray, np.ndarray]]


def lora_pairs(state: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """Map each LoRA layer prefix ``X`` to its ``(X.lora_A.weight, X.lora_B.weight)`` keys.

    Raises ``ValueError`` naming the layer if one factor is present without the other.
    """
    a = {k[: -len(A_SUFFIX)] for k in state if k.endswith(A_SUFFIX)}
    b = {k[: -len(B_SUFFIX)] for k in state if k.endswith(B_SUFFIX)}
    if a != b:
        raise ValueError(f"LoRA layers without a partner factor: {sorted(a ^ b)[:3]}")
    return {x: (x + A_SUFFIX, x + B_SUFFIX) for x in sorted(a)}


def _lora_keys(state: Mapping[str, np.ndarray]) -> set[str]:
    return {key for pair in lora_pairs(state).values() for key in pair}


def _shared_pairs(states: Sequence[AdapterState]) -> dict[str, tuple[str, str]]:
    if not states:
        raise ValueError("need at least one client state")
    pairs = lora_pairs(states[0])
    for i, state in enumerate(states[1:], start=1):
        if lora_pairs(state).keys() != pairs.keys():
            raise ValueError(f"client {i} has different LoRA layers than client 0")
    return pairs


def non_lora_mean(states: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
    """``weighted_mean`` of every key that is not a LoRA factor (e.g. a projector)."""
    lora = _lora_keys(states[0])
    rest = [{k: a for k, a in s.items() if k not in lora} for s in states]
    return weighted_mean(rest, weights) if rest[0] else {}


def _stack_layer(
    states: Sequence[AdapterState], prefix: str, b_coef: np.ndarray, a_coef: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One layer's ``([b_1 B_1 ... b_K B_K], [a_1 A_1; ...; a_K A_K])`` in float64."""
    a_key, b_key = prefix + A_SUFFIX, prefix + B_SUFFIX
    for i, s in enumerate(states):
        r_a, r_b = s[a_key].shape[0], s[b_key].shape[1]
        if r_a != r_b:
            raise ValueError(f"client {i}: {prefix} has A rank {r_a} but B rank {r_b}")
    ends = np.cumsum([0] + [s[a_key].shape[0] for s in states])
    b = np.empty((states[0][b_key].shape[0], ends[-1]))
    a = np.empty((ends[-1], states[0][a_key].shape[1]))
    for lo, hi, cb, ca, s in zip(ends[:-1], ends[1:], b_coef, a_coef, states):
        np.multiply(s[b_key], cb, out=b[:, lo:hi], dtype=np.float64)
        np.multiply(s[a_key], ca, out=a[lo:hi], dtype=np.float64)
    return b, a


def _stack(
    states: Sequence[AdapterState], b_coef: np.ndarray, a_coef: np.ndarray
) -> Factors:
    """Per layer ``([b_1 B_1 ... b_K B_K], [a_1 A_1; ...; a_K A_K])`` in float64."""
    return {x: _stack_layer(states, x, b_coef, a_coef) for x in _shared_pairs(states)}


def _delta_coefs(
    states: Sequence[AdapterState], weights: Sequence[float], scalings: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(s_k, p_k)``: the B and A coefficients of ``dW = sum_k p_k s_k B_k A_k``."""
    p = normalized_weights(weights)
    s = np.asarray(scalings, dtype=np.float64)
    if not len(p) == len(s) == len(states):
        raise ValueError(f"{len(states)} states, {len(p)} weights, {len(s)} scalings")
    return s, p


def exact_delta_factors(
    states: Sequence[AdapterState], weights: Sequence[float], scalings: Sequence[float]
) -> Factors:
    """Per layer ``(P, Q)`` with ``P @ Q = sum_k p_k s_k B_k A_k`` exactly.

    ``P = [s_1 B_1, ..., s_K B_K]`` (d_out x R), ``Q = [p_1 A_1; ...; p_K A_K]`` (R x d_in),
    ``R = sum_k r_k``; ``p_k`` are the normalized ``weights`` and ``scalings`` the clients'
    ``s_k = alpha / r_k``. Ranks may differ between clients; d_in and d_out may not. Holds
    every layer at once; ``svd_aggregate`` builds one layer at a time instead.
    """
    s, p = _delta_coefs(states, weights, scalings)
    return _stack(states, b_coef=s, a_coef=p)


def factored_svd(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``U, S, Vt`` of ``P @ Q`` without forming it.

    ``P = Q_P R_P`` and ``Q^T = Q_Q R_Q`` (reduced QR); the SVD of the small core
    ``R_P R_Q^T = U' S V'^T`` gives ``U = Q_P U'`` and ``Vt = V'^T Q_Q^T``. Cost
    O((d_in + d_out) R^2 + R^3) time and O((d_in + d_out) R) memory. ``S`` is descending
    with ``min(d_out, d_in, R)`` entries; ``U`` is d_out x len(S), ``Vt`` len(S) x d_in.
    """
    P, Q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    if P.ndim != 2 or Q.ndim != 2 or P.shape[1] != Q.shape[0]:
        raise ValueError(f"P {P.shape} and Q {Q.shape} do not multiply")
    q_p, r_p = np.linalg.qr(P)
    q_q, r_q = np.linalg.qr(Q.T)
    u, s, vt = np.linalg.svd(r_p @ r_q.T, full_matrices=False)
    return q_p @ u, s, vt @ q_q.T


def _relative_tail(s: np.ndarray, r: int) -> float:
    total = float(np.sum(s**2))
    return float(np.sqrt(np.sum(s[r:] ** 2) / total)) if total > 0 else 0.0


# Cholesky of x^T x in float64 carries a backward error of about eps cond(x) ||x|| in x:
# 2e-12 at cond(x) = 1e4, far below float32's 6e-8. ||L||_F ||L^-1||_F >= cond(x) bounds it
# from above; worse-conditioned (or rank-deficient) factors take the QR path.
_GRAM_MAX_COND = 1e4


def _r_factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(F, H)`` with ``x = X F`` and ``X = x H`` orthonormal (n x k, never formed).

    ``x`` is n x R (``P``, or ``Q^T``), ``F`` k x R and ``H`` R x k, k the numerical rank
    of x; ``F`` is x's triangular QR factor up to a rotation. Fast path: Cholesky of the
    Gram, ``x^T x = L L^T``, ``F = L^T``, ``H = L^-T`` (BLAS syrk, potrf and getrf/getri:
    all level 3, about 5x faster than Householder QR at n = 4096, R = 256, and few thread
    synchronizations), used when ``||L||_F ||L^-1||_F <= _GRAM_MAX_COND``. Otherwise
    (rank-deficient or ill-conditioned x: identical clients, a shared A, zero B, clients
    that barely moved from a common start) Householder QR with ``mode="r"`` (the n x R
    orthonormal factor is never formed) and the SVD of the R x R triangle ``W diag(sigma)
    V^T``, dropping singular values at round-off level (``np.linalg.matrix_rank``'s
    tolerance): ``F = diag(sigma) V^T``, ``H = V diag(1/sigma)``; backward stable to
    eps ||x|| at any conditioning.
    """
    try:
        lower = np.linalg.cholesky(x.T @ x)
        inverse = np.linalg.inv(lower)
        if np.linalg.norm(lower) * np.linalg.norm(inverse) <= _GRAM_MAX_COND:
            return lower.T, inverse.T
    except np.linalg.LinAlgError:
        pass  # x^T x is not numerically positive definite
    _, sigma, vt = np.linalg.svd(np.linalg.qr(x, mode="r"))
    tol = (sigma[0] if sigma.size else 0.0) * max(x.shape) * np.finfo(np.float64).eps
    k = int(np.count_nonzero(sigma > tol))
    return sigma[:k, None] * vt[:k], vt[:k].T / sigma[:k]


def _product_svd(
    P: np.ndarray, Q: np.ndarray, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, to_left, to_right)``: the SVD of ``dW = P @ Q`` as maps from the R-space.

    ``s`` are dW's leading ``min(rank P, rank Q)`` singular values (the rest are zero),
    descending. Column i of the R x n maps, ``n = min(columns, rank Q)``, gives the i-th
    singular pair as ``P @ to_left[:, i] = u_i s_i`` and ``to_right[:, i] @ Q = v_i^T``;
    past ``len(s)`` the v_i complete an orthonormal basis of Q's row space (and
    u_i s_i = 0). Time O((d_out + d_in) R^2 + R^3); memory O(R^2) beyond P and Q.
    """
    f_p, _ = _r_factor(P)
    f_q, h_q = _r_factor(Q.T)
    # P = X_P F_P and Q = F_Q^T X_Q^T with X_P, X_Q orthonormal, so the small core
    # F_P F_Q^T = U' S W^T has dW's singular values, and V = X_Q W = Q^T H_Q W.
    _, s, wt = np.linalg.svd(f_p @ f_q.T)
    w = wt[:columns].T
    # u_i s_i = dW v_i = P (F_Q^T X_Q^T) X_Q w_i = P F_Q^T w_i: no division on this side.
    return s, f_q.T @ w, h_q @ w


def svd_aggregate(
    states: Sequence[AdapterState],
    weights: Sequence[float],
    client_scalings: Sequence[float],
    server_rank: int,
    server_scaling: float,
    error_feedback: AdapterState | None = None,
    *,
    residual_rank: int | None = None,
    with_residual: bool = False,
) -> tuple[AdapterState, dict[str, float], AdapterState]:
    """FlexLoRA (https://arxiv.org/abs/2402.11505): exact weighted dW, truncated SVD.

    Per layer ``dW = sum_k p_k s_k B_k A_k`` (+ the ``error_feedback`` residual, if given)
    is truncated to ``server_rank``: ``B' = U_r S_r / server_scaling`` (d_out x r),
    ``A' = V_r^T`` (r x d_in), so ``server_scaling * B' A'`` is the best rank-r
    approximation of dW. Columns of ``B'`` are ordered by singular value, which is what
    ``slice_for_rank`` relies on. Rows of ``A'`` past dW's rank complete an orthonormal
    basis of the clients' A rows (their ``B'`` columns are zero, so a zero dW gives a
    fresh-LoRA-like ``B' = 0``); past the rank of the stacked A's, or when dW has fewer than
    ``server_rank`` singular values (d < r), the extra rows/columns are zero. Client ranks
    may differ. Non-LoRA keys are averaged with ``weighted_mean``.

    Method: one layer at a time (only that layer's factors are ever held in float64), dW
    stays factored as ``P Q`` (``exact_delta_factors``). ``_r_factor`` gives R x R
    triangular factors ``F_P``, ``F_Q`` of P and Q^T from Cholesky of their Gram matrices
    (R = sum_k r_k; with a QR fallback for rank-deficient or ill-conditioned factors), the
    SVD of the R x R core ``F_P F_Q^T = U' S W^T`` gives dW's singular values and right
    vectors, and only the kept columns are mapped back: ``U_r S_r = P F_Q^T W_r``,
    ``V_r^T = (H_Q W_r)^T Q``.
    No d x R orthonormal factor is formed, unlike ``factored_svd``, and no residual unless
    asked for. Precision, before rounding to the adapter's dtype (float32: 6e-8): within
    ~1e-15 of a dense float64 SVD of dW relative to ||dW|| on well-conditioned inputs, and
    within 1e-9 on identical, FFA-style, near-identical, cancelling and cond-1e7 clients
    (tests/core/test_lora_math.py), where a Gram-only method is off by up to 1e-6.

    Returns ``(new_state, truncation_error, residual)``:
    ``truncation_error[prefix] = ||dW - dW_r||_F / ||dW||_F`` (0 at full rank or dW = 0),
    from the singular values. ``residual`` is empty unless ``with_residual``; then it holds
    the truncated tail ``dW - dW_r`` factored under the layer's own key names with scaling
    1 (``X.lora_B.weight = U_tail S_tail``, ``X.lora_A.weight = V_tail^T``),
    numerically-zero directions dropped and at most ``residual_rank`` kept; store it (e.g.
    in ``ServerState.buffers``) and pass it back as ``error_feedback``.
    """
    pairs = _shared_pairs(states)
    b_coef, a_coef = _delta_coefs(states, weights, client_scalings)
    feedback = lora_pairs(error_feedback) if error_feedback else {}
    if unknown := sorted(set(feedback) - set(pairs)):
        raise ValueError(f"error_feedback has layers the adapter lacks: {unknown[:3]}")
    merged = non_lora_mean(states, weights)
    errors: dict[str, float] = {}
    residual: AdapterState = {}
    for prefix, (a_key, b_key) in pairs.items():
        P, Q = _stack_layer(states, prefix, b_coef, a_coef)
        if prefix in feedback:
            P = np.hstack([P, error_feedback[b_key].astype(np.float64)])
            Q = np.vstack([Q, error_feedback[a_key].astype(np.float64)])
        most = (P.shape[1] if residual_rank is None else residual_rank) if with_residual else 0
        s, to_left, to_right = _product_svd(P, Q, server_rank + most)
        r = min(server_rank, s.size)
        errors[prefix] = _relative_tail(s, r)
        # Drop directions at round-off level (np.linalg.matrix_rank's tolerance) so the
        # carried residual stays as small as dW's true rank.
        tol = (s[0] if s.size else 0.0) * max(P.shape[0], Q.shape[1]) * np.finfo(np.float64).eps
        keep = min(int(np.count_nonzero(s[r:] > tol)), most)
        n = min(server_rank, to_left.shape[1])  # == r whenever keep > 0
        left, right = P @ to_left[:, : n + keep], to_right[:, : n + keep].T @ Q
        dtype = states[0][a_key].dtype
        merged[b_key] = np.zeros((P.shape[0], server_rank), dtype)
        merged[a_key] = np.zeros((server_rank, Q.shape[1]), dtype)
        merged[b_key][:, :n] = left[:, :n] / server_scaling
        merged[a_key][:n] = right[:n]
        if keep:
            residual[b_key], residual[a_key] = left[:, n:].astype(dtype), right[n:].astype(dtype)
    new_state = {k: merged[k] for k in states[0]}
    return new_state, errors, residual


def slice_for_rank(
    state: AdapterState, rank: int, client_scaling: float, server_scaling: float
) -> AdapterState:
    """A rank-``rank`` client's share of an ``svd_aggregate`` state (HetLoRA / FlexLoRA).

    The state stores ``B' = U S / s'`` and ``A' = V^T`` at the server rank; the client gets
    ``B = (U S)[:, :rank] / s_k = B'[:, :rank] * s' / s_k`` and ``A = A'[:rank]``, so
    ``s_k B A`` is the best rank-``rank`` approximation of the server's ``s' B' A'``.
    Non-LoRA keys are copied.
    """
    out = {k: a.copy() for k, a in state.items()}
    for prefix, (a_key, b_key) in lora_pairs(state).items():
        have = state[a_key].shape[0]
        if rank > have:
            raise ValueError(f"{prefix}: client rank {rank} exceeds server rank {have}")
        b = state[b_key][:, :rank].astype(np.float64) * (server_scaling / client_scaling)
        out[a_key] = state[a_key][:rank].copy()
        out[b_key] = b.astype(state[b_key].dtype)
    return out


def flora_stack(
    states: Sequence[AdapterState],
    weights: Sequence[float],
    scalings: Sequence[float] | None = None,
) -> Factors:
    """FLoRA (https://arxiv.org/abs/2409.05976): per layer ``(A_stack, B_stack)``.

    ``A_stack = [p_1 A_1; ...; p_K A_K]`` (R x d_in), ``B_stack = [B_1 ... B_K]``
    (d_out x R), so ``B_stack @ A_stack = sum_k p_k B_k A_k`` exactly; the client merges
    ``s * B_stack A_stack`` into its full-precision base weight. With per-client
    ``scalings`` (heterogeneous ranks) the rows become ``p_k s_k A_k`` and the merge uses
    scaling 1. Results are in the adapter dtype; non-LoRA keys are not included (average
    them with ``non_lora_mean``).
    """
    p = normalized_weights(weights)
    if len(p) != len(states):
        raise ValueError(f"{len(states)} states but {len(p)} weights")
    coef = p if scalings is None else p * np.asarray(scalings, dtype=np.float64)
    pairs = _shared_pairs(states)
    stacks = _stack(states, b_coef=np.ones(len(p)), a_coef=coef)
    out: Factors = {}
    for prefix, (b, a) in stacks.items():
        a_key, b_key = pairs[prefix]
        out[prefix] = (a.astype(states[0][a_key].dtype), b.astype(states[0][b_key].dtype))
    return out


def fedex_residual(
    states: Sequence[AdapterState], weights: Sequence[float], scaling: float
) -> tuple[AdapterState, dict[str, np.ndarray]]:
    """FedEx-LoRA (https://arxiv.org/abs/2410.09432): averaged adapter plus exact residual.

    Returns ``(avg_state, residuals)``: ``avg_state = weighted_mean(states)`` (A, B and
    every other key; all clients must share one rank), and per layer prefix the **dense,
    full-size d_out x d_in** ``residual = s (sum_k p_k B_k A_k - B_avg A_avg)`` to fold into
    the frozen base weight, so ``W0 + residual + s B_avg A_avg`` carries the exact mean
    update. The residual is computed against the averaged factors as cast to the adapter
    dtype, i.e. against what the clients actually receive.
    """
    for prefix, (a_key, b_key) in _shared_pairs(states).items():
        ranks = sorted({s[a_key].shape[0] for s in states})
        if len(ranks) > 1:
            raise ValueError(f"{prefix}: FedEx-LoRA averages factors, ranks differ: {ranks}")
    avg = weighted_mean(states, weights)
    residuals: dict[str, np.ndarray] = {}
    factors = exact_delta_factors(states, weights, [1.0] * len(states))
    for prefix, (a_key, b_key) in lora_pairs(avg).items():
        P, Q = factors[prefix]
        naive = avg[b_key].astype(np.float64) @ avg[a_key].astype(np.float64)
        residuals[prefix] = (scaling * (P @ Q - naive)).astype(avg[b_key].dtype)
    return avg, residuals


def dense_delta(state: AdapterState, scaling: float) -> dict[str, np.ndarray]:
    """Per layer prefix the **dense** ``s B A`` (d_out x d_in, float64): for tests, small
    layers and robust aggregators that must compare clients' dW."""
    return {
        prefix: scaling * state[b].astype(np.float64) @ state[a].astype(np.float64)
        for prefix, (a, b) in lora_pairs(state).items()
    }


def pad_rank(state: AdapterState, rank: int) -> AdapterState:
    """Zero-pad every LoRA pair to ``rank`` (A gains zero rows, B zero columns), leaving
    ``B A`` unchanged: a lower-rank server state in the clients' adapter shape."""
    out = dict(state)
    for a_key, b_key in lora_pairs(state).values():
        a, b = state[a_key], state[b_key]
        if a.shape[0] > rank:
            raise ValueError(f"{a_key}: rank {a.shape[0]} exceeds {rank}")
        out[a_key] = np.pad(a, ((0, rank - a.shape[0]), (0, 0)))
        out[b_key] = np.pad(b, ((0, 0), (0, rank - b.shape[1])))
    return out


def slice_rank(state: AdapterState, rank: int) -> AdapterState:
    """The first ``rank`` components of every LoRA pair (A's rows, B's columns): what a
    rank-``rank`` client holds of a higher-rank state whose scaling ``alpha / r`` is shared
    (HetLoRA, https://arxiv.org/abs/2401.06432). Non-LoRA keys are kept."""
    out = dict(state)
    for a_key, b_key in lora_pairs(state).values():
        out[a_key] = state[a_key][:rank].copy()
        out[b_key] = state[b_key][:, :rank].copy()
    return out
