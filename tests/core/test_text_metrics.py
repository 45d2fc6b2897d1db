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


def test_cider_against_hand_computed_values():
    """CIDEr-D (x10, n = 1..4, idf over the references' images, equal lengths: no penalty).
    Identical 3-word captions: cos = 1 for n = 1, 2, 3 and nothing for n = 4 -> 10 * 3/4.
    ("a" is in both images: idf log(2/2) = 0, so it weighs nothing.)"""
    from fedvlm.core.text_metrics import caption_scores, cider

    assert cider(["A red circle.", "a blue square"], [["a red circle"], ["a blue square"]]) == pytest.approx(7.5)
    # "red square" against "red circle": only "red" matches, every weight log 2, so the
    # unigram cosine is 1/2 and nothing else matches -> 10 * (1/2) / 4 = 1.25; the second
    # image matches at n = 1, 2 -> 10 * 2/4 = 5; the corpus score is their mean
    assert cider(["red square", "blue square"], [["red circle"], ["blue square"]]) == pytest.approx((1.25 + 5) / 2)
    captions = ["a red circle and a blue square", "a green triangle and a red square"]
    scores = caption_scores(captions, captions)
    assert scores["bleu4"] == pytest.approx(100.0) and scores["rouge_l"] == pytest.approx(1.0)
    # BLEU-4 of captions shorter than 4 words: no 4-gram in the corpus, so 0 (as BLEU-4 is)
    assert caption_scores(["a red circle"], ["a red circle"])["bleu4"] == 0.0
