"""Answer normalization and VQA accuracy (pure Python).

Follows the VQA evaluation conventions (https://visualqa.org/evaluation.html): lower-case,
strip punctuation and articles, map number words to digits; then a prediction matches a
reference when the normalized strings are equal. Generated answers often run on ("Yes, it
is." or "red\\nThe shape..."), so only the first clause of a prediction is scored.
"""

import re
from collections.abc import Sequence

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_CLAUSE_END = re.compile(r"[\n.!?,;:]")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """Canonical form of an answer for matching.

    >>> normalize_answer("  The Circle.")
    'circle'
    >>> normalize_answer("Yes, it is red")
    'yes'
    """
    text = text.strip().lower()
    # A decimal point is not a clause end: "1.5" stays whole.
    text = re.sub(r"(\d)\.(\d)", r"\1<dot>\2", text)
    text = _CLAUSE_END.split(text, maxsplit=1)[0]
    text = text.replace("<dot>", ".")
    text = _PUNCT.sub(lambda m: "." if m.group() == "." else " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """Score one prediction: exact match with one reference, else VQA soft accuracy
    ``min(#references equal to the prediction / 3, 1)`` over several annotators."""
    pred = normalize_answer(prediction)
    refs = [normalize_answer(r) for r in references]
    matches = sum(r == pred for r in refs)
    if len(refs) == 1:
        return float(matches)
    return min(matches / 3.0, 1.0)
