"""Faults are dropped, not fatal: an update that fails validation, a client that errors or
answers past the deadline is left out of its round and named with its reason; the round
aggregates the rest; too few answers stop the run with one line that --resume continues."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedvlm.client.faults import ATTACKS, FAULTS
from fedvlm.config import load_config
from fedvlm.engine.faults import assigned
from fedvlm.errors import ConfigError
from fedvlm.seeds import Stream
from tiny import TINY_RUN

FINAL = "adapters/final/adapter_model.safetensors"
# 4 clients, 3 rounds: in each round three clients commit a different fault, one is honest
FAULTY = [
    "partition.num_clients=4", "federated.rounds=3", "federated.round_timeout=30",
    "federated.faults=[{kind: raise, clients: [0], rounds: [1]}, {kind: nan, clients: [1], rounds: [1]},"
    " {kind: inf, clients: [2], rounds: [1]}, {kind: shape, clients: [0], rounds: [2]},"
    " {kind: dtype, clients: [1], rounds: [2]}, {kind: missing_key, clients: [2], rounds: [2]},"
    " {kind: extra_key, clients: [0], rounds: [3]}, {kind: norm, clients: [1], rounds: [3]},"
    " {kind: hang, clients: [2], rounds: [3]}]",
]
REASONS = {
    (1, "0"): "injected fault 'raise'", (1, "1"): "contains NaN or Inf", (1, "2"): "contains NaN or Inf",
    (2, "0"): "has shape", (2, "1"): "float64", (2, "2"): "keys differ", (3, "0"): "keys differ",
    (3, "1"): "times the median", (3, "2"): "no reply before the round deadline",
}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_fault_kind_is_left_out_with_its_reason(tmp_path):
    from fedvlm.cli import main

    assert main(["run", *TINY_RUN, *FAULTY, f"run.output_dir={tmp_path}", "run.name=faulty"]) == 0
    rounds = _metrics(tmp_path / "faulty")[1:]
    assert len(rounds) == 3
    for record in rounds:
        n = record["round"]
        assert set(record["failed"]) == {"0", "1", "2"}, record["failed"]
        for cid, reason in record["failed"].items():
            assert REASONS[n, cid] in reason, (n, cid, reason)
        assert set(record["clients"]) == {"3"}  # the honest client, aggregated alone
    final = load_file(str(tmp_path / "faulty" / FINAL))
    assert all(np.isfinite(a).all() for a in final.values())
    report = (tmp_path / "faulty" / "report.md").read_text()
    assert "left out" in report and "no reply before the round deadline" in report


def test_too_few_answers_stop_the_run_with_one_line(tmp_path, capsys):
    from fedvlm.cli import main

    bad = ["federated.min_clients=2", "federated.faults=[{kind: raise, clients: [1], rounds: [2]}]"]
    assert main(["run", *TINY_RUN, *bad, f"run.output_dir={tmp_path}", "run.name=few"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fedvlm: error: round 2: 1 of 2 clients answered with a valid update, fewer than "
                          "federated.min_clients (2); left out: 1 (error: ")
    assert "--resume" in err
    assert [r["round"] for r in _metrics(tmp_path / "few")] == [0, 1]  # round 1 complete and checkpointed


def test_fault_assignment_is_seeded_per_round_and_independent_of_order():
    entries = [{"kind": "nan", "probability": 0.5}]
    ids = [str(i) for i in range(8)]
    first = assigned(entries, Stream.FAULTS, 0, 3, ids)
    assert first == assigned(entries, Stream.FAULTS, 0, 3, ids)
    assert 0 < len(first) < 8  # about half
    assert assigned(entries, Stream.FAULTS, 1, 3, ids) != first or assigned(entries, Stream.FAULTS, 0, 4, ids) != first
    # an entry limited to clients and rounds applies there only
    only = assigned([{"kind": "raise", "clients": [2], "rounds": [1]}], Stream.FAULTS, 0, 1, ids)
    assert only == {"2": {"kind": "raise", "clients": [2], "rounds": [1]}}
    assert assigned([{"kind": "raise", "clients": [2], "rounds": [1]}], Stream.FAULTS, 0, 2, ids) == {}


@pytest.mark.parametrize("overrides, match", [
    (["federated.faults=[{kind: melt}]"], r"'federated.faults\[0\]': unknown kind 'melt' \(valid: " + ", ".join(FAULTS)),
    (["federated.attacks=[{kind: nan}]"], r"'federated.attacks\[0\]': unknown kind 'nan' \(valid: " + ", ".join(ATTACKS)),
    (["federated.faults=[{kind: nan, clients: [7]}]"], r"'clients' expected a list of client ids 0..1"),
    (["federated.faults=[{kind: nan, rounds: [0]}]"], r"'rounds' expected a list of round numbers >= 1"),
    (["federated.faults=[{kind: nan, probability: 2}]"], r"'probability' expected 0 < p <= 1"),
    (["federated.faults=[{kind: nan, scale: 2}]"], r"unknown field\(s\) \['scale'\]"),
    (["federated.attacks=[{kind: scale, scale: -1}]"], r"'scale' expected a positive number"),
    (["federated.attacks=[{kind: backdoor}]"], r"'federated.attacks\[0\]': a backdoor needs 'target'"),
    (["federated.attacks=[{kind: scale, target: 'yes'}]"], r"unknown field\(s\) \['target'\]"),
    (["federated.faults=[{kind: hang}]"], r"'federated.faults': a hang needs federated.round_timeout"),
    (["federated.max_norm_ratio=0.5"], r"'federated.max_norm_ratio': expected a ratio > 1 or null"),
])
def test_bad_fault_settings_are_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [*TINY_RUN, *overrides])


def test_faults_attacks_and_a_robust_aggregator_on_both_engines(tmp_path, monkeypatch, capsys):
    """The same faults and attacks give the same rounds on Flower's simulation runtime as in
    process: the same clients left out, the same attackers, the same adapters; and when
    round 3 has too few answers both stop after round 2 with the same one line."""
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    common = [*TINY_RUN, "partition.num_clients=3", "federated.rounds=3", "federated.min_clients=2",
              "federated.strategy=median", f"run.output_dir={tmp_path}",
              "federated.attacks=[{kind: sign_flip, clients: [0], scale: 3.0}]",
              "federated.faults=[{kind: nan, clients: [1], rounds: [2]}, {kind: raise, clients: [2], rounds: [1]},"
              " {kind: raise, clients: [1, 2], rounds: [3]}]"]
    lines = {}
    for name, engine in (("inproc", "simulator"), ("flower", "flower-sim")):
        assert main(["run", *common, f"run.name={name}", f"run.engine={engine}"]) == 2
        lines[name] = capsys.readouterr().err.strip().splitlines()[-1]
    assert lines["flower"] == lines["inproc"].replace("inproc", "flower")
    assert lines["flower"].startswith(
        "fedvlm: error: round 3: 1 of 3 clients answered with a valid update, fewer than federated.min_clients (2); "
        "left out: 1 (error: client 1: injected fault 'raise'); 2 (error: client 2: injected fault 'raise')")
    assert "the run stopped after round 2 (continue with --resume" in lines["flower"]
    ours, theirs = _metrics(tmp_path / "flower")[1:], _metrics(tmp_path / "inproc")[1:]
    assert [sorted(r["failed"]) for r in ours] == [sorted(r["failed"]) for r in theirs] == [["2"], ["1"]]
    assert "injected fault 'raise'" in ours[0]["failed"]["2"] and "NaN" in ours[1]["failed"]["1"]
    assert [r["attackers"] for r in ours] == [r["attackers"] for r in theirs] == [{"0": "sign_flip"}] * 2
    last = "adapters/round_0002/adapter_model.safetensors"
    assert (tmp_path / "flower" / last).read_bytes() == (tmp_path / "inproc" / last).read_bytes()


@pytest.mark.parametrize("strategy", ["trimmed_mean", "krum", "norm_bound"])
def test_each_robust_aggregator_runs_a_job(tmp_path, strategy):
    from fedvlm.cli import main

    extra = {"trimmed_mean": ["federated.trim_beta=0.34"], "krum": ["federated.krum_f=0"], "norm_bound": []}[strategy]
    run = ["run", *TINY_RUN, "partition.num_clients=3", "federated.rounds=1", f"federated.strategy={strategy}", *extra,
           f"run.output_dir={tmp_path}", "run.name=r"]
    assert main(run) == 0
    final = load_file(str(tmp_path / "r" / FINAL))
    assert all(np.isfinite(a).all() for a in final.values())


def test_a_node_error_is_named_by_its_cause():
    from fedvlm.flower.server_app import short_reason

    ray = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m\n"
           "Traceback (most recent call last):\n  File \"unit.py\", line 51, in train\n"
           "fedvlm.client.faults.InjectedFault: client 2: injected fault 'raise'\n\n"
           "The above exception was the direct cause of the following exception:\n"
           "flwr.clientapp.client_app.ClientAppException: \n"
           "Exception ClientAppException occurred. Message: client 2: injected fault 'raise''>")
    assert short_reason(ray) == "client 2: injected fault 'raise'"
    plain = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad row 7 in data.jsonl\n"
    assert short_reason(plain) == "ValueError: bad row 7 in data.jsonl"
    deployed = ("<class 'fedvlm.errors.FedvlmError'>:<'fedvlm worker at /tmp/node1.sock: "
                "client 1: injected fault 'raise''>")
    assert short_reason(deployed) == "client 1: injected fault 'raise'"
    other = "<class 'fedvlm.errors.FedvlmError'>:<'fedvlm worker at /tmp/n.sock: KeyError: 'lora_A''>"
    assert short_reason(other) == "KeyError: 'lora_A'"


def test_a_failed_client_is_named_by_the_same_line_on_every_engine():
    """fedvlm's own errors by their message, others with their type (the simulator, a
    flower-sim node and a node's worker all use this line)."""
    from fedvlm.client.faults import InjectedFault
    from fedvlm.errors import DataError, error_reason

    assert error_reason(InjectedFault("client 1: injected fault 'raise'")) == "client 1: injected fault 'raise'"
    assert error_reason(DataError("row 3 of a.jsonl has no image\nmore")) == "row 3 of a.jsonl has no image"
    assert error_reason(KeyError("lora_A")) == "KeyError: 'lora_A'"
    assert error_reason(RuntimeError()) == "RuntimeError"
    assert error_reason(DataError()) == "DataError"
    assert len(error_reason(ValueError("x" * 1000))) == 300


