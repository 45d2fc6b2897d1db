"""The offline multi-task dataset: seven tasks of 300/60 rows, answers that match what the
images show (rendered counts and captions checked against the pixels, digits against
scikit-learn's labels), tweets without images, the same rows every time, one task per
client under the natural partition."""

import numpy as np
import pytest

from fedvlm.data.multitask import (
    COLORS,
    TASKS,
    TEST_PER_TASK,
    TRAIN_PER_TASK,
    render_caption,
    render_count,
)
from fedvlm.data.partition import partition_indices
from fedvlm.data.vqa import load_vqa


@pytest.fixture(scope="module")
def train():
    return load_vqa("multitask", "train")


def test_seven_tasks_one_per_client(train):
    test = load_vqa("multitask", "test")
    assert sorted(set(train["question_type"])) == list(TASKS)
    for split, size in ((train, TRAIN_PER_TASK), (test, TEST_PER_TASK)):
        assert all(split["question_type"].count(t) == size for t in TASKS)
    clients = partition_indices(train, "natural", len(TASKS), seed=0)
    assert [{train["question_type"][i] for i in c} for c in clients] == [{t} for t in TASKS]


def test_tweets_have_no_image_and_every_other_task_one(train):
    for row in train.select(range(0, len(train), 97)):
        assert len(row["images"]) == (0 if row["question_type"] == "sentiment" else 1)
        assert row["messages"][0]["content"].startswith("<image>") == bool(row["images"])
        assert row["messages"][1]["content"] == row["answer"]


def _blobs(image) -> list[tuple[int, int, int]]:
    """The colour of each 2x2-grid cell that holds a shape, in reading order."""
    pixels = np.asarray(image)
    found = []
    for cell in range(4):
        y, x = (cell // 2) * 32, (cell % 2) * 32
        block = pixels[y:y + 32, x:x + 32].reshape(-1, 3)
        coloured = block[(block != 255).any(axis=1)]
        if len(coloured):
            found.append(tuple(int(v) for v in np.median(coloured, axis=0)))
    return found


def test_rendered_answers_match_the_pixels():
    rng = np.random.default_rng(7)
    for _ in range(20):
        image, answer = render_count(rng)
        assert len(_blobs(image)) == int(answer)
        image, caption = render_caption(rng)
        colours = [COLORS[part.split()[1]] for part in caption.split(" and ")]
        assert _blobs(image) == colours


def test_digits_keep_scikit_learns_labels_and_the_data_is_fixed(train):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = [i for i, t in enumerate(train["question_type"]) if t == "digit"][:5]
    for i in rows:
        image = np.asarray(train[i]["images"][0].convert("L").resize((8, 8), 0))  # nearest
        # the 8x8 scan, scaled to 0..255: find it among scikit-learn's and compare labels
        match = np.flatnonzero(np.abs(digits.images * (255 / 16) - image).max(axis=(1, 2)) < 1.5)
        assert len(match) >= 1 and str(int(digits.target[match[0]])) == train[i]["answer"]
    again = load_vqa("multitask", "train")
    assert again["answer"] == train["answer"] and again["question"] == train["question"]
