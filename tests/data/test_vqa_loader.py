"""Generic VQA loader: JSONL / parquet / directories / Hub names, column mapping, errors."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fedvlm.data import vqa
from fedvlm.data.vqa import load_vqa
from fedvlm.errors import ConfigError, DataError

COLUMNS = {"image": "img", "question": "q", "answer": "a"}
ROWS = [
    {"img": "images/0.png", "q": "what color?", "a": "red", "refs": ["red"], "kind": "color"},
    {"img": "images/1.png", "q": "is it green?", "a": "yes", "refs": ["yes"], "kind": "yes/no"},
    {"img": "images/2.png", "q": "how many?", "a": 2, "refs": [2, 3], "kind": "count"},
]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Parquet reads go through the datasets cache: keep it inside tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _write_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (12, 10), colour).save(folder / f"{i}.png")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def jsonl_file(tmp_path):
    _write_images(tmp_path / "images")
    path = tmp_path / "train.jsonl"
    _write_jsonl(path, ROWS)
    return path


@pytest.fixture
def parquet_file(tmp_path):
    """Parquet with images embedded as {"bytes", "path"} structs (the HF encoding)."""
    _write_images(tmp_path / "src_images")
    data = [(tmp_path / "src_images" / f"{i}.png").read_bytes() for i in range(3)]
    table = pa.table(
        {
            "picture": pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(data)]),
            "prompt": ["q0", "q1", "q2"],
            "target": ["a0", "a1", "a2"],
            "answers": [["a0"], ["a1", "x"], ["a2"]],
        }
    )
    path = tmp_path / "pq" / "test.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return path


def test_jsonl_with_column_mapping(jsonl_file):
    dataset = load_vqa(str(jsonl_file), "train", columns={**COLUMNS, "answers": "refs"})
    assert dataset.column_names == ["image", "question", "answer", "answers", "question_type"]
    assert dataset.num_rows == 3
    assert dataset["question"] == ["what color?", "is it green?", "how many?"]
    assert dataset["answer"] == ["red", "yes", "2"]  # numbers become text
    assert dataset[2]["answers"] == ["2", "3"]
    assert set(dataset["question_type"]) == {"all"}
    image = dataset[1]["image"]
    assert image.size == (12, 10) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == COLOURS[1]


def test_jsonl_question_type_mapping_and_no_answers(jsonl_file):
    dataset = load_vqa(str(jsonl_file), "train", columns={**COLUMNS, "question_type": "kind"})
    assert dataset.column_names == ["image", "question", "answer", "question_type"]
    assert dataset["question_type"] == ["color", "yes/no", "count"]


def test_directory_source_and_image_dir(tmp_path):
    _write_images(tmp_path / "elsewhere")
    rows = [{**row, "img": f"{i}.png"} for i, row in enumerate(ROWS)]
    (tmp_path / "data_dir").mkdir()
    _write_jsonl(tmp_path / "data_dir" / "validation.jsonl", rows)
    dataset = load_vqa(
        str(tmp_path / "data_dir"),
        "validation",
        columns=COLUMNS,
        image_dir=str(tmp_path / "elsewhere"),
    )
    assert dataset.num_rows == 3
    assert dataset[2]["image"].getpixel((0, 0)) == COLOURS[2]


def test_parquet_with_embedded_bytes(parquet_file):
    mapping = {"image": "picture", "question": "prompt", "answer": "target"}
    dataset = load_vqa(str(parquet_file), "test", columns=mapping)
    assert dataset.column_names == ["image", "question", "answer", "answers", "question_type"]
    assert dataset["answer"] == ["a0", "a1", "a2"]
    assert dataset[1]["answers"] == ["a1", "x"]
    assert dataset[0]["image"].getpixel((0, 0)) == COLOURS[0]
    # The same file found as <split>.parquet in its directory.
    again = load_vqa(str(parquet_file.parent), "test", columns=mapping)
    assert again["question"] == dataset["question"]


def test_parquet_shards_raw_bytes_and_relative_paths(tmp_path):
    _write_images(tmp_path / "images")
    raw = [(tmp_path / "images" / f"{i}.png").read_bytes() for i in range(3)]
    folder = tmp_path / "hub_snapshot" / "data"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table({"image": raw[:2], "question": ["q0", "q1"], "answer": ["a0", "a1"]}),
        folder / "train-00000-of-00002.parquet",
    )
    pq.write_table(
        pa.table({"image": raw[2:], "question": ["q2"], "answer": ["a2"]}),
        folder / "train-00001-of-00002.parquet",
    )
    dataset = load_vqa(str(tmp_path / "hub_snapshot"), "train")
    assert dataset["question"] == ["q0", "q1", "q2"]
    assert dataset[2]["image"].getpixel((0, 0)) == COLOURS[2]

    paths_file = tmp_path / "paths.parquet"
    pq.write_table(
        pa.table(
            {
                "image": ["images/0.png", "images/1.png"],
                "question": ["q", "r"],
                "answer": ["a", "b"],
            }
        ),
        paths_file,
    )
    dataset = load_vqa(str(paths_file), "train")
    assert dataset[1]["image"].getpixel((0, 0)) == COLOURS[1]


def test_hub_name_goes_to_load_dataset(monkeypatch, tmp_path):
    _write_images(tmp_path)
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        vqav2_answers = [
            {"answer": "a", "answer_confidence": "yes"},
            {"answer": "b", "answer_confidence": "no"},
        ]
        return datasets.Dataset.from_dict(
            {
                "image": [str(tmp_path / "0.png")],
                "question": ["q"],
                "multiple_choice_answer": ["a"],
                "answers": [vqav2_answers],
            }
        )

    monkeypatch.setattr(vqa.datasets, "load_dataset", fake_load_dataset)
    mapping = {"answer": "multiple_choice_answer"}
    dataset = load_vqa("someone/vqav2-like", "validation", columns=mapping)
    assert calls == [("someone/vqav2-like", "validation")]
    assert dataset[0]["answers"] == ["a", "b"]
    assert dataset[0]["answer"] == "a"


def test_hub_failure_is_one_line_data_error(monkeypatch):
    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)\nmore")

    monkeypatch.setattr(vqa.datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="'nobody/nothing'") as info:
        load_vqa("nobody/nothing", "train")
    assert "\n" not in str(info.value)


def test_missing_image_names_file_and_row(jsonl_file):
    missing = jsonl_file.parent / "images" / "1.png"
    missing.unlink()
    with pytest.raises(DataError) as info:
        load_vqa(str(jsonl_file), "train", columns=COLUMNS)
    message = str(info.value)
    assert str(missing) in message
    assert "row 1" in message
    assert "\n" not in message


def test_missing_column_names_it_and_lists_available(jsonl_file):
    with pytest.raises(DataError) as info:
        load_vqa(str(jsonl_file), "train", columns={**COLUMNS, "question": "prompt"})
    message = str(info.value)
    assert "'prompt'" in message
    assert "img, q, a, refs, kind" in message


def test_unmapped_required_column(jsonl_file):
    with pytest.raises(DataError, match="'image'.*available columns"):
        load_vqa(str(jsonl_file), "train")


def test_missing_data_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="not found") as info:
        load_vqa(str(path), "train")
    assert str(path) in str(info.value)


def test_unknown_split_in_directory(jsonl_file):
    with pytest.raises(DataError) as info:
        load_vqa(str(jsonl_file.parent), "test", columns=COLUMNS)
    message = str(info.value)
    assert "'test'" in message and "available splits: train" in message


def test_bad_mapping_key(jsonl_file):
    with pytest.raises(ConfigError, match="'picture'"):
        load_vqa(str(jsonl_file), "train", columns={"picture": "img"})


def test_invalid_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"q": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        load_vqa(str(path), "train")


def test_missing_answer_value(tmp_path):
    _write_images(tmp_path / "images")
    path = tmp_path / "train.jsonl"
    _write_jsonl(path, [ROWS[0], {**ROWS[1], "a": None}])
    with pytest.raises(DataError, match="'a'.*row 1"):
        load_vqa(str(path), "train", columns=COLUMNS)


def test_parquet_mixing_embedded_and_file_images(tmp_path):
    _write_images(tmp_path / "images")
    embedded = (tmp_path / "images" / "0.png").read_bytes()
    images = pa.array(
        [{"bytes": embedded, "path": "not/needed.png"}, {"bytes": None, "path": "images/1.png"}]
    )
    path = tmp_path / "mixed.parquet"
    table = pa.table({"image": images, "question": ["q0", "q1"], "answer": ["a", "b"]})
    pq.write_table(table, path)
    dataset = load_vqa(str(path), "train")
    assert [dataset[i]["image"].getpixel((0, 0)) for i in range(2)] == COLOURS[:2]

    (tmp_path / "images" / "1.png").unlink()
    with pytest.raises(DataError, match=r"images/1\.png \(row 1"):
        load_vqa(str(path), "train")