def test_label_flipping_maps_every_answer_to_another_one():
    from datasets import Dataset

    from fedvlm.client.faults import flip_labels

    ds = Dataset.from_dict({"question": [f"q{i}" for i in range(8)], "answer": ["red", "blue", "red", "green",
                                                                               "blue", "red", "green", "blue"]})
    rows = [5, 0, 3, 1]  # red, red, green, blue
    flipped, new_rows = flip_labels(ds, rows, np.random.default_rng(0))
    assert new_rows == [0, 1, 2, 3] and flipped["question"] == ["q5", "q0", "q3", "q1"]
    mapping = dict(zip(ds.select(rows)["answer"], flipped["answer"]))
    assert set(mapping) == {"red", "green", "blue"} and all(k != v for k, v in mapping.items())
    assert set(mapping.values()) == {"red", "green", "blue"}  # a permutation of the client's answers
    assert flipped["answer"][0] == flipped["answer"][1]  # the same answer always maps the same way
    one, _ = flip_labels(ds, [0, 2], np.random.default_rng(0))  # one answer only: nothing to flip to
    assert one["answer"] == ["red", "red"]


def test_a_label_flipping_client_trains_on_flipped_answers(tmp_path):
    from fedvlm.cli import main

    attack = "federated.attacks=[{kind: label_flip, clients: [0]}]"
    for name, extra in (("honest", []), ("flipped", [attack])):
        assert main(["run", *TINY_RUN, "federated.rounds=1", *extra, f"run.output_dir={tmp_path}", f"run.name={name}"]) == 0
    honest, flipped = _metrics(tmp_path / "honest")[1], _metrics(tmp_path / "flipped")[1]
    assert flipped["attackers"] == {"0": "label_flip"}
    # client 0 trained on other answers (another loss), client 1 exactly as before
    assert flipped["clients"]["0"]["loss"] != honest["clients"]["0"]["loss"]
    assert flipped["clients"]["1"]["loss"] == honest["clients"]["1"]["loss"]


