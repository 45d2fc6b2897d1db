"""Paired comparisons in bench tables, against hand-computed values."""

import math
from types import SimpleNamespace

import pytest

from fedvlm.reporting.bench_report import paired_rows, render_paired
from fedvlm.reporting.paired import paired_test


def _t4_two_sided(t: float) -> float:
    """Student's t with 4 degrees of freedom in closed form:
    F(t) = 1/2 + 3/8 u (1 - u^2 / 12) with u = t / sqrt(1 + t^2 / 4)."""
    u = t / math.sqrt(1 + t * t / 4)
    return 2 * (1 - (0.5 + 3 / 8 * u * (1 - u * u / 12)))


def test_a_mixed_set_of_five_differences():
    out = paired_test([0, 0, 0, 0, 0], [1, -2, 3, 4, 5])
    # mean 2.2, sample variance 30.8 / 4 = 7.7, t = 2.2 / sqrt(7.7 / 5)
    assert out["n"] == 5 and out["mean_diff"] == pytest.approx(2.2) and (out["wins"], out["losses"]) == (4, 1)
    assert out["t_p"] == pytest.approx(_t4_two_sided(2.2 / math.sqrt(7.7 / 5)), rel=1e-9)
    # ranks 1..5, the negative one has rank 2: W- = 2; subsets of {1..5} summing to <= 2 are
    # {}, {1}, {2}: P(W <= 2) = 3/32, two-sided 6/32
    assert out["wilcoxon_p"] == pytest.approx(6 / 32)


def test_five_wins_cannot_reach_wilcoxon_five_percent():
    out = paired_test([50, 60, 70, 55, 65], [51, 62, 73, 59, 70])
    assert (out["wins"], out["losses"]) == (5, 0) and out["wilcoxon_p"] == pytest.approx(2 / 32)
    # differences 1..5: mean 3, sample variance 2.5
    assert out["t_p"] == pytest.approx(_t4_two_sided(3 / math.sqrt(2.5 / 5)), rel=1e-9)


def test_undefined_cases_are_none():
    assert paired_test([1.0], [2.0])["t_p"] is None  # one pair
    same = paired_test([1, 2, 3], [1, 2, 3])
    assert same["t_p"] is None and same["wilcoxon_p"] is None and same["mean_diff"] == 0
    constant = paired_test([1, 2, 3], [2, 3, 4])  # every difference 1: no spread for t
    assert constant["t_p"] is None and constant["wilcoxon_p"] == pytest.approx(2 / 8)
    with pytest.raises(ValueError):
        paired_test([1, 2], [1])


def test_bench_pairs_only_the_seeds_both_finished():
    bench = SimpleNamespace(algorithms={"fedavg": [], "scaffold": [], "flora": []}, partitions={"a": []})
    results = {
        ("a", "fedavg"): [{"seed": s, "final_accuracy": v} for s, v in [(0, 0.50), (1, 0.60), (2, 0.70)]],
        ("a", "scaffold"): [{"seed": s, "final_accuracy": v} for s, v in [(0, 0.55), (2, 0.71)]],  # seed 1 unfinished
        ("a", "flora"): [],
    }
    scaffold, flora = paired_rows(bench, results)["a"]
    assert scaffold["n"] == 2 and scaffold["mean_diff"] == pytest.approx((5 + 1) / 2)
    assert scaffold["reference"] == "fedavg" and flora["n"] == 0 and flora["mean_diff"] is None
    lines = render_paired([scaffold, flora])
    assert "| scaffold " in "\n".join(lines) and "+3.0" in "\n".join(lines)
