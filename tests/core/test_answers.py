import pytest

from fedvlm.core.answers import normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Red", "red"),
        ("  YES  ", "yes"),
        ("yes.", "yes"),
        ("No!", "no"),
        ("The circle", "circle"),
        ("a rectangle", "rectangle"),
        ("an apple", "apple"),
        ("Yes, it is red", "yes"),
        ("red\nThe shape is red", "red"),
        ("triangle. It is", "triangle"),
        ("two", "2"),
        ("1.5", "1.5"),
        ("light-blue", "light blue"),
        ("dog's", "dog s"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_article_inside_word_is_kept():
    assert normalize_answer("theater") == "theater"
    assert normalize_answer("banana") == "banana"


def test_exact_match_single_reference():
    assert vqa_accuracy("The Circle.", ["circle"]) == 1.0
    assert vqa_accuracy("circles", ["circle"]) == 0.0


@pytest.mark.parametrize("agree,expected", [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (5, 1.0)])
def test_soft_accuracy_over_annotators(agree, expected):
    refs = ["yes"] * agree + ["no"] * (10 - agree)
    assert vqa_accuracy("Yes", refs) == pytest.approx(expected)
