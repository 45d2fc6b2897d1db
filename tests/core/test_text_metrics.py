"""Text metrics against values worked out by hand."""

import math
import shutil
from unittest import mock

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
    scores = caption_scores(captions, [[c] for c in captions])
    assert scores["bleu4"] == pytest.approx(1.0) and scores["rouge_l"] == pytest.approx(1.0)
    # BLEU-4 of a caption shorter than 4 words, as pycocoevalcap computes it: no 4-gram,
    # so its 4-gram precision is tiny / small = 1e-15 / 1e-9 and BLEU-4 = (1 * 1 * 1 * 1e-6)^(1/4)
    assert caption_scores(["a red circle"], [["a red circle"]])["bleu4"] == pytest.approx(1e-6 ** 0.25, rel=1e-4)


def test_rouge_l_is_cocos_f_measure_against_the_best_of_all_references():
    from fedvlm.core.text_metrics import caption_scores

    # LCS 3 of 3 predicted and 4 reference tokens: P 1, R 3/4; F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    f = (1 + 1.44) * 0.75 / (0.75 + 1.44)
    assert caption_scores(["A red circle."], [["a red square circle"]])["rouge_l"] == pytest.approx(f)
    # every reference counts: the second one matches exactly
    assert caption_scores(["a blue square"], [["a red circle", "a blue square"]])["rouge_l"] == pytest.approx(1.0)
    assert caption_scores(["a blue square"], [["a red circle"]])["rouge_l"] < 0.5


# captions' usual punctuation: what the Python tokenizer must split exactly as the jar does
CORPUS = [
    "A man riding a double-decker bus.", "Isn't that a 3.5-inch floppy disk?",
    "Two dogs (a poodle and a terrier) play in the park!", '"Look," she said, "it\'s the cat\'s toy."',
    "A red circle; a blue square: and a green triangle...", "The U.S. flag flies over a 19th-century building.",
    "Kids' bikes -- parked outside the school.", "A woman's hand holds a $5 bill & a coin.",
    "It's 5 o'clock; the train isn't late.", "", "A {curly} [square] caption", "He said `hello' and ``goodbye''.",
    "Mr. Smith's dog can't swim, won't swim.", "A 50% discount on 2-for-1 pizzas!", "What's that? A bird? A plane?",
    "A cat\non two lines", "  spaces   around  ", "Café crème, très bon.", "They'll go; we'd stay; I'm here.",
    "A 'quoted' word and a dog's bone.", "Numbers: 1,000 people and 3.14 pies.",
]


@pytest.mark.skipif(shutil.which("java") is None, reason="compares with Stanford's Java PTBTokenizer")
def test_the_python_tokenizer_gives_the_jars_tokens_on_captions():
    from fedvlm.core import text_metrics

    java = text_metrics.ptb_tokenize(CORPUS)
    assert java[0] == "a man riding a double-decker bus" and java[1] == "is n't that a 3.5-inch floppy disk"
    assert java[2] == "two dogs -lrb- a poodle and a terrier -rrb- play in the park"  # -lrb- is not in PUNCTUATIONS
    assert java[9] == ""
    with mock.patch.object(text_metrics.shutil, "which", return_value=None):
        python = text_metrics.ptb_tokenize(CORPUS)
    assert python == java


def test_caption_scores_are_pycocoevalcaps_own_pipeline():
    """The same numbers as pycocoevalcap's PTBTokenizer and scorers called directly (its
    tokenizer needs Java; without it the Python stand-in, shown equal above)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from fedvlm.core.text_metrics import caption_scores

    predictions = [c for c in CORPUS[:9]]
    references = [[CORPUS[(i + 3) % 9], c.lower().replace(",", ""), "a caption about nothing."] for i, c in enumerate(predictions)]
    ours = caption_scores(predictions, references)
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap's own tokenizer needs Java")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert ours["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-12)
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert 0 < ours["bleu4"] < 1 and 0 < ours["cider"]
