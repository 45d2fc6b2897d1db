"""Text loader: CrowdFlower, GLUE-format files and directories, instruction JSONL, errors."""

import json
from collections import Counter

import datasets
import pyarrow as pa
import pytest

from fedvlm.data import text
from fedvlm.data.text import load_text
from fedvlm.errors import ConfigError, DataError

SST2_TRAIN = "sentence\tlabel\nit 's a charming journey \t1\nunpleasant and dull\t0\n"
SST2_DEV = 'sentence\tlabel\na "quoted" gem\t1\n'
RTE_TRAIN = (
    "index\tsentence1\tsentence2\tlabel\n"
    "0\tA cat sat.\tAn animal sat.\tentailment\n"
    "1\tIt rained.\tIt was sunny.\tnot_entailment\n"
    "2\tBob ran.\tBob moved.\tentailment\n"
)
RTE_DEV = "index\tsentence1\tsentence2\tlabel\n0\tNo one came.\tSomeone came.\tnot_entailment\n"
RTE_TEST = "index\tsentence1\tsentence2\n0\tA dog barked.\tA dog made a sound.\n"
INSTRUCTIONS = [
    {"instruction": "Name a colour.", "output": "Red.", "category": "open_qa", "id": 1},
    {"instruction": "Add 2 and 3.", "output": 5, "category": "math", "id": 2},
]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Parquet reads go through the datasets cache: keep it inside tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="module")
def crowdflower():
    """Both splits, plus their columns as python lists (iterating a `Column` is slow)."""
    splits = {split: load_text("crowdflower", split) for split in ("train", "test")}
    return {name: (dataset, dataset.to_dict()) for name, dataset in splits.items()}


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _one_line_error(error_type, match, *args, **kwargs):
    with pytest.raises(error_type, match=match) as info:
        load_text(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- CrowdFlower ---------------------------------------------------------------------


def test_crowdflower_sizes_labels_and_schema(crowdflower):
    (train, train_rows), (test, test_rows) = crowdflower["train"], crowdflower["test"]
    assert (train.num_rows, test.num_rows) == (33439, 3715)
    assert train.column_names == ["text", "answer", "label", "question_type"]
    for dataset, rows in ((train, train_rows), (test, test_rows)):
        names = dataset.features["label"].names
        assert names == ["negative", "neutral", "positive"]
        assert set(rows["answer"]) == set(names)
        assert [names[i] for i in rows["label"]] == rows["answer"]
        assert set(rows["question_type"]) == {"all"}
    # stratified: every class gives 10% (rounded) of its tweets to test
    totals = Counter(train_rows["answer"]) + Counter(test_rows["answer"])
    assert Counter(test_rows["answer"]) == {k: round(0.1 * n) for k, n in totals.items()}
    assert dict(totals) == {"negative": 15952, "neutral": 14412, "positive": 6790}


def test_crowdflower_splits_are_disjoint_clean_and_deterministic(crowdflower):
    texts = crowdflower["train"][1]["text"] + crowdflower["test"][1]["text"]
    keys = [t.casefold() for t in texts]
    assert len(set(keys)) == len(keys)  # deduplicated, so no tweet is in both splits
    assert all(t and t == " ".join(t.split()) for t in texts)  # no \r, no double spaces
    again = load_text("crowdflower", "test").to_dict()
    assert again == crowdflower["test"][1]


def test_crowdflower_unknown_split():
    _one_line_error(
        DataError,
        r"unknown split 'validation' for crowdflower.*train, test",
        "crowdflower",
        "validation",
    )


# --- GLUE-format files ---------------------------------------------------------------


def test_sst2_style_directory_with_int_labels(tmp_path):
    _write(tmp_path / "sst2" / "train.tsv", SST2_TRAIN)
    _write(tmp_path / "sst2" / "dev.tsv", SST2_DEV)

    train = load_text(str(tmp_path / "sst2"), "train")
    dev = load_text(str(tmp_path / "sst2"), "validation")  # dev.tsv answers to validation

    assert train.column_names == ["text", "answer", "label", "question_type"]
    assert train["text"] == ["it 's a charming journey ", "unpleasant and dull"]
    assert train["label"] == [1, 0] and train["answer"] == ["1", "0"]
    assert train.features["label"].names == ["0", "1"]
    assert dev["text"] == ['a "quoted" gem']  # GLUE TSV is unquoted
    assert dev.features["label"].names == ["0", "1"] and dev["label"] == [1]


def test_rte_style_pairs_with_string_labels_share_names_across_splits(tmp_path):
    folder = tmp_path / "rte"
    _write(folder / "train.tsv", RTE_TRAIN)
    _write(folder / "dev.tsv", RTE_DEV)
    _write(folder / "test.tsv", RTE_TEST)

    train = load_text(str(folder), "train")
    dev = load_text(str(folder), "dev")

    assert train.column_names == ["text", "text_pair", "answer", "label", "question_type"]
    assert train["text_pair"] == ["An animal sat.", "It was sunny.", "Bob moved."]
    assert train["answer"] == ["entailment", "not_entailment", "entailment"]
    assert train["label"] == [0, 1, 0]
    # dev has only one class, but its indices agree with train's
    assert dev.features["label"].names == ["entailment", "not_entailment"]
    assert dev["label"] == [1]
    _one_line_error(DataError, r"no label or answer column in .*test\.tsv", str(folder), "test")


def test_csv_file_with_column_mapping_and_question_type(tmp_path):
    path = _write(
        tmp_path / "tweets.csv",
        'tweet,sentiment,topic\n"great, really",pos,a\nmeh,neg,b\nfine,pos,a\n',
    )
    dataset = load_text(
        str(path),
        "train",
        columns={"text": "tweet", "label": "sentiment", "question_type": "topic"},
    )
    assert dataset["text"] == ["great, really", "meh", "fine"]
    assert dataset.features["label"].names == ["neg", "pos"]
    assert dataset["label"] == [1, 0, 1]
    assert dataset["question_type"] == ["a", "b", "a"]


def test_parquet_keeps_classlabel_names(tmp_path):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [1, 1]}, features).to_parquet(path)

    dataset = load_text(str(path), "train")

    assert dataset.features["label"].names == ["neg", "pos"]
    assert dataset["answer"] == ["pos", "pos"]


