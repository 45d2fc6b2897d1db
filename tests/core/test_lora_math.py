import numpy as np
import pytest

from fedvlm.core.lora import (
    dense_delta,
    exact_delta_factors,
    factored_svd,
    fedex_residual,
    flora_stack,
    lora_pairs,
    slice_for_rank,
    svd_aggregate,
)

LAYER = "base_model.model.model.language_model.layers.0.self_attn.q_proj"
LAYER2 = "base_model.model.model.language_model.layers.0.self_attn.v_proj"
PROJ = "base_model.model.model.multi_modal_projector.linear_1.weight"


def _client(rng, rank, d_in=6, d_out=5, dtype=np.float64, layers=(LAYER, LAYER2)):
    state = {}
    for layer in layers:
        state[f"{layer}.lora_A.weight"] = rng.normal(size=(rank, d_in)).astype(dtype)
        state[f"{layer}.lora_B.weight"] = rng.normal(size=(d_out, rank)).astype(dtype)
    state[PROJ] = rng.normal(size=(3, 4)).astype(dtype)
    return state


def _scalar_client(b, a):
    return {f"{LAYER}.lora_A.weight": np.array([[a]]), f"{LAYER}.lora_B.weight": np.array([[b]])}


def _exact_mean_delta(states, weights, scalings):
    p = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    deltas = [dense_delta(s, sc) for s, sc in zip(states, scalings)]
    return {x: sum(p_k * d[x] for p_k, d in zip(p, deltas)) for x in deltas[0]}


def test_lora_pairs_match_a_and_b_by_name():
    state = _client(np.random.default_rng(0), 2)
    pairs = lora_pairs(state)
    assert pairs == {
        LAYER: (f"{LAYER}.lora_A.weight", f"{LAYER}.lora_B.weight"),
        LAYER2: (f"{LAYER2}.lora_A.weight", f"{LAYER2}.lora_B.weight"),
    }
    del state[f"{LAYER2}.lora_B.weight"]
    with pytest.raises(ValueError, match="v_proj"):
        lora_pairs(state)


