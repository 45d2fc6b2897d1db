"""A deployment on Flower's own SuperLink and SuperNodes, on this machine: TLS and
SuperNode authentication on, keys and certificates from ``fedvlm flower``, nodes that run
only the app signed by a key they trust, the run started with ``flwr run``; it reproduces the in-process simulator's run, and a node with a fedvlm
worker loads its model once for the whole run. (Without a worker a node sets its model up
for every message: ``benchmarks/flower.py --no-worker`` shows it.)"""

import json
import time
from pathlib import Path

import pytest

from fedvlm.errors import ConfigError, FedvlmError
from fedvlm.flower.deploy import make_certificates, make_node_key
from fedvlm.flower.loopback import LoopbackDeployment
from tiny import TINY_RUN

def test_certificates_and_keys_are_never_overwritten(tmp_path):
    make_certificates(tmp_path, ["127.0.0.1"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="ca.crt exists"):
        make_certificates(tmp_path, ["127.0.0.1"])
    assert (tmp_path / "ca.key").read_bytes() == before
    make_node_key(tmp_path, "n")
    with pytest.raises(ConfigError, match="n exists"):
        make_node_key(tmp_path, "n")


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One SuperLink and two registered SuperNodes, each keeping its model loaded in a
    fedvlm worker, serving every run of this module as a real deployment serves many; the
    nodes run only apps signed by the deployment's key, so every run here is of the signed
    app, fetched by the SuperLink from the app index."""
    with LoopbackDeployment(tmp_path_factory.mktemp("deployment"), signed=True) as d:
        d.node(0, worker=True)
        d.node(1, worker=True)
        yield d


RAISE = "federated.faults=[{kind: raise, clients: [1], rounds: [1]}]"  # node 1 errors in round 1


def test_a_tls_deployment_with_registered_supernodes_reproduces_the_in_process_run(tmp_path, monkeypatch, deployment):
    """SCAFFOLD keeps c_i on each node, and node 1 raises in round 1 and is left out of it.
    (FedSA-LoRA's and FedALT's personalized exports go the same way on Flower's simulation
    runtime: tests/algorithms/test_dp_fedavg.py, tests/runners/test_flower.py.)"""
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY_RUN, "federated.rounds=2", "federated.strategy=scaffold", RAISE]
    assert main(["run", *overrides, f"run.output_dir={tmp_path}", "run.name=inproc"]) == 0
    run_dir = tmp_path / "deployed"
    deployment.run(overrides, run_dir)

    # every adapter byte-identical
    inproc_dir = tmp_path / "inproc"
    adapters = sorted(p.relative_to(inproc_dir) for p in (inproc_dir / "adapters").rglob("adapter_model.safetensors"))
    assert "adapters/final/adapter_model.safetensors" in map(str, adapters)
    for path in adapters:
        assert (run_dir / path).read_bytes() == (inproc_dir / path).read_bytes(), path
    deployed, inproc = _records(run_dir), _records(inproc_dir)
    assert [r["eval"] for r in deployed] == [r["eval"] for r in inproc]
    # the node's error left it out of round 1, named by its cause
    assert set(deployed[1]["clients"]) == {"0"} and set(inproc[1]["clients"]) == {"0"}
    assert deployed[1]["failed"]["1"] == "error: client 1: injected fault 'raise'"
    assert set(deployed[2]["clients"]) == {"0", "1"}
    # the ServerApp leaves a complete run directory: its report and plots too
    assert (run_dir / "report.md").is_file() and (run_dir / "plots" / "accuracy.png").is_file()
    # each node keeps this run's state in its own directory, apart from the other runs'
    key = (run_dir / "node-state-key").read_text()
    assert all((deployment.root / f"state{i}" / key / str(i)).is_dir() for i in (0, 1))
    assert all((deployment.root / f"state{i}" / key / str(i) / "scaffold_c.round_0002.safetensors").is_file()
               for i in (0, 1))
    # each node's worker set its model up once for the whole run, though flwr 1.42 starts a
    # fresh ClientApp process for every message (query, zero-shot evaluation, then per round
    # train and evaluate)
    assert all(m["node_loads"] == 1 for r in deployed[1:] for m in r["clients"].values())


def test_secure_aggregation_on_the_deployment_gives_the_plain_adapter_within_the_bound(tmp_path, monkeypatch, deployment):
    """Flower's SecAgg+ between the ServerApp and two TLS SuperNodes (each node's worker
    trains; its ClientApp masks): the adapter is the in-process plain FedAvg's within the
    quantisation bound, and the round's upload is the masked vector."""
    import numpy as np
    from safetensors.numpy import load_file

    from fedvlm.algorithms.secaggplus.options import SecAggPlusOptions, quantization_bound
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY_RUN, "federated.rounds=1"]
    assert main(["run", *overrides, f"run.output_dir={tmp_path}", "run.name=inproc"]) == 0
    deployment.run([*overrides, "federated.secure_aggregation=secaggplus"], tmp_path / "secure")
    final = "adapters/final/adapter_model.safetensors"
    plain, secure = load_file(tmp_path / "inproc" / final), load_file(tmp_path / "secure" / final)
    record = _records(tmp_path / "secure")[1]
    assert set(record["clients"]) == {"0", "1"} and "failed" not in record
    bound = quantization_bound(SecAggPlusOptions(), [m["train_size"] for m in record["clients"].values()]) + 1e-7
    gap = max(float(np.abs(secure[k].astype(np.float64) - plain[k]).max()) for k in plain)
    assert 0 < gap <= bound
    floats = _records(tmp_path / "inproc")[1]["clients"]["0"]["bytes_up"]
    assert all(m["bytes_up"] > 1.9 * floats for m in record["clients"].values())  # int64 masked vs float32


