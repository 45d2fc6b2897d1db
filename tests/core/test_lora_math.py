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
    new, errors, residual = svd_aggregate(states, [1, 1], [2.0, 2.0], 2, 2.0)
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
    _, _, residual = svd_aggregate(round1, [1, 1], [1.0, 1.0], 2, 1.0)
    # execute: at full rank (2 clients x 2 + tail 2 = 6 > 5 = d_out) nothing is lost
    new, errors, tail = svd_aggregate(round2, [1, 3], [1.0, 1.0], 5, 1.0, error_feedback=residual)
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
    new, _, residual = svd_aggregate(states, [1, 1], [2.0, 2.0], 2, 2.0)
    assert all(a.dtype == np.float32 for a in new.values())
    assert all(a.dtype == np.float32 for a in residual.values())
    assert all(a.dtype == np.float32 for pair in flora_stack(states, [1, 1]).values() for a in pair)
    avg, res = fedex_residual(states, [1, 1], 2.0)
    assert res[LAYER].dtype == np.float32
    exact = _exact_mean_delta(states, [1, 1], [2.0, 2.0])
    np.testing.assert_allclose(dense_delta(avg, 2.0)[LAYER] + res[LAYER], exact[LAYER], atol=1e-5)