@pytest.mark.parametrize("d_out,d_in,rank", [(7, 5, 3), (5, 9, 12), (30, 20, 8), (4, 4, 4)])
def test_factored_svd_equals_dense_svd(d_out, d_in, rank):
    # prepare
    rng = np.random.default_rng(d_out * 100 + rank)
    P, Q = rng.normal(size=(d_out, rank)), rng.normal(size=(rank, d_in))
    # execute
    U, S, Vt = factored_svd(P, Q)
    U_d, S_d, Vt_d = np.linalg.svd(P @ Q, full_matrices=False)
    # assert: same singular values, same vectors up to sign, exact reconstruction
    k = min(d_out, d_in, rank)
    assert S.shape == (k,) and U.shape == (d_out, k) and Vt.shape == (k, d_in)
    np.testing.assert_allclose(S, S_d[:k], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(S_d[k:], 0, atol=1e-10)
    signs = np.sign(np.sum(U * U_d[:, :k], axis=0))
    np.testing.assert_allclose(U * signs, U_d[:, :k], atol=1e-8)
    np.testing.assert_allclose(Vt * signs[:, None], Vt_d[:k], atol=1e-8)
    np.testing.assert_allclose((U * S) @ Vt, P @ Q, atol=1e-10)


def test_factored_svd_at_model_scale_without_dense_dw():
    # prepare: a 4096 x 4096 layer with 2 clients of rank 8, checked on random vectors only
    rng = np.random.default_rng(0)
    P, Q = rng.normal(size=(4096, 16)), rng.normal(size=(16, 4096))
    # execute
    U, S, Vt = factored_svd(P, Q)
    # assert: U S Vt v == P (Q v) and U is orthonormal
    v = rng.normal(size=(4096, 3))
    np.testing.assert_allclose(U @ (S[:, None] * (Vt @ v)), P @ (Q @ v), rtol=1e-9)
    np.testing.assert_allclose(U.T @ U, np.eye(16), atol=1e-10)


def test_exact_delta_factors_give_weighted_mean_of_dw():
    # prepare: heterogeneous ranks 2 and 3, alpha 6 -> scalings 3 and 2
    rng = np.random.default_rng(1)
    states, weights, scalings = [_client(rng, 2), _client(rng, 3)], [1, 3], [3.0, 2.0]
    # execute
    factors = exact_delta_factors(states, weights, scalings)
    # assert
    exact = _exact_mean_delta(states, weights, scalings)
    for layer, (P, Q) in factors.items():
        assert P.shape == (5, 5) and Q.shape == (5, 6)
        np.testing.assert_allclose(P @ Q, exact[layer], atol=1e-12)


def test_naive_ab_averaging_is_inexact_on_constructed_case():
    # prepare: both clients have dW = s B A = 1 (1 x 1, s = 1), equal weights
    states = [_scalar_client(b=2.0, a=0.5), _scalar_client(b=0.5, a=2.0)]
    # execute
    naive_b = (2.0 + 0.5) / 2
    naive_a = (0.5 + 2.0) / 2
    svd_state, _, _ = svd_aggregate(states, [1, 1], [1.0, 1.0], 1, 1.0)
    avg, residual = fedex_residual(states, [1, 1], 1.0)
    a_stack, b_stack = flora_stack(states, [1, 1])[LAYER]
    # assert: the exact mean is 1, naive averaging gives 1.25 * 1.25 = 1.5625
    assert naive_b * naive_a == 1.5625
    np.testing.assert_allclose(dense_delta(svd_state, 1.0)[LAYER], [[1.0]], atol=1e-12)
    np.testing.assert_allclose(dense_delta(avg, 1.0)[LAYER], [[1.5625]], atol=1e-12)
    np.testing.assert_allclose(residual[LAYER], [[-0.5625]], atol=1e-12)
    np.testing.assert_allclose(b_stack @ a_stack, [[1.0]], atol=1e-12)


def test_svd_at_full_rank_equals_exact_averaging():
    # prepare: 3 clients of rank 1 -> dW has rank <= 3
    rng = np.random.default_rng(2)
    states = [_client(rng, 1), _client(rng, 1), _client(rng, 1)]
    weights, scalings = [2, 1, 5], [4.0, 4.0, 4.0]
    # execute: server rank = sum of client ranks, new scaling 0.5
    new, errors, residual = svd_aggregate(states, weights, scalings, 3, 0.5)
    # assert
    exact = _exact_mean_delta(states, weights, scalings)
    for layer, dw in dense_delta(new, 0.5).items():
        np.testing.assert_allclose(dw, exact[layer], atol=1e-6)
    assert new[f"{LAYER}.lora_A.weight"].shape == (3, 6)
    assert new[f"{LAYER}.lora_B.weight"].shape == (5, 3)
    assert errors == {LAYER: pytest.approx(0, abs=1e-12), LAYER2: pytest.approx(0, abs=1e-12)}
    assert residual == {}
    p = np.array(weights) / 8
    np.testing.assert_allclose(new[PROJ], sum(pk * s[PROJ] for pk, s in zip(p, states)))
    assert list(new) == list(states[0])


def test_svd_truncation_error_is_reported_and_matches_dense():
    # prepare: 2 clients of rank 2 -> dW rank 4, truncated to 2
    rng = np.random.default_rng(3)
    states = [_client(rng, 2), _client(rng, 2)]
    # execute
    new, errors, residual = svd_aggregate(states, [1, 1], [2.0, 2.0], 2, 2.0, with_residual=True)
    # assert: error = ||dW - dW_2||_F / ||dW||_F and the server keeps the best rank-2 part
    exact = _exact_mean_delta(states, [1, 1], [2.0, 2.0])
    for layer, dw in exact.items():
        U, S, Vt = np.linalg.svd(dw)
        best = (U[:, :2] * S[:2]) @ Vt[:2]
        assert errors[layer] == pytest.approx(np.linalg.norm(dw - best) / np.linalg.norm(dw))
        assert 0 < errors[layer] < 1
        np.testing.assert_allclose(dense_delta(new, 2.0)[layer], best, atol=1e-10)
        # residual (scaling 1) is exactly the truncated tail
        np.testing.assert_allclose(dense_delta(residual, 1.0)[layer], dw - best, atol=1e-10)


def test_error_feedback_carries_the_tail_into_next_round():
    # prepare
    rng = np.random.default_rng(4)
    round1 = [_client(rng, 2), _client(rng, 2)]
    round2 = [_client(rng, 2), _client(rng, 2)]
    _, _, residual = svd_aggregate(round1, [1, 1], [1.0, 1.0], 2, 1.0, with_residual=True)
    # execute: at full rank (2 clients x 2 + tail 2 = 6 > 5 = d_out) nothing is lost
    new, errors, tail = svd_aggregate(
        round2, [1, 3], [1.0, 1.0], 5, 1.0, error_feedback=residual, with_residual=True
    )
    # assert: the new adapter carries round 2's mean dW plus round 1's tail
    exact = _exact_mean_delta(round2, [1, 3], [1.0, 1.0])
    carried = dense_delta(residual, 1.0)
    for layer, dw in dense_delta(new, 1.0).items():
        np.testing.assert_allclose(dw, exact[layer] + carried[layer], atol=1e-10)
    assert tail == {} and max(errors.values()) < 1e-12


def test_heterogeneous_ranks_and_rank_slices():
    # prepare: ranks 2 and 4 with alpha 8 -> s_k = 4 and 2; server rank r_max = 4, s' = 2
    rng = np.random.default_rng(5)
    states = [_client(rng, 2, d_in=8, d_out=7), _client(rng, 4, d_in=8, d_out=7)]
    scalings = [4.0, 2.0]
    exact = _exact_mean_delta(states, [1, 1], scalings)
    # execute
    full, full_err, _ = svd_aggregate(states, [1, 1], scalings, 6, 2.0)
    server, errors, _ = svd_aggregate(states, [1, 1], scalings, 4, 2.0)
    small = slice_for_rank(server, 2, 4.0, 2.0)
    # assert: rank 6 (= 2 + 4) is exact; the rank-2 slice is the best rank-2 approximation
    for layer, dw in exact.items():
        np.testing.assert_allclose(dense_delta(full, 2.0)[layer], dw, atol=1e-10)
        assert full_err[layer] < 1e-12 and errors[layer] > 0
        U, S, Vt = np.linalg.svd(dw)
        best2, best4 = (U[:, :2] * S[:2]) @ Vt[:2], (U[:, :4] * S[:4]) @ Vt[:4]
        np.testing.assert_allclose(dense_delta(small, 4.0)[layer], best2, atol=1e-10)
        np.testing.assert_allclose(dense_delta(server, 2.0)[layer], best4, atol=1e-10)
    assert small[f"{LAYER}.lora_A.weight"].shape == (2, 8)
    assert small[f"{LAYER}.lora_B.weight"].shape == (7, 2)
    np.testing.assert_array_equal(small[PROJ], server[PROJ])
    with pytest.raises(ValueError, match="exceeds server rank"):
        slice_for_rank(server, 5, 1.6, 2.0)


def test_server_rank_above_dw_rank_pads_with_zeros():
    states = [_client(np.random.default_rng(6), 2, d_in=3, d_out=3)]
    new, errors, _ = svd_aggregate(states, [1], [1.0], 4, 1.0)
    assert new[f"{LAYER}.lora_A.weight"].shape == (4, 3)
    np.testing.assert_array_equal(new[f"{LAYER}.lora_A.weight"][2:], 0)
    expected = dense_delta(states[0], 1.0)[LAYER]
    np.testing.assert_allclose(dense_delta(new, 1.0)[LAYER], expected, atol=1e-12)


def test_flora_stack_equals_weighted_mean_of_dw():
    # prepare: heterogeneous ranks 1, 2, 3
    rng = np.random.default_rng(7)
    states, weights = [_client(rng, 1), _client(rng, 2), _client(rng, 3)], [1, 2, 1]
    # execute
    stacks = flora_stack(states, weights)
    scaled = flora_stack(states, weights, scalings=[8.0, 4.0, 8 / 3])
    # assert
    exact = _exact_mean_delta(states, weights, [1.0, 1.0, 1.0])
    exact_scaled = _exact_mean_delta(states, weights, [8.0, 4.0, 8 / 3])
    for layer, (a_stack, b_stack) in stacks.items():
        assert a_stack.shape == (6, 6) and b_stack.shape == (5, 6)
        np.testing.assert_allclose(b_stack @ a_stack, exact[layer], atol=1e-6)
        a_s, b_s = scaled[layer]
        np.testing.assert_allclose(b_s @ a_s, exact_scaled[layer], atol=1e-6)


def test_fedex_average_plus_residual_equals_weighted_mean_of_dw():
    # prepare
    rng = np.random.default_rng(8)
    states, weights = [_client(rng, 2), _client(rng, 2), _client(rng, 2)], [5, 1, 2]
    # execute
    avg, residuals = fedex_residual(states, weights, 2.0)
    # assert: s B_avg A_avg + residual == sum p_k s B_k A_k, and the residual is full size
    exact = _exact_mean_delta(states, weights, [2.0, 2.0, 2.0])
    naive = dense_delta(avg, 2.0)
    for layer, dw in exact.items():
        assert residuals[layer].shape == (5, 6)
        np.testing.assert_allclose(naive[layer] + residuals[layer], dw, atol=1e-6)
        assert np.abs(residuals[layer]).max() > 1e-3  # naive averaging alone is off
    with pytest.raises(ValueError, match="ranks differ"):
        fedex_residual([_client(rng, 2), _client(rng, 3)], [1, 1], 2.0)


def test_float32_adapters_stay_float32():
    rng = np.random.default_rng(9)
    states = [_client(rng, 2, dtype=np.float32), _client(rng, 2, dtype=np.float32)]
    new, _, residual = svd_aggregate(states, [1, 1], [2.0, 2.0], 2, 2.0, with_residual=True)
    assert residual and all(a.dtype == np.float32 for a in new.values())
    assert all(a.dtype == np.float32 for a in residual.values())
    assert all(a.dtype == np.float32 for pair in flora_stack(states, [1, 1]).values() for a in pair)
    avg, res = fedex_residual(states, [1, 1], 2.0)
    assert res[LAYER].dtype == np.float32
    exact = _exact_mean_delta(states, [1, 1], [2.0, 2.0])
    np.testing.assert_allclose(dense_delta(avg, 2.0)[LAYER] + res[LAYER], exact[LAYER], atol=1e-5)


def _layer(a, b):
    return {f"{LAYER}.lora_A.weight": np.asarray(a), f"{LAYER}.lora_B.weight": np.asarray(b)}


def _best_rank(dw, rank):
    U, S, Vt = np.linalg.svd(dw)
    return (U[:, :rank] * S[:rank]) @ Vt[:rank], S


def test_svd_aggregate_rank_one_by_hand():
    # prepare: dW = 1/2 [3 0]^T [1 0] + 1/2 [0 1]^T [0 2] = diag(1.5, 1), scalings 1
    states = [
        _layer(a=[[1.0, 0.0]], b=[[3.0], [0.0]]),
        _layer(a=[[0.0, 2.0]], b=[[0.0], [1.0]]),
    ]
    # execute: keep rank 1 with server scaling 0.5
    new, errors, residual = svd_aggregate(states, [1, 1], [1.0, 1.0], 1, 0.5, with_residual=True)
    plain, _, no_residual = svd_aggregate(states, [1, 1], [1.0, 1.0], 1, 0.5)
    # assert: B' = u_1 s_1 / 0.5 = [3, 0], A' = v_1^T = [1, 0] (up to a shared sign); the
    # tail diag(0, 1) is the residual and the error is 1 / sqrt(1.5^2 + 1^2)
    a, b = new[f"{LAYER}.lora_A.weight"], new[f"{LAYER}.lora_B.weight"]
    sign = np.sign(a[0, 0])
    np.testing.assert_allclose(sign * a, [[1.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(sign * b, [[3.0], [0.0]], atol=1e-14)
    assert errors[LAYER] == pytest.approx(1 / np.sqrt(3.25), rel=1e-14)
    np.testing.assert_allclose(dense_delta(residual, 1.0)[LAYER], np.diag([0.0, 1.0]), atol=1e-15)
    assert no_residual == {}
    np.testing.assert_array_equal(plain[f"{LAYER}.lora_B.weight"], b)


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_identical_clients_give_their_own_update_back(dtype, atol):
    # prepare: 4 copies of one rank-3 client (P and Q have rank 3 of R = 12), any weights
    client = _client(np.random.default_rng(10), 3, d_in=8, d_out=7, dtype=dtype)
    states = [dict(client) for _ in range(4)]
    # execute
    new, errors, residual = svd_aggregate(
        states, [1, 2, 3, 4], [2.0] * 4, 3, 2.0, with_residual=True
    )
    # assert: the client's own dW, nothing truncated, orthonormal A' rows, no NaN
    own = dense_delta(client, 2.0)
    for layer, dw in dense_delta(new, 2.0).items():
        np.testing.assert_allclose(dw, own[layer], atol=atol * np.abs(own[layer]).max())
        a = new[f"{layer}.lora_A.weight"].astype(np.float64)
        np.testing.assert_allclose(a @ a.T, np.eye(3), atol=atol)
    assert max(errors.values()) < 1e-12 and residual == {}
    assert all(a.dtype == dtype for a in new.values())


def _rank_deficient(case, rng):
    d_in, d_out, r = 9, 8, 3
    A0, B0 = rng.normal(size=(r, d_in)), rng.normal(size=(d_out, r))
    pairs = {
        # FFA-LoRA style: one shared A, so Q = [p_k A] has rank r of R = 12
        "shared_a": [(rng.normal(size=(d_out, r)), A0) for _ in range(4)],
        # R = 12 > d_out = 8 and > d_in = 9
        "more_rank_than_dim": [
            (rng.normal(size=(d_out, r)), rng.normal(size=(r, d_in))) for _ in range(4)
        ],
        # clients that barely moved from a common start: tail singular values ~1e-7 s_1,
        # which a Gram matrix alone (eps * cond^2 ~ 1) cannot resolve
        "near_identical": [
            (B0 + 1e-7 * rng.normal(size=(d_out, r)), A0 + 1e-7 * rng.normal(size=(r, d_in)))
            for _ in range(4)
        ],
        # clients whose updates almost cancel: ||dW|| ~ 1e-3 ||P|| ||Q||
        "cancelling": [(s * B0 + 1e-3 * rng.normal(size=(d_out, r)), A0) for s in (1, -1, 1, -1)],
        "ill_conditioned": _ill_conditioned_pairs(rng),
    }[case]
    return [_layer(a=a, b=b) for b, a in pairs]


def _ill_conditioned_pairs(rng, d=24, r=3, weights=(1, 2, 3, 4)):
    # P and Q^T with singular values from 1 to 1e-7 on shared right vectors, P's strongest
    # against Q's weakest: cond ~1e7 each and ||dW|| ~ 1e-7 ||P|| ||Q|| (A_k = Q_k / p_k)
    width = len(weights) * r
    v = np.linalg.qr(rng.normal(size=(width, width)))[0]
    sigma = np.logspace(0, -7, width)
    P = (np.linalg.qr(rng.normal(size=(d, width)))[0] * sigma) @ v.T
    sigma_q = sigma[::-1] * np.logspace(0, -1, width)
    Qt = (np.linalg.qr(rng.normal(size=(d, width)))[0] * sigma_q) @ v.T
    p = np.asarray(weights) / np.sum(weights)
    return [(P[:, k * r : (k + 1) * r], Qt[:, k * r : (k + 1) * r].T / p[k]) for k in range(len(p))]


@pytest.mark.parametrize(
    "case", ["shared_a", "more_rank_than_dim", "near_identical", "cancelling", "ill_conditioned"]
)
def test_rank_deficient_inputs_match_dense_svd(case):
    # prepare
    states = _rank_deficient(case, np.random.default_rng(11))
    weights, scalings = [1, 2, 3, 4], [2.0] * 4
    dw = _exact_mean_delta(states, weights, scalings)[LAYER]
    best, S = _best_rank(dw, 2)
    # execute
    new, errors, residual = svd_aggregate(states, weights, scalings, 2, 2.0, with_residual=True)
    # assert: the best rank-2 part, the dense truncation error, and dW = kept + residual,
    # each to 1e-9 of ||dW|| (P^T P alone would be 1e-8 to 1e-6 off on near_identical and
    # ill_conditioned; float32 rounding is 6e-8)
    scale = np.linalg.norm(dw)
    np.testing.assert_allclose(dense_delta(new, 2.0)[LAYER], best, atol=1e-9 * scale)
    assert errors[LAYER] == pytest.approx(np.linalg.norm(S[2:]) / scale, rel=1e-6, abs=1e-12)
    kept_plus_tail = dense_delta(new, 2.0)[LAYER] + dense_delta(residual, 1.0).get(LAYER, 0)
    np.testing.assert_allclose(kept_plus_tail, dw, atol=1e-9 * scale)
    a = new[f"{LAYER}.lora_A.weight"]
    np.testing.assert_allclose(a @ a.T, np.eye(2), atol=1e-10)


def test_zero_b_gives_zero_update_and_orthonormal_a():
    # prepare: every client still has B = 0 (LoRA at init), so dW = 0
    rng = np.random.default_rng(12)
    states = [_layer(a=rng.normal(size=(2, 6)), b=np.zeros((5, 2))) for _ in range(3)]
    # execute
    new, errors, residual = svd_aggregate(states, [1, 1, 1], [1.0] * 3, 4, 1.0, with_residual=True)
    # assert: B' = 0, A' rows orthonormal inside the clients' A row space (a fresh LoRA), no NaN
    a, b = new[f"{LAYER}.lora_A.weight"], new[f"{LAYER}.lora_B.weight"]
    np.testing.assert_array_equal(b, 0)
    np.testing.assert_allclose(a @ a.T, np.eye(4), atol=1e-12)
    stacked = np.vstack([s[f"{LAYER}.lora_A.weight"] for s in states])
    np.testing.assert_allclose(a @ np.linalg.pinv(stacked) @ stacked, a, atol=1e-12)
    assert errors == {LAYER: 0.0} and residual == {}


def test_error_feedback_on_and_off_with_heterogeneous_ranks():
    # prepare: ranks 1, 2, 3 with alpha 6 -> s_k = 6, 3, 2; dW has rank 6 (d = 7, 8)
    rng = np.random.default_rng(13)
    states = [_client(rng, r, d_in=8, d_out=7) for r in (1, 2, 3)]
    weights, scalings = [3, 1, 2], [6.0, 3.0, 2.0]
    dw = _exact_mean_delta(states, weights, scalings)
    # execute
    off, off_err, off_tail = svd_aggregate(states, weights, scalings, 2, 3.0)
    on, on_err, tail = svd_aggregate(states, weights, scalings, 2, 3.0, with_residual=True)
    _, _, short = svd_aggregate(
        states, weights, scalings, 2, 3.0, with_residual=True, residual_rank=1
    )
    # assert: the kept part does not depend on the flag; the residual is exactly the tail
    # (4 directions), or its leading direction with residual_rank=1
    assert off_tail == {} and off_err == on_err
    for layer, exact in dw.items():
        best, S = _best_rank(exact, 2)
        np.testing.assert_allclose(dense_delta(off, 3.0)[layer], best, atol=1e-10)
        np.testing.assert_allclose(dense_delta(on, 3.0)[layer], best, atol=1e-10)
        np.testing.assert_allclose(dense_delta(tail, 1.0)[layer], exact - best, atol=1e-10)
        assert tail[f"{layer}.lora_A.weight"].shape == (4, 8)
        best3, _ = _best_rank(exact, 3)
        np.testing.assert_allclose(dense_delta(short, 1.0)[layer], best3 - best, atol=1e-10)
        assert off_err[layer] == pytest.approx(np.linalg.norm(S[2:]) / np.linalg.norm(S))


def test_svd_aggregate_at_model_scale_matches_factored_svd():
    # prepare: 8 clients of rank 8 on a 2048 x 1024 layer, checked on random vectors only
    rng = np.random.default_rng(14)
    states = [_client(rng, 8, d_in=1024, d_out=2048, layers=(LAYER,)) for _ in range(8)]
    weights, scalings = list(range(1, 9)), [2.0] * 8
    P, Q = exact_delta_factors(states, weights, scalings)[LAYER]
    U, S, Vt = factored_svd(P, Q)
    # execute
    new, errors, _ = svd_aggregate(states, weights, scalings, 8, 2.0)
    # assert: s' B' (A' v) == U_8 S_8 (V_8^T v), and the same truncation error
    v = rng.normal(size=(1024, 3))
    a, b = new[f"{LAYER}.lora_A.weight"], new[f"{LAYER}.lora_B.weight"]
    expected = U[:, :8] @ (S[:8, None] * (Vt[:8] @ v))
    atol = 1e-12 * np.abs(expected).max()
    np.testing.assert_allclose(2.0 * b @ (a @ v), expected, rtol=1e-9, atol=atol)
    assert errors[LAYER] == pytest.approx(np.linalg.norm(S[8:]) / np.linalg.norm(S), rel=1e-12)


def test_exactly_cancelling_clients_leave_no_round_off_residual():
    # prepare: rank-1 clients b a, b (-a), c e with equal weights: dW = (c e) / 3 has rank 1
    # although P = [b b c] and Q = [a; -a; e] both have rank 2
    rng = np.random.default_rng(15)
    a, e = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    b, c = rng.normal(size=(5, 1)), rng.normal(size=(5, 1))
    states = [_layer(a=x, b=y) for y, x in ((b, a), (b, -a), (c, e))]
    # execute
    new, errors, residual = svd_aggregate(states, [1, 1, 1], [1.0] * 3, 1, 1.0, with_residual=True)
    # assert: rank 1 is exact; the round-off second direction is not carried as a residual
    np.testing.assert_allclose(dense_delta(new, 1.0)[LAYER], c @ e / 3, atol=1e-14)
    assert errors[LAYER] < 1e-14 and residual == {}


def test_server_rank_above_the_clients_a_rank_pads_with_zeros():
    # prepare: FFA-style shared A of rank 3, so dW and the stacked A's have rank 3 (R = 12)
    states = _rank_deficient("shared_a", np.random.default_rng(16))
    # execute: ask for rank 5
    new, errors, _ = svd_aggregate(states, [1, 1, 1, 1], [1.0] * 4, 5, 1.0)
    # assert: 3 orthonormal rows in the shared A's row space, then zero rows and columns
    a, b = new[f"{LAYER}.lora_A.weight"], new[f"{LAYER}.lora_B.weight"]
    np.testing.assert_allclose(a[:3] @ a[:3].T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(a[3:], 0)
    np.testing.assert_array_equal(b[:, 3:], 0)
    shared = states[0][f"{LAYER}.lora_A.weight"]
    np.testing.assert_allclose(a[:3] @ np.linalg.pinv(shared) @ shared, a[:3], atol=1e-12)
    exact = _exact_mean_delta(states, [1] * 4, [1.0] * 4)[LAYER]
    np.testing.assert_allclose(dense_delta(new, 1.0)[LAYER], exact, atol=1e-12)
    assert errors[LAYER] < 1e-14
