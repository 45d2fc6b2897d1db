"""Answer processing and VQA accuracy against the official evaluation's rules, by hand."""

import pytest

from fedvlm.core.answers import answer_span, process_answer, vqa_accuracy


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
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("1.5", "1.5"),
        ("light-blue", "light blue"),  # no space beside '-': it becomes one
        ("red - blue", "red blue"),  # a space beside '-': it is deleted
        ("1,000", "1000"),  # a comma between digits: punctuation deleted, not spaced
        ("red, white, and blue", "red white and blue"),
        ("dog's", "dog's"),  # apostrophes stay
        ("no: yes", "no: yes"),  # colons stay
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("(left)", "left"),
        ("", ""),
    ],
)
def test_process_answer(raw, expected):
    assert process_answer(raw) == expected


def test_article_inside_word_is_kept():
    assert process_answer("theater") == "theater"
    assert process_answer("banana") == "banana"


def test_first_line_is_scored_whole():
    assert answer_span("red\nThe shape is red") == "red"
    assert answer_span("  red, no blue\nmore") == "red, no blue"
    assert answer_span("") == ""
    assert answer_span("yes, it is", "first_clause") == "yes"
    with pytest.raises(ValueError, match="answer span"):
        answer_span("x", "first_word")


@pytest.mark.parametrize(
    "prediction,references,expected",
    [
        ("The Circle.", ["circle"], 1.0),
        ("circles", ["circle"], 0.0),
        ("red, no blue", ["red"], 0.0),
        ("yes, no", ["yes"], 0.0),
        ("no: yes", ["no"], 0.0),
        ("1", ["1,000"], 0.0),
        ("1000", ["1,000"], 1.0),
        ("red", ["red, white, and blue"], 0.0),
        ("two", ["2"], 1.0),
        ("red\nthe circle is red", ["red"], 1.0),
    ],
)
def test_single_reference_is_exact_match_of_processed_strings(prediction, references, expected):
    assert vqa_accuracy(prediction, references) == expected


def test_first_clause_is_the_looser_option():
    assert vqa_accuracy("yes, no", ["yes"], span="first_clause") == 1.0
    assert vqa_accuracy("yes, no", ["yes"]) == 0.0


# Official: mean over the 10 leave-one-out subsets of min(#matching others / 3, 1).
# m matching of 10: the m matching annotators see m-1 matches, the 10-m others see m.
# m=1: (1*0 + 9*(1/3)) / 10 = 0.3; m=2: (2*(1/3) + 8*(2/3)) / 10 = 0.6;
# m=3: (3*(2/3) + 7*1) / 10 = 0.9; m=4: (4*1 + 6*1) / 10 = 1.0.
@pytest.mark.parametrize("agree,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_accuracy_over_ten_annotators(agree, expected):
    refs = ["yes"] * agree + ["no"] * (10 - agree)
    assert vqa_accuracy("Yes", refs) == pytest.approx(expected)


def test_references_are_processed_like_the_prediction():
    # Three annotators wrote the same answer three ways; all match "2 dogs".
    refs = ["Two dogs", "2 dogs.", "two  dogs"] + ["cat"] * 7
    assert vqa_accuracy("2 dogs", refs) == pytest.approx(0.9)
