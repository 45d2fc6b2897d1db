"""A node set up on its own (as a Flower ClientApp would) trains exactly like the
simulator's client of the same partition."""

import json

import numpy as np
import pytest

from fedvlm.client import RoundConfig, train
from fedvlm.config import load_config
from fedvlm.core.types import Instruction
from fedvlm.errors import ConfigError
from fedvlm.engine.client import node_of, round_config
from fedvlm.engine.federation import build_federation
from fedvlm.engine.node_setup import build_node
from fedvlm.engine.rundir import ClientStore
from tiny import TINY_RUN


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, [*TINY_RUN, "partition.method=dirichlet", "partition.label_column=question_type"])


def test_a_node_of_a_partition_trains_like_the_simulators_client(cfg, tmp_path):
    fed = build_federation(cfg)
    node = build_node(cfg, {"partition-id": 1, "num-partitions": 2, "state-dir": str(tmp_path / "node")})
    assert node.train_rows == fed.clients["1"].train and node.test_rows == fed.clients["1"].test
    assert node.initial_adapter.keys() == fed.initial_adapter.keys()
    assert all(np.array_equal(node.initial_adapter[k], fed.initial_adapter[k]) for k in fed.initial_adapter)

    config = round_config(cfg, Instruction({}, {"rounds_done": 0, "schedule_rounds": 2}), 1, "1")
    # what a Flower ConfigRecord would carry, and back
    config = RoundConfig.from_record(config.to_record())
    ours = train(fed.initial_adapter, {}, config, node)
    theirs = train(fed.initial_adapter, {}, config, node_of(fed, "1", ClientStore(tmp_path / "sim")))
    assert ours.num_examples == theirs.num_examples == len(fed.clients["1"].train)
    assert ours.metrics["loss"] == theirs.metrics["loss"]
    assert all(np.array_equal(ours.state[k], theirs.state[k]) for k in theirs.state)
    assert any(not np.array_equal(ours.state[k], fed.initial_adapter[k]) for k in ours.state)  # it trained


@pytest.mark.parametrize(
    "node_config,match",
    [
        ({"partition-id": 0, "num-partitions": 2}, "'state-dir' missing"),
        ({"state-dir": "s"}, "expected 'data-path'"),
        ({"partition-id": 0, "num-partitions": 3, "state-dir": "s"}, "'num-partitions' is 3, expected partition.num_clients"),
        ({"partition-id": 2, "num-partitions": 2, "state-dir": "s"}, "'partition-id' is 2, expected an integer in 0..1"),
        ({"data-path": "/nope.jsonl", "state-dir": "s"}, "'data-path' /nope.jsonl does not exist"),
    ],
)
def test_bad_node_config_is_one_line(cfg, node_config, match):
    with pytest.raises(ConfigError, match=match):
        build_node(cfg, node_config)


def test_a_round_config_with_a_missing_or_mistyped_field_is_refused(cfg):
    record = round_config(cfg, Instruction({}, {"rounds_done": 0, "schedule_rounds": 2}), 1, "0").to_record()
    with pytest.raises(ConfigError, match="field 'lr' missing"):
        RoundConfig.from_record({k: v for k, v in record.items() if k != "lr"})
    with pytest.raises(ConfigError, match="field 'rank' expected int, got '8'"):
        RoundConfig.from_record({**record, "rank": "8"})
    # booleans travel as booleans, and only booleans pass as one
    for flag in (False, True):
        assert RoundConfig.from_record({**record, "dp_sgd": flag}).dp_sgd is flag
    with pytest.raises(ConfigError, match="field 'dp_sgd' expected bool, got 1"):
        RoundConfig.from_record({**record, "dp_sgd": 1})


def test_a_node_trains_on_its_own_data_file(cfg, tmp_path, monkeypatch):
    """A hospital's node: its own VQA file (images beside it), every row its own, a local
    test split held out, its state in its own directory."""
    import datasets
    from PIL import Image

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    rows = []
    for i, (colour, answer) in enumerate([((255, 0, 0), "red"), ((0, 0, 255), "blue")] * 10):
        Image.new("RGB", (64, 64), colour).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "question": "what color is the shape?", "answer": answer})
    path = tmp_path / "ward7.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    node = build_node(cfg, {"data-path": str(path), "image-dir": str(tmp_path), "state-dir": str(tmp_path / "state")})
    assert node.client_id == "ward7"
    assert len(node.train_ds) == 20 and len(node.test_rows) == 2
    assert sorted(node.train_rows + node.test_rows) == list(range(20))
    config = round_config(cfg, Instruction({}, {"rounds_done": 0, "schedule_rounds": 2}), 1, "ward7")
    update = train(node.initial_adapter, {}, config, node)
    assert update.num_examples == 18 and update.client_id == "ward7"
    assert any(not np.array_equal(update.state[k], node.initial_adapter[k]) for k in update.state)


def test_an_evaluation_config_carries_its_caption_types_as_a_list(cfg):
    from fedvlm.client import EvalRoundConfig

    config = EvalRoundConfig(2, 8, 3, caption_types=["caption", "count, described"])
    record = config.to_record()
    assert record["caption_types"] == ["caption", "count, described"]  # a comma inside a name survives
    assert EvalRoundConfig.from_record(record) == config
    with pytest.raises(ConfigError, match="'caption_types' expected a list of str"):
        EvalRoundConfig.from_record({**record, "caption_types": "caption"})
