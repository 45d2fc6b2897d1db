"""easy-VQA loader: sizes, schema, question types, lazy images."""

from collections import Counter

import datasets
import easy_vqa
import pytest

from fedvlm.data.easyvqa import easyvqa_question_type, load_easyvqa
from fedvlm.data.vqa import load_vqa
from fedvlm.errors import DataError

COLORS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
SHAPES = {"circle", "rectangle", "triangle"}
EXPECTED_ANSWERS = {"color": COLORS, "shape": SHAPES, "yes/no": {"yes", "no"}}


@pytest.fixture(scope="module")
def train():
    return load_easyvqa("train")


@pytest.fixture(scope="module")
def test_split():
    return load_easyvqa("test")


def test_sizes(train, test_split):
    assert train.num_rows == 38_575
    assert test_split.num_rows == 9_673


def test_schema(train):
    assert train.column_names == ["image", "question", "answer", "question_type", "image_id"]
    assert isinstance(train.features["image"], datasets.Image)
    assert train.features["image_id"] == datasets.Value("int64")
    assert isinstance(train[0]["question"], str)


def test_answer_vocabulary_matches_package(train):
    assert set(train["answer"]) == set(easy_vqa.get_answers()) == COLORS | SHAPES | {"yes", "no"}


@pytest.mark.parametrize("split", ["train", "test"])
def test_question_types_consistent_with_answers(split, train, test_split):
    dataset = train if split == "train" else test_split
    table = dataset.select_columns(["question_type", "answer"]).to_dict()
    counts = Counter(table["question_type"])
    assert set(counts) == {"color", "shape", "yes/no"}
    assert all(count > 0 for count in counts.values())
    for qtype, answer in zip(table["question_type"], table["answer"]):
        assert answer in EXPECTED_ANSWERS[qtype], (qtype, answer)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("what color is the shape?", "color"),
        ("what is the color of the circle?", "color"),
        ("what is the blue shape?", "shape"),
        ("what shape does the image contain?", "shape"),
        ("is there a red shape?", "yes/no"),
        ("does the image not contain a triangle?", "yes/no"),
    ],
)
def test_question_type_rule(question, expected):
    assert easyvqa_question_type(question) == expected


def test_image_decodes_to_64x64_rgb(train, test_split):
    for dataset in (train, test_split):
        for row in (0, dataset.num_rows - 1):
            image = dataset[row]["image"]
            assert image.size == (64, 64)
            assert image.mode == "RGB"


def test_unknown_split():
    with pytest.raises(DataError, match="'validation'.*train, test"):
        load_easyvqa("validation")


def test_load_vqa_easyvqa_is_canonical():
    dataset = load_vqa("easyvqa", "test")
    assert dataset.column_names == ["image", "question", "answer", "question_type"]
    assert dataset.num_rows == 9_673
    assert dataset[0]["image"].size == (64, 64)
