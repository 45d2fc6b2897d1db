"""Text metrics against values worked out by hand."""

import math

import pytest

from fedvlm.core.text_metrics import bleu, exact_match, rouge_l

PRED = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_exact_match_ignores_case_and_spacing_only():
    assert exact_match(["Paris ", "the  Cat", "dog"], ["paris", "the cat", "dogs"]) == pytest.approx(2 / 3)


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    # LCS(the cat sat on the mat, the cat is on the mat) = the cat on the mat: 5 of 6 each way
    # -> F1 5/6; "a b c" vs "a c": LCS 2, P 2/3, R 1, F1 0.8
    assert rouge_l([PRED], [REF]) == pytest.approx(5 / 6)
    assert rouge_l([PRED, "a b c"], [REF, "a c"]) == pytest.approx((5 / 6 + 0.8) / 2)


def test_bleu_is_the_geometric_mean_of_clipped_ngram_precisions():
    # 1-grams 5/6, 2-grams 3/5, 3-grams 1/4 (on the mat), 4-grams 0/3 smoothed to 1/(2*3);
    # same length, so no brevity penalty
    expected = 100 * math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(1 / 4) + math.log(1 / 6)) / 4)
    assert bleu([PRED], [REF]) == pytest.approx(expected, abs=1e-6)
    assert bleu([REF], [REF]) == pytest.approx(100.0)
