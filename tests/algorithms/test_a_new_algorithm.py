"""A new stateful algorithm is its own folder plus one registry line: the toy in
``toy_visits/`` (not shipped) registers through an entry point, as a package outside fedvlm
would, and runs through the in-process simulator and Flower's simulation runtime alike."""

import os
import subprocess
import sys
from pathlib import Path

from tiny import ONE_ACTOR, TINY_RUN

HERE = Path(__file__).parent
FINAL = "adapters/final/adapter_model.safetensors"


def _register(root: Path) -> dict[str, str]:
    """An environment in which ``toy_visits`` is installed as a plugin: its folder and a
    distribution whose only content is the registry line, on PYTHONPATH."""
    info = root / "site" / "fedvlm_toy-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fedvlm-toy\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[fedvlm.strategies]\ntoy = toy_visits:ALGORITHM\n")
    path = os.pathsep.join([str(root / "site"), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def _run(env, root: Path, name: str, *overrides: str) -> Path:
    out = subprocess.run(
        [sys.executable, "-m", "fedvlm.cli", "run", *TINY_RUN, f"run.output_dir={root}", f"run.name={name}", *overrides],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root / name


def _server_scalars(run_dir: Path) -> dict:
    from fedvlm.engine.rundir import load_checkpoint

    return load_checkpoint(run_dir)[0].scalars


def test_a_toy_algorithm_runs_on_both_engines(tmp_path, monkeypatch):
    from fedvlm.cli import main

    env = _register(tmp_path)
    toy = _run(env, tmp_path, "toy", "federated.strategy=toy")
    decayed = _run(env, tmp_path, "decayed", "federated.strategy=toy", "federated.toy_decay=1.0")
    flower = _run(env, tmp_path, "flower", "federated.strategy=toy", "federated.toy_decay=1.0", "run.engine=flower-sim", ONE_ACTOR)
    monkeypatch.chdir(tmp_path)  # plain FedAvg needs no plugin: in this process
    assert main(["run", *TINY_RUN, f"run.output_dir={tmp_path}", "run.name=fedavg", "federated.strategy=fedavg"]) == 0
    fedavg = tmp_path / "fedavg"

    # both sides' state: the server's count and each client's own, two rounds each
    for run in (toy, flower):
        assert _server_scalars(run)["toy_visits"] == {"0": 2, "1": 2}
        assert {p.parent.name for p in (run / "clients").rglob("toy_visits.round_0002.*")} == {"0", "1"}
    # with its option at 0 the toy trains and aggregates as FedAvg does
    assert (toy / FINAL).read_bytes() == (fedavg / FINAL).read_bytes()
    # the option reaches the client side's hook through the round config, on either engine
    assert (decayed / FINAL).read_bytes() != (toy / FINAL).read_bytes()
    assert (flower / FINAL).read_bytes() == (decayed / FINAL).read_bytes()
    assert "toy_decay: 1.0" in (decayed / "config.yaml").read_text()


def test_an_option_of_an_algorithm_not_in_the_run_is_one_line(tmp_path):
    env = _register(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "fedvlm.cli", "run", *TINY_RUN, f"run.output_dir={tmp_path}", "federated.toy_decay=1.0"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "config key 'federated.toy_decay': needs federated.strategy=toy "
        "(this run's strategy 'fedavg' and aggregation 'naive' take none)")
    assert not list(tmp_path.glob("fedavg-*"))
