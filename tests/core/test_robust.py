"""Robust aggregation against hand-computed values (ALGORITHMS.md, "Robustness")."""

import numpy as np
import pytest

from fedvlm.algorithms.krum.server import Krum, KrumOptions
from fedvlm.algorithms.median.server import Median
from fedvlm.algorithms.norm_bound.server import NormBound, NormBoundOptions
from fedvlm.algorithms.trimmed_mean.server import TrimmedMean, TrimmedMeanOptions
from fedvlm.core.robust import gram, krum_scores, squared_distances, update_norms
from fedvlm.core.types import ClientUpdate, ServerState
from fedvlm.errors import UpdateError

A, B, W = "layer.lora_A.weight", "layer.lora_B.weight", "head.weight"


def _updates(states, sizes=None):
    return [ClientUpdate(str(i), s, (sizes or [1] * len(states))[i]) for i, s in enumerate(states)]


def _run(strategy, reference, states, sizes=None):
    state = ServerState(round=0, global_state=reference)
    return strategy.aggregate(1, state, _updates(states, sizes))


def _w(*values):
    return {W: np.array(values, dtype=np.float32)}


def test_median_and_trimmed_mean_of_plain_arrays():
    ref, states = _w(0.0), [_w(1.0), _w(2.0), _w(10.0)]
    assert _run(Median(), ref, states).global_state[W].tolist() == [2.0]
    # n = 3, beta 1/3: one dropped at each end, the middle value left
    assert _run(TrimmedMean(options=TrimmedMeanOptions(trim_beta=0.34)), ref, states).global_state[W].tolist() == [2.0]
    # beta 0: the plain mean, 13/3
    out = _run(TrimmedMean(options=TrimmedMeanOptions(trim_beta=0.0)), ref, states).global_state[W]
    assert out.tolist() == pytest.approx([13 / 3])


def _lora(b, a):
    return {B: np.array(b, dtype=np.float32), A: np.array(a, dtype=np.float32)}


def test_median_is_taken_of_products_not_factors():
    # global product 0; the clients' products [[1,0],[0,0]], [[2,0],[0,0]], [[0,0],[0,100]]
    ref = _lora([[0.0], [0.0]], [[1.0, 0.0]])
    states = [_lora([[0.5], [0.0]], [[2.0, 0.0]]),  # = [[1, 0], [0, 0]], factored unlike the others
              _lora([[2.0], [0.0]], [[1.0, 0.0]]),
              _lora([[0.0], [100.0]], [[0.0, 1.0]])]
    out = _run(Median(lora_scaling=1.0), ref, states).global_state
    product = out[B].astype(np.float64) @ out[A]
    np.testing.assert_allclose(product, [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    # the median of the raw factors would give B = [[0.5], [0]], A = [[1, 0]]: product 0.5
    assert out[A].shape == (1, 2) and out[B].shape == (2, 1)


def test_krum_and_multi_krum_by_hand():
    # 1-D updates 0, 1, 2, 3, 100 with f = 1: each score sums the n - f - 2 = 2 nearest
    # squared distances: 5, 2, 2, 5, 97^2 + 98^2
    states = [_w(v) for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
    assert krum_scores(states, 1.0, f=1).tolist() == [5.0, 2.0, 2.0, 5.0, 19013.0]
    ref = _w(0.0)
    assert _run(Krum(options=KrumOptions(krum_f=1)), ref, states).global_state[W].tolist() == [1.0]
    multi = _run(Krum(options=KrumOptions(krum_f=1, krum_m=2)), ref, states).global_state[W]
    assert multi.tolist() == pytest.approx([1.5])
    with pytest.raises(UpdateError, match="round 1: Krum with f=2 assumed attackers needs more than 6 updates, got 5"):
        _run(Krum(options=KrumOptions(krum_f=2)), ref, states)


def test_factored_distances_equal_the_dense_ones():
    rng = np.random.default_rng(0)
    states = [{B: rng.normal(size=(5, 2)), A: rng.normal(size=(2, 4)), W: rng.normal(size=3)} for _ in range(4)]
    dense = [np.concatenate([(2.0 * s[B] @ s[A]).ravel(), s[W]]) for s in states]
    expected = np.array([[np.sum((x - y) ** 2) for y in dense] for x in dense])
    np.testing.assert_allclose(squared_distances(gram(states, 2.0)), expected, rtol=1e-10, atol=1e-10)
    norms = update_norms(states[1:], states[0], 2.0)
    np.testing.assert_allclose(norms, np.sqrt(expected[0, 1:]), rtol=1e-10)


def test_norm_bound_clips_each_update_before_averaging():
    # updates [3, 4] (norm 5) and [0, 1] (norm 1), equal sizes, clip at 1:
    # [0.6, 0.8] and [0, 1], averaged: [0.3, 0.9]
    ref, states = _w(0.0, 0.0), [_w(3.0, 4.0), _w(0.0, 1.0)]
    new = _run(NormBound(options=NormBoundOptions(clip_norm=1.0)), ref, states)
    np.testing.assert_allclose(new.global_state[W], [0.3, 0.9], rtol=1e-6)
    assert new.scalars["clipped"] == 1
    # no clip_norm: the median norm, (5 + 1) / 2 = 3: [1.8, 2.4] and [0, 1] -> [0.9, 1.7]
    new = _run(NormBound(), ref, states)
    np.testing.assert_allclose(new.global_state[W], [0.9, 1.7], rtol=1e-6)


def test_norm_bound_on_lora_products():
    # global product 0 (B = 0); one client's product 10 * e1 e1^T, the other's e2 e2^T;
    # clipped to norm 1 and averaged: diag(0.5, 0.5)
    ref = _lora([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    states = [_lora([[10.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]),
              _lora([[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])]
    out = _run(NormBound(lora_scaling=1.0, options=NormBoundOptions(clip_norm=1.0)), ref, states).global_state
    np.testing.assert_allclose(out[B].astype(np.float64) @ out[A], np.diag([0.5, 0.5]), atol=1e-6)
