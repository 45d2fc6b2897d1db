"""Resuming: safe overrides recorded, a run stopped before round 1 starts again, and a
checkpoint left at any point of its write still resumes."""

import json
import shutil

import numpy as np
import pytest

from tiny import finished_run as run_to_the_end
from fedvlm.cli import main
from fedvlm.core.types import ServerState
from fedvlm.engine import rundir



@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run_to_the_end(tmp_path_factory.mktemp("finished"))


def _final(run_dir):
    return (run_dir / "adapters" / "final" / "adapter_model.safetensors").read_bytes()


def _rounds(run_dir):
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_extends_a_run_and_records_the_change(tmp_path, finished):
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    assert main(["run", "--resume", str(run), "federated.rounds=3", "eval.batch_size=16"]) == 0
    assert _rounds(run) == [0, 1, 2, 3]
    text = (run / "config.yaml").read_text()
    assert "federated.rounds: 2 -> 3" in text.splitlines()[0] and "eval.batch_size: 32 -> 16" in text
    assert "after round 2" in text.splitlines()[0]
    assert "rounds: 3" in text
    assert _final(run) != _final(finished)


def test_a_run_stopped_before_round_one_resumes_from_the_start(tmp_path, finished):
    run = tmp_path / "early"
    run.mkdir()
    shutil.copy(finished / "config.yaml", run / "config.yaml")
    # what a kill during round 1 leaves: the zero-shot line, a half-written round line,
    # a client's state, no checkpoint
    (run / "metrics.jsonl").write_text(json.dumps({"round": 0, "eval": {"accuracy": 0.0}}) + '\n{"round": 1, "se')
    (run / "clients" / "0").mkdir(parents=True)
    (run / "clients" / "0" / "x.round_0001.tmp").write_bytes(b"partial")
    assert main(["run", "--resume", str(run)]) == 0
    assert _rounds(run) == [0, 1, 2]
    assert _final(run) == _final(finished)
    assert "before round 1" in (run / "config.yaml").read_text().splitlines()[0]


def _state(round_num, value):
    return ServerState(round_num, {"w": np.full(3, value, np.float32)}, {"m": {"w": np.zeros(3, np.float32)}})


def test_checkpoint_survives_a_kill_at_any_point_of_its_write(tmp_path):
    rng = np.random.default_rng(0)
    rundir.save_checkpoint(tmp_path, _state(1, 1.0), rng, {"participation": {"0": 1}})
    # killed while writing round 2: its .tmp directory is partial (no state.json yet)
    tmp = tmp_path / "checkpoint" / "round_0002.tmp"
    tmp.mkdir()
    (tmp / "global.safetensors").write_bytes(b"\x00" * 10)
    state, _, extra = rundir.load_checkpoint(tmp_path)
    assert state.round == 1 and state.global_state["w"].tolist() == [1.0] * 3 and extra["participation"] == {"0": 1}
    # killed after round 2 was renamed into place, before round 1 was removed: the newer wins
    rundir.save_checkpoint(tmp_path, _state(2, 2.0), rng, {})
    shutil.copytree(tmp_path / "checkpoint" / "round_0002", tmp_path / "keep")
    rundir.save_checkpoint(tmp_path, _state(1, 1.0), rng, {})  # (rewrites round 1 only)
    shutil.copytree(tmp_path / "keep", tmp_path / "checkpoint" / "round_0002")
    assert rundir.latest_round(tmp_path) == 2
    assert rundir.load_checkpoint(tmp_path)[0].global_state["w"].tolist() == [2.0] * 3
    # the next save leaves exactly one checkpoint
    rundir.save_checkpoint(tmp_path, _state(3, 3.0), rng, {})
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["round_0003"]


@pytest.mark.parametrize("left", ["checkpoint.old", "checkpoint.tmp"])
def test_an_older_versions_swap_window_resumes(tmp_path, left):
    # Older fedvlm wrote checkpoint.tmp, renamed checkpoint -> checkpoint.old, then tmp ->
    # checkpoint: a kill in between leaves the complete one under .old or .tmp only.
    rundir.save_checkpoint(tmp_path, _state(4, 4.0), np.random.default_rng(0), {})
    (tmp_path / "checkpoint" / "round_0004").rename(tmp_path / left)
    (tmp_path / "checkpoint").rmdir()
    assert rundir.latest_round(tmp_path) == 4
    assert rundir.load_checkpoint(tmp_path)[0].global_state["w"].tolist() == [4.0] * 3


def test_truncate_metrics_drops_a_cut_last_line_and_later_rounds(tmp_path):
    lines = [json.dumps({"round": r}) for r in range(4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"round": 4, "eval"')
    rundir.truncate_metrics(tmp_path, 2)
    assert _rounds(tmp_path) == [0, 1, 2]
