"""Conversations with images load as one schema: Hugging Face ``messages`` with image parts
(content text in one turn, a parts list in another), LLaVA ``conversations`` with
``<image>`` marks, and the_cauldron's ``images`` + ``texts``; a row whose marks do not
match its images, or whose image file is missing, is one line naming the row."""

import json

import datasets
import pytest
from PIL import Image

from fedvlm.data.vqa import load_vqa
from fedvlm.errors import DataError


def _images(tmp_path, *colours):
    paths = []
    for i, colour in enumerate(colours):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (8, 8), colour).save(path)
        paths.append(path.name)
    return paths


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_messages_with_image_parts_keep_each_image_in_its_turn(tmp_path):
    a, b = _images(tmp_path, "red", "blue")
    row = {
        "images": [a, b],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
            {"role": "assistant", "content": "red"},
            {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "blue"}]},
        ],
    }
    ds = load_vqa(_jsonl(tmp_path / "train.jsonl", [row]), "train")
    assert ds.column_names == ["images", "messages", "question", "answer", "question_type"]
    assert [t["content"] for t in ds[0]["messages"]] == ["<image>\nWhat colour?", "red", "And this one?\n<image>", "blue"]
    assert ds[0]["question"] == "And this one?" and ds[0]["answer"] == "blue"
    assert [im.getpixel((0, 0)) for im in ds[0]["images"]] == [(255, 0, 0), (0, 0, 255)]


def test_llava_conversations_with_one_image_column(tmp_path):
    (a,) = _images(tmp_path, "green")
    row = {"image": a, "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "a square"},
        {"from": "human", "value": "Its colour?"}, {"from": "gpt", "value": "green"},
    ]}
    ds = load_vqa(_jsonl(tmp_path / "train.jsonl", [row]), "train")
    assert [t["role"] for t in ds[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert ds[0]["messages"][0]["content"] == "<image>\nWhat is shown?"
    assert len(ds[0]["images"]) == 1 and ds[0]["images"][0].getpixel((1, 1)) == (0, 128, 0)


def test_the_cauldron_rows_put_their_images_before_the_first_question(tmp_path):
    """The HuggingFaceM4/the_cauldron layout: an Image list and user/assistant exchanges."""
    images = [[Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "white")], [Image.new("RGB", (8, 8), "black")]]
    texts = [
        [{"user": "Which is red?", "assistant": "The first.", "source": "fixture"},
         {"user": "And white?", "assistant": "The second.", "source": "fixture"}],
        [{"user": "Colour?", "assistant": "Black.", "source": "fixture"}],
    ]
    features = datasets.Features({
        "images": datasets.Sequence(datasets.Image()),
        "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string"), "source": datasets.Value("string")}],
    })
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"images": images, "texts": texts}, features=features).to_parquet(str(path))
    ds = load_vqa(str(path), "train")
    assert ds[0]["messages"][0]["content"] == "<image><image>\nWhich is red?"
    assert [t["content"] for t in ds[0]["messages"][1:]] == ["The first.", "And white?", "The second."]
    assert ds["question"] == ["And white?", "Colour?"] and ds["answer"] == ["The second.", "Black."]
    assert [len(r) for r in ds["images"]] == [2, 1] and ds[1]["images"][0].getpixel((0, 0)) == (0, 0, 0)


def test_a_row_whose_marks_do_not_match_its_images_is_named(tmp_path):
    (a,) = _images(tmp_path, "red")
    row = {"images": [a], "messages": [
        {"role": "user", "content": "<image> and <image>?"}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(DataError, match=r"row 0: the text marks 2 images \(<image>\) but the row has 1"):
        load_vqa(_jsonl(tmp_path / "train.jsonl", [row]), "train")


def test_a_missing_image_file_is_named_with_its_row(tmp_path):
    rows = [{"images": ["nowhere.png"], "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}]
    with pytest.raises(DataError, match=r"image file not found: .*nowhere.png \(row 0"):
        load_vqa(_jsonl(tmp_path / "train.jsonl", rows), "train")


def _cauldron_subset(name: str, rows: int) -> datasets.Dataset:
    """A the_cauldron subset as the Hub serves it: an Image list and user/assistant turns."""
    features = datasets.Features({
        "images": datasets.Sequence(datasets.Image()),
        "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string"), "source": datasets.Value("string")}],
    })
    return datasets.Dataset.from_dict({
        "images": [[Image.new("RGB", (8, 8), (i, 0, 0))] for i in range(rows)],
        "texts": [[{"user": f"{name} question {i}?", "assistant": f"{name} {i}", "source": name}] for i in range(rows)],
    }, features=features)


def test_the_cauldron_subsets_load_one_per_client(monkeypatch):
    """data.subsets: each Hub config loads in turn (here the Hub is a fixture), tagged with
    its name, so the natural partition gives each client one subset."""
    from fedvlm.data import vqa
    from fedvlm.data.partition import partition_indices

    asked = []

    def hub(source, split, name=None):
        asked.append((source, split, name))
        return _cauldron_subset(name, {"ai2d": 5, "chartqa": 3, "vqav2": 4}[name])

    monkeypatch.setattr(vqa, "_load_hub", hub)
    ds = load_vqa("HuggingFaceM4/the_cauldron", "train[:90%]", subsets=["ai2d", "chartqa", "vqav2"])
    assert asked == [("HuggingFaceM4/the_cauldron", "train[:90%]", n) for n in ("ai2d", "chartqa", "vqav2")]
    assert ds["question_type"] == ["ai2d"] * 5 + ["chartqa"] * 3 + ["vqav2"] * 4
    assert ds[5]["messages"] == [{"role": "user", "content": "<image>\nchartqa question 0?"},
                                 {"role": "assistant", "content": "chartqa 0"}]
    clients = partition_indices(ds, "natural", 3, seed=0)
    assert [{ds["question_type"][i] for i in c} for c in clients] == [{"ai2d"}, {"chartqa"}, {"vqav2"}]
    assert [len(c) for c in clients] == [5, 3, 4]


def test_subsets_of_a_local_source_are_refused(tmp_path):
    from fedvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="data.subsets names configs of a Hub dataset"):
        load_vqa("easyvqa", "train", subsets=["ai2d"])
