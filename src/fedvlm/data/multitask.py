"""An offline multi-task VLM dataset, one task per question type (``data.source=multitask``).

The shape of FedALT-VLM's and FedVLMBench's multi-task setting (every client holds another
task) from data that ships with registry packages or is rendered here:

- ``color``, ``shape``, ``yes/no``: easy-VQA's three question families (`fedvlm.data.easyvqa`);
- ``digit``: UCI handwritten digits (scikit-learn's bundled ``load_digits``, 8x8 scans
  upscaled to 64x64), "what digit is this?";
- ``count``: 1 to 4 identical shapes rendered here, "how many shapes are in the image?";
- ``caption``: one or two shapes rendered here, "describe the image." -> "a red circle and
  a blue square" (scored by CIDEr-D, BLEU-4 and ROUGE-L: ``eval.caption_types``);
- ``sentiment``: CrowdFlower tweets (`fedvlm.data.crowdflower`), text only, no image.

Rows are single-turn conversations in the schema of `fedvlm.data.image_chat` (``images``
is empty for the tweets), ``question_type`` the task, so ``partition.method=natural``
gives one task per client (clients in the sorted order of `TASKS`). Each task has
`TRAIN_PER_TASK` training and `TEST_PER_TASK` test rows drawn with a fixed seed, the test
rows from each source's own test split (digits and rendered images: disjoint draws).
"""

from __future__ import annotations

import io

import datasets
import numpy as np

from fedvlm.data.image_chat import FEATURES, IMAGE
from fedvlm.errors import DataError

TASKS = ("caption", "color", "count", "digit", "sentiment", "shape", "yes/no")
TRAIN_PER_TASK, TEST_PER_TASK = 300, 60
SEED = 0
SIDE = 64
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
NUMBERS = {1: "1", 2: "2", 3: "3", 4: "4"}


def _png(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _draw(draw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _cells(count: int, rng) -> list[tuple[int, int, int, int]]:
    """``count`` distinct cells of a 2x2 grid, in reading order, each with a jittered box."""
    cells = sorted(rng.choice(4, size=count, replace=False))
    half, size = SIDE // 2, 20
    boxes = []
    for c in cells:
        x, y = (c % 2) * half + int(rng.integers(2, half - size - 1)), (c // 2) * half + int(rng.integers(2, half - size - 1))
        boxes.append((x, y, x + size, y + size))
    return boxes


def render_count(rng) -> tuple[object, str]:
    from PIL import Image, ImageDraw

    count = int(rng.integers(1, 5))
    shape, color = SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))]
    image = Image.new("RGB", (SIDE, SIDE), "white")
    draw = ImageDraw.Draw(image)
    for box in _cells(count, rng):
        _draw(draw, shape, box, COLORS[color])
    return image, NUMBERS[count]


def render_caption(rng) -> tuple[object, str]:
    from PIL import Image, ImageDraw

    count = int(rng.integers(1, 3))
    image = Image.new("RGB", (SIDE, SIDE), "white")
    draw = ImageDraw.Draw(image)
    parts = []
    for box in _cells(count, rng):
        shape, color = SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))]
        _draw(draw, shape, box, COLORS[color])
        parts.append(f"a {color} {shape}")
    return image, " and ".join(parts)


def _digits(split: str) -> list[tuple[object, str]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng([SEED, 1]).permutation(len(digits.target))
    rows = order[:TRAIN_PER_TASK] if split == "train" else order[TRAIN_PER_TASK:TRAIN_PER_TASK + TEST_PER_TASK]
    out = []
    for i in rows:
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((SIDE, SIDE), Image.NEAREST).convert("RGB")
        out.append((image, str(int(digits.target[i]))))
    return out


def _easyvqa(split: str) -> dict[str, list[tuple[dict, str, str]]]:
    from fedvlm.data.easyvqa import load_easyvqa

    ds = load_easyvqa(split).cast_column("image", datasets.Image(decode=False))
    size = TRAIN_PER_TASK if split == "train" else TEST_PER_TASK
    out = {}
    for kind in ("color", "shape", "yes/no"):
        rows = [i for i, t in enumerate(ds["question_type"]) if t == kind]
        pick = sorted(np.random.default_rng([SEED, 2, TASKS.index(kind)]).choice(rows, size=size, replace=False))
        picked = ds.select(pick)
        out[kind] = [(im, q, a) for im, q, a in zip(picked["image"], picked["question"], picked["answer"])]
    return out


def _tweets(split: str) -> list[tuple[str, str]]:
    from fedvlm.data.crowdflower import load_crowdflower

    ds = load_crowdflower(split)
    size = TRAIN_PER_TASK if split == "train" else TEST_PER_TASK
    pick = sorted(np.random.default_rng([SEED, 3]).choice(len(ds), size=size, replace=False))
    picked = ds.select(pick)
    return list(zip(picked["text"], picked["label"]))


def load_multitask(split: str) -> datasets.Dataset:
    """One split of the multi-task dataset (see the module doc)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} for multitask; available splits: train, test")
    rows: list[tuple[list, str, str, str]] = []  # (images, question, answer, task)
    for kind, items in _easyvqa(split).items():
        rows += [([im], q, a, kind) for im, q, a in items]
    rows += [([_png(im)], "what digit is this?", a, "digit") for im, a in _digits(split)]
    size = TRAIN_PER_TASK if split == "train" else TEST_PER_TASK
    for task, render, stream in (("count", render_count, 4), ("caption", render_caption, 5)):
        rng = np.random.default_rng([SEED, stream, 0 if split == "train" else 1])
        question = "how many shapes are in the image?" if task == "count" else "describe the image."
        rows += [([_png(im)], question, a, task) for im, a in (render(rng) for _ in range(size))]
    rows += [([], f"what is the sentiment of this tweet? {text}", label, "sentiment") for text, label in _tweets(split)]
    return datasets.Dataset.from_dict({
        "images": [r[0] for r in rows],
        "messages": [[{"role": "user", "content": (IMAGE + "\n" if r[0] else "") + r[1]},
                      {"role": "assistant", "content": r[2]}] for r in rows],
        "question": [r[1] for r in rows],
        "answer": [r[2] for r in rows],
        "question_type": [r[3] for r in rows],
    }, features=FEATURES)
