"""``run.report_to``: each tracker receives the run's metrics, config and final adapter
through its own library, and each is read back here with that library's own reader,
offline."""

import json

import pytest

from fedvlm.errors import ConfigError
from tiny import TINY_RUN


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One tiny run reporting to all four trackers, offline."""
    from fedvlm.cli import main

    root = tmp_path_factory.mktemp("tracked")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "TRACKIO_DIR": str(root / "trackio"),
           "MLFLOW_TRACKING_URI": ""}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(root)
        assert main(["run", *TINY_RUN, "run.report_to=[tensorboard, mlflow, wandb, trackio]",
                     f"run.output_dir={root}", "run.name=tracked"]) == 0
    return root / "tracked", root


def _expected(run_dir):
    records = _records(run_dir)
    accuracy = [(r["round"], r["eval"]["accuracy"]) for r in records]
    loss = [(r["round"], r["clients"]["0"]["loss"]) for r in records[1:]]
    return accuracy, loss


def test_tensorboard_event_files_read_back_with_tensorboards_reader(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    accuracy, loss = _expected(run_dir)
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("eval/accuracy")] == accuracy
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("clients/0/loss")] == loss
    assert {"bytes_up", "bytes_down", "seconds", "eval/clients/1/accuracy", "eval/personalized/mean"} <= set(events.Tags()["scalars"])


def test_the_mlflow_store_reads_back_with_mlflows_client(tracked_run):
    from mlflow import MlflowClient

    run_dir, _ = tracked_run
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fedvlm")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    accuracy, loss = _expected(run_dir)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/accuracy"))
    assert history == [(s, pytest.approx(v)) for s, v in accuracy]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "clients/0/loss")) == [
        (s, pytest.approx(v)) for s, v in loss]
    assert run.data.params["federated.strategy"] == "fedavg" and run.data.params["partition.num_clients"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts


def _wandb_records(path):
    """The records of an offline W&B run file, as wandb's own protobuf ``Record``s. wandb
    0.31 reads these files in its Go core only, so the file's framing (LevelDB's log
    format: 32 KiB blocks of chunks, each a 7-byte header crc32, length, type) is read
    here; what is in the records is parsed by wandb's generated classes."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7  # after the file's ":W&B" header
    assert data[:4] == b":W&B"
    chunks, pending = [], b""
    while pos < len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if (length, kind) == (0, 0):
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            chunks.append(pending)
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def test_the_offline_wandb_run_holds_the_metrics_config_and_adapter(tracked_run):
    run_dir, _ = tracked_run
    [log] = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    history, config, artifacts = [], {}, []
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.append((record.history.step.num, row))
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "artifact":
            artifacts.append(record.artifact.name)
    accuracy, loss = _expected(run_dir)
    assert [(step, pytest.approx(row["eval/accuracy"])) for step, row in history] == accuracy
    assert [(step, pytest.approx(row["clients/0/loss"])) for step, row in history if "clients/0/loss" in row] == loss
    assert config["federated"]["strategy"] == "fedavg"
    assert artifacts == ["tracked-adapter"]


def test_the_trackio_run_reads_back_from_trackios_store(tracked_run):
    from trackio.sqlite_storage import SQLiteStorage

    run_dir, _ = tracked_run
    logs = SQLiteStorage.get_logs("fedvlm", "tracked")
    accuracy, loss = _expected(run_dir)
    assert [(row["step"], pytest.approx(row["eval/accuracy"])) for row in logs] == accuracy
    assert [(row["step"], pytest.approx(row["clients/0/loss"])) for row in logs if "clients/0/loss" in row] == loss


def test_an_unknown_tracker_or_a_missing_library_is_one_line(monkeypatch):
    import importlib.util

    from fedvlm.config import load_config

    with pytest.raises(ConfigError, match=r"^config key 'run.report_to': unknown tracker 'comet' \(valid: tensorboard, "):
        load_config(None, ["run.report_to=[comet]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^config key 'run.report_to': wandb needs its library \(pip install 'fedvlm\[tracking\]'\)$"):
        load_config(None, ["run.report_to=[tensorboard, wandb]"])