# --- instruction data ----------------------------------------------------------------


def test_instruction_jsonl_with_mapping(tmp_path):
    path = _write(tmp_path / "alpaca.jsonl", "".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))

    dataset = load_text(
        str(path),
        "train",
        columns={"text": "instruction", "answer": "output", "question_type": "category"},
    )

    # alpaca rows (instruction/output) load as turns, whatever text/answer were mapped to
    assert dataset.column_names == ["messages", "text", "answer", "question_type"]  # no label
    assert dataset["text"] == ["Name a colour.", "Add 2 and 3."]
    assert dataset["answer"] == ["Red.", "5"]
    assert dataset["question_type"] == ["open_qa", "math"]


# --- errors --------------------------------------------------------------------------


def test_missing_file_and_split(tmp_path):
    _one_line_error(
        DataError, r"data file not found: .*nope\.tsv", str(tmp_path / "nope.tsv"), "train"
    )
    _write(tmp_path / "d" / "train.tsv", SST2_TRAIN)
    _one_line_error(
        DataError, r"unknown split 'test' in .*available splits: train", str(tmp_path / "d"), "test"
    )


def test_missing_columns(tmp_path):
    path = _write(tmp_path / "train.tsv", SST2_TRAIN)
    message = _one_line_error(
        DataError,
        r"column 'tweet' \(for 'text'\) not found in .*train\.tsv",
        str(path),
        "train",
        columns={"text": "tweet"},
    )
    assert "available columns: sentence, label" in message
    other = _write(tmp_path / "x.tsv", "body\tlabel\nhi\t1\n")
    _one_line_error(
        DataError,
        r"no text column in .*x\.tsv.*available columns: body, label",
        str(other),
        "train",
    )


def test_empty_split_and_malformed_rows(tmp_path):
    empty = _write(tmp_path / "empty.tsv", "sentence\tlabel\n")
    _one_line_error(DataError, r"empty\.tsv has no rows", str(empty), "train")
    ragged = _write(tmp_path / "ragged.tsv", "sentence\tlabel\nok\t1\nbad row\n")
    _one_line_error(DataError, r"ragged\.tsv line 3: 1 fields, expected 2", str(ragged), "train")


def test_unknown_and_bad_labels(tmp_path):
    hidden = _write(tmp_path / "test.jsonl", '{"text": "a", "label": -1}\n')
    # a lone -1 is no valid class index: names are 0..max, and max < 0
    _one_line_error(DataError, r"unknown label '-1' in row 0 .*GLUE test", str(hidden), "x")
    scores = _write(tmp_path / "stsb.jsonl", '{"text": "a", "label": 3.8}\n')
    _one_line_error(DataError, r"non-integer numbers.*regression", str(scores), "x")
    with pytest.raises(DataError, match=r"unknown label 5 in row 0 .*expected one of 0\.\.0 \(a\)"):
        text.to_canonical_text(_classlabel_dataset([5]), None, "fixture")


def _classlabel_dataset(labels):
    """A ClassLabel column holding any ints (`from_dict` would refuse out-of-range ones)."""
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a"])}
    )
    table = pa.table({"text": ["x"] * len(labels), "label": pa.array(labels, pa.int64())})
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def test_bad_column_mappings(tmp_path):
    path = _write(tmp_path / "train.tsv", SST2_TRAIN)
    _one_line_error(ConfigError, r"unknown key 'image'", str(path), "train", columns={"image": "x"})
    _one_line_error(
        ConfigError,
        r"both 'label' .* and 'answer'",
        str(path),
        "train",
        columns={"label": "label", "answer": "sentence"},
    )


# --- GLUE from the Hub ---------------------------------------------------------------


def test_glue_offline_is_a_one_line_data_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)\nmore"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    _one_line_error(
        DataError, r"could not load 'glue/sst2' .*OfflineModeIsEnabled", "glue/sst2", "train"
    )
    _one_line_error(DataError, r"'glue/stsb' is a regression task", "glue/stsb", "train")
    _one_line_error(DataError, r"unknown GLUE task 'sst'", "glue/sst", "train")


def test_glue_task_columns_and_hidden_test_labels(monkeypatch):
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
            "idx": datasets.Value("int32"),
        }
    )
    calls = []

    def fake_glue(path, name, split):
        calls.append((path, name, split))
        label = -1 if split == "test" else 1
        rows = {"sentence1": ["a"], "sentence2": ["b"], "label": [label], "idx": [0]}
        return datasets.Dataset.from_dict(rows, features)

    monkeypatch.setattr(datasets, "load_dataset", fake_glue)
    dataset = load_text("glue/rte", "validation")

    assert calls == [("nyu-mll/glue", "rte", "validation")]
    assert (dataset["text"], dataset["text_pair"], dataset["answer"]) == (
        ["a"],
        ["b"],
        ["not_entailment"],
    )
    assert dataset.features["label"].names == ["entailment", "not_entailment"]
    _one_line_error(DataError, r"unknown label -1 .*GLUE test splits hide", "glue/rte", "test")
