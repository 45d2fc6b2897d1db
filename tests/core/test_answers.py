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


def test_spans_whole_first_line_and_first_clause():
    assert answer_span("red\nThe shape is red") == "red\nThe shape is red"  # official: all of it
    assert answer_span("red\nThe shape is red", "first_line") == "red"
    assert answer_span("  red, no blue\nmore", "first_line") == "red, no blue"
    assert answer_span("", "first_line") == ""
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
        ("1000", ["1000"], 1.0),
        ("1000", ["1,000"], 0.0),  # a reference is read as given unless annotators disagree
        ("red", ["red, white, and blue"], 0.0),
        ("two", ["2"], 1.0),
        ("red\nthe circle is red", ["red"], 0.0),  # the whole answer: "red the circle is red"
    ],
)
def test_single_reference_is_exact_match_of_the_processed_prediction(prediction, references, expected):
    assert vqa_accuracy(prediction, references) == expected


def test_the_friendlier_readings_are_options():
    assert vqa_accuracy("red\nthe circle is red", ["red"], span="first_line") == 1.0
    assert vqa_accuracy("1000", ["1,000"], references_mode="processed") == 1.0
    assert vqa_accuracy("yes\nno", ["yes"] * 10) == 0.0  # official: "yes no"
    assert vqa_accuracy("yes\nno", ["yes"] * 10, span="first_line") == 1.0


# vqaEval.py by hand: the prediction gets both steps; references, only when the annotators
# disagree, only punctuation. "two" -> "2" matches the two "2" annotators, not the two "two":
# each "2" annotator sees 1 match (1/3), each "two" and each other sees 2 (2/3):
# (2/3 + 2 * 2/3 + 6 * 2/3) / 10 = 0.6; with processed references all four match: 1.0.
# "a dog" -> "dog" matches 2 x "dog" but not "a dog": 0.6 (processed: 3 match, 0.9).
@pytest.mark.parametrize("prediction,references,official,processed", [
    ("two", ["2", "2", "two", "two"] + [f"x{i}" for i in range(6)], 0.6, 1.0),
    ("a dog", ["dog", "dog", "a dog"] + [f"x{i}" for i in range(7)], 0.6, 0.9),
    ("Light-blue!", ["light blue", "light-blue", "light-blue"] + ["red"] * 7, 0.9, 0.9),  # punctuation on both sides
    ("yes", ["Yes"] * 10, 0.0, 1.0),  # unanimous: the references are not processed at all
])
def test_references_as_vqa_eval_reads_them(prediction, references, official, processed):
    assert vqa_accuracy(prediction, references) == pytest.approx(official)
    assert vqa_accuracy(prediction, references, references_mode="processed") == pytest.approx(processed)


def test_the_period_rule_stops_after_32_as_the_script_does():
    from fedvlm.core.answers import process_punctuation

    assert process_punctuation("a." * 40) == "a" * 32 + "a." * 8


def test_first_clause_is_the_looser_option():
    assert vqa_accuracy("yes, no", ["yes"], span="first_clause") == 1.0
    assert vqa_accuracy("yes, no", ["yes"]) == 0.0
    assert vqa_accuracy("yes, no", ["yes"], span="first_line") == 0.0