def test_a_run_whose_server_app_fails_is_reported_as_failed(tmp_path, deployment):
    """``flwr run --stream`` exits 0 whatever happened; ``fedvlm flower submit`` (which the
    loopback deployment runs) exits with the run's final status and the ServerApp's line."""
    run_dir = tmp_path / "stopped"
    overrides = [*TINY_RUN, "federated.rounds=1", "federated.min_clients=2", RAISE]
    with pytest.raises(FedvlmError, match=r"ended finished:failed"):
        deployment.run(overrides, run_dir)
    assert "fewer than federated.min_clients (2)" in (run_dir / "stopped.txt").read_text()
    assert "left out: 1 (error: client 1: injected fault 'raise')" in (run_dir / "stopped.txt").read_text()


def test_nodes_that_trust_a_key_refuse_the_app_sent_unsigned(tmp_path, deployment):
    """The same app from its directory (no signature): each node answers with Flower's
    verification error, the run stops naming it, and nothing is trained."""
    assert "POST /hub/fetch-fab" in (deployment.logs / "app-index.log").read_text()  # earlier runs: the signed app
    run_dir = tmp_path / "unsigned"
    with pytest.raises(FedvlmError, match="ended finished:failed"):
        deployment.run([*TINY_RUN, "federated.rounds=1"], run_dir, signed=False)
    assert "The FAB could not be verified" in (run_dir / "stopped.txt").read_text()
    assert not (run_dir / "adapters" / "final").exists()
    assert "The FAB could not be verified" in (deployment.logs / "node0.log").read_text()


def test_unregistered_and_plaintext_nodes_are_refused_and_a_killed_node_is_left_out(tmp_path, deployment):
    """Last in this module: it kills node 1 of the shared deployment."""
    run_dir = tmp_path / "run"
    overrides = [*TINY_RUN, "federated.rounds=2", "federated.round_timeout=30"]  # (round 1 must beat it on a loaded machine)
    give_up = ("--max-retries", "2", "--max-wait-time", "30")
    d = deployment
    stranger = d.node(7, False, False, *give_up)  # key never registered
    plaintext = d.node(8, False, True, "--insecure", *give_up)  # no TLS against a TLS SuperLink
    d.run(overrides, run_dir, wait=False)
    deadline = time.monotonic() + 300
    while len(_records(run_dir)) < 2 and time.monotonic() < deadline:  # round 1 logged
        time.sleep(0.2)
    d.procs["node1"].kill()
    d.procs["worker1"].kill()
    d.procs["flwr-run"].wait(300)
    assert stranger.wait(60) != 0 and plaintext.wait(60) != 0  # neither ever joined
    records = _records(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2]
    assert set(records[1]["clients"]) == {"0", "1"}
    for r in records[2:]:  # the round after the kill completed on node 0 and names node 1
        assert set(r["clients"]) == {"0"} and set(r["failed"]) == {"1"}