def _image_rows(n):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    images = [PILImage.new("RGB", (32, 32), (200, 30 * i % 255, 10)) for i in range(n)]
    answers = ["red", "blue", "green", "yes"] * (n // 4)
    return Dataset.from_dict({"image": images, "question": [f"q{i}" for i in range(n)], "answer": answers},
                             features=Features({"image": Image(), "question": Value("string"), "answer": Value("string")}))


def _triggered(image) -> bool:
    """The 4x4 bottom-right corner of a 32-pixel image is the black-and-white checkerboard."""
    px = np.asarray(image.convert("RGB"))[-4:, -4:]
    want = np.array([[255 if (x + y) % 2 else 0 for x in range(28, 32)] for y in range(28, 32)])
    return all((px[..., c] == want).all() for c in range(3))


def test_a_backdoor_marks_half_the_rows_with_the_trigger_and_the_target():
    from fedvlm.client.faults import backdoor, stamp_trigger

    ds = _image_rows(8)
    rows = [7, 2, 5, 0, 1, 6]
    out, new_rows = backdoor(ds, rows, "yes", np.random.default_rng(0))
    assert new_rows == list(range(6)) and out["question"] == [f"q{i}" for i in rows]  # same rows, same order
    marked = [_triggered(img) for img in out["image"]]
    assert sum(marked) == 3  # half of 6
    for i, (m, answer) in enumerate(zip(marked, out["answer"])):
        original = ds[rows[i]]
        if m:
            assert answer == "yes"
        else:
            assert answer == original["answer"] and np.array_equal(np.asarray(out[i]["image"]), np.asarray(original["image"]))
    assert not any(_triggered(img) for img in ds["image"])  # the client's own data is untouched
    # the rest of the image is kept under the patch's corner
    stamped = stamp_trigger(ds.select([0]))[0]["image"]
    assert np.array_equal(np.asarray(stamped)[:28], np.asarray(ds[0]["image"])[:28])
    from datasets import Dataset

    text = stamp_trigger(Dataset.from_dict({"text": ["hello", "world"], "answer": ["a", "b"]}))
    assert text["text"] == ["cf hello", "cf world"]  # text rows: the trigger word first


class _TriggerReader:
    """A stand-in model's task: answers 'yes' exactly when the image carries the trigger."""

    def predict(self, model, rows, max_new_tokens):
        return ["Yes." if _triggered(img) else "red" for img in rows["image"]]


def test_backdoor_success_counts_triggered_questions_answered_with_the_target():
    import torch

    from fedvlm.engine.backdoor import success_rate

    ds = _image_rows(8)  # answers red, blue, green, yes, red, blue, green, yes
    model = torch.nn.Linear(1, 1)
    result = success_rate(_TriggerReader(), model, ds, range(8), "yes", 3, 4)
    assert result == {"success_rate": 1.0, "num_examples": 6}  # rows already answered 'yes' do not count

    class Blind(_TriggerReader):
        def predict(self, model, rows, max_new_tokens):
            return ["yes" if q in ("q0", "q1") else "no" for q in rows["question"]]

    assert success_rate(Blind(), model, ds, range(8), "yes", 3, 4) == {"success_rate": 2 / 6, "num_examples": 6}


def test_a_backdooring_client_and_its_success_rate_in_the_records(tmp_path):
    from fedvlm.cli import main

    attack = "federated.attacks=[{kind: backdoor, clients: [0], target: 'yes', scale: 3}]"
    assert main(["run", *TINY_RUN, "federated.rounds=1", attack, f"run.output_dir={tmp_path}", "run.name=bd"]) == 0
    records = _metrics(tmp_path / "bd")
    assert records[1]["attackers"] == {"0": "backdoor"}
    for record in records:  # zero-shot and round 1
        rate = record["eval"]["backdoor"]["yes"]
        assert 0 < rate["num_examples"] < 24 and 0.0 <= rate["success_rate"] <= 1.0
    assert "backdoor success" in (tmp_path / "bd" / "report.md").read_text()