# Official: mean over the 10 leave-one-out subsets of min(#matching others / 3, 1).
# m matching of 10: the m matching annotators see m-1 matches, the 10-m others see m.
# m=1: (1*0 + 9*(1/3)) / 10 = 0.3; m=2: (2*(1/3) + 8*(2/3)) / 10 = 0.6;
# m=3: (3*(2/3) + 7*1) / 10 = 0.9; m=4: (4*1 + 6*1) / 10 = 1.0.
@pytest.mark.parametrize("agree,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_accuracy_over_ten_annotators(agree, expected):
    refs = ["yes"] * agree + ["no"] * (10 - agree)
    assert vqa_accuracy("Yes", refs) == pytest.approx(expected)


def test_processed_references_are_processed_like_the_prediction():
    # Three annotators wrote the same answer three ways; all match "2 dogs" when processed,
    # only "2 dogs." (punctuation) as vqaEval.py reads them: 0.3
    refs = ["Two dogs", "2 dogs.", "two  dogs"] + ["cat"] * 7
    assert vqa_accuracy("2 dogs", refs, references_mode="processed") == pytest.approx(0.9)
    assert vqa_accuracy("2 dogs", refs) == pytest.approx(0.3)


class _VqaEval:
    """vqaEval.py's accuracy loop for one question, rewritten here from the official script
    (GT-Vision-Lab/VQA, as LAVIS ships it) to check fedvlm's against: the prediction's
    whitespace, punctuation and digit/article steps; references punctuated only when they
    disagree; leave-one-out over answer records (each its own dict, as the script's have
    answer ids)."""

    import re as _re

    contractions = {"dont": "don't", "isnt": "isn't", "whats": "what's", "cant": "can't"}
    manual_map = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                  "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    articles = ["a", "an", "the"]
    period_strip = _re.compile(r"(?!<=\d)(\.)(?!\d)")
    comma_strip = _re.compile(r"(\d)(,)(\d)")
    punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]

    def punctuation(self, text):
        out = text
        for p in self.punct:
            if (p + " " in text or " " + p in text) or (self._re.search(self.comma_strip, text) is not None):
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return self.period_strip.sub("", out, self._re.UNICODE)

    def digit_article(self, text):
        words = [self.manual_map.setdefault(w, w) for w in text.lower().split()]
        words = [w for w in words if w not in self.articles]
        return " ".join(self.contractions.get(w, w) for w in words)

    def accuracy(self, answer, references):
        res = answer.replace("\n", " ").replace("\t", " ").strip()
        res = self.digit_article(self.punctuation(res))
        gts = [{"answer": r, "answer_id": i} for i, r in enumerate(references)]
        if len(set(references)) > 1:
            for g in gts:
                g["answer"] = self.punctuation(g["answer"])
        accs = []
        for g in gts:
            others = [o for o in gts if o != g]
            accs.append(min(1, len([o for o in others if o["answer"] == res]) / 3))
        return sum(accs) / len(accs)


TEN_ANNOTATOR_CASES = [
    ("two", ["2", "2", "two", "two", "3", "3", "3", "4", "4", "5"]),
    ("a dog", ["dog", "dog", "a dog", "cat", "cat", "cat", "cat", "cat", "cat", "cat"]),
    ("Yes", ["yes"] * 10),
    ("Yes", ["Yes"] * 10),
    ("yes\nno", ["yes"] * 7 + ["no"] * 3),
    ("no", ["yes"] * 7 + ["no"] * 3),
    ("light-blue", ["light blue", "light-blue", "blue", "blue", "blue", "sky blue", "light blue", "teal", "cyan", "blue"]),
    ("1,000", ["1000", "1,000", "1000", "one thousand", "1000", "999", "1000", "1000", "1001", "many"]),
    ("The red one.", ["red", "red", "red one", "the red one", "red", "maroon", "red", "red", "crimson", "red"]),
    ("dont know", ["don't know", "dont know", "unknown", "unknown", "no idea", "don't know", "?", "unsure", "unknown", "no"]),
    ("3.5", ["3.5", "3.5", "3,5", "three and a half", "3.5", "4", "3", "3.5", "3.50", "3.5"]),
    ("left!", ["left", "left", "left", "right", "left", "left.", "Left", "left", "left side", "left"]),
    ("Ten", ["10", "10", "ten", "10", "ten", "10", "10", "10", "11", "10"]),
    ("an apple", ["apple", "apples", "apple", "an apple", "fruit", "apple", "apple", "red apple", "apple", "apple"]),
]


@pytest.mark.parametrize("prediction,references", TEN_ANNOTATOR_CASES)
def test_ten_annotator_accuracy_equals_vqa_evals(prediction, references):
    assert vqa_accuracy(prediction, references) == pytest.approx(_VqaEval().accuracy(prediction, references))


def test_random_ten_annotator_cases_equal_vqa_evals():
    import random

    rng = random.Random(0)
    pool = ["yes", "Yes", "no", "2", "two", "a dog", "dog", "dog.", "red", "light-blue", "light blue", "1,000", "1000"]
    for _ in range(300):
        refs = [rng.choice(pool) for _ in range(10)]
        pred = rng.choice(pool) + rng.choice(["", "\n", " ", "!", ".\nmore"])
        assert vqa_accuracy(pred, refs) == pytest.approx(_VqaEval().accuracy(pred, refs)), (pred, refs)
