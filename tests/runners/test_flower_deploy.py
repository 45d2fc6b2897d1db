"""A deployment on Flower's own SuperLink and SuperNodes, on this machine: TLS and
SuperNode authentication on, keys and certificates from ``fedvlm flower``, the run started
with ``flwr run``; it reproduces the in-process simulator's run, and a node with a fedvlm
worker loads its model once for the whole run."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedvlm.errors import ConfigError
from fedvlm.runners.flower.deploy import make_certificates, make_node_key, write_app
from tiny import TINY_RUN

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(port)


def test_certificates_and_keys_are_never_overwritten(tmp_path):
    make_certificates(tmp_path, ["127.0.0.1"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="ca.crt exists"):
        make_certificates(tmp_path, ["127.0.0.1"])
    assert (tmp_path / "ca.key").read_bytes() == before
    make_node_key(tmp_path, "n")
    with pytest.raises(ConfigError, match="n exists"):
        make_node_key(tmp_path, "n")


class Deployment:
    """One SuperLink with TLS and SuperNode authentication on 127.0.0.1, and what the tests
    start against it; everything is stopped on exit."""

    def __init__(self, root: Path):
        self.root, self.procs = root, {}
        self.certs = make_certificates(root / "certs", ["127.0.0.1", "localhost"])
        self.port, home = _port(), root / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink.local]\naddress = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs["ca.crt"]}"\n'
        )
        self.env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.logs = root / "logs"
        self.logs.mkdir()

    def start(self, name, *args):
        out = open(self.logs / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        return self.procs[name]

    def __enter__(self):
        self.start("superlink", "flower-superlink", "--ssl-ca-certfile", str(self.certs["ca.crt"]),
                   "--ssl-certfile", str(self.certs["server.pem"]), "--ssl-keyfile", str(self.certs["server.key"]),
                   "--enable-supernode-auth", "--disable-runtime-dependency-installation",
                   "--host", "127.0.0.1", "--port", str(self.port))
        _wait(self.port)
        return self

    def __exit__(self, *exc):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait(30)

    def node(self, i: int, worker: bool = False, register: bool = True, *extra: str):
        private, public = make_node_key(self.root / "keys", f"node{i}")
        if register:
            subprocess.run([str(BIN / "flwr"), "supernode", "register", str(public), "local"], env=self.env,
                           check=True, capture_output=True)
        node_config = f"partition-id={i} num-partitions=2 state-dir='{self.root / f'state{i}'}'"
        if worker:
            sock = self.root / f"node{i}.sock"
            self.start(f"worker{i}", "python", "-m", "fedvlm.cli", "flower", "worker", str(sock))
            deadline = time.monotonic() + 60
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            node_config += f" worker='{sock}'"
        tls = [] if "--insecure" in extra else ["--root-certificates", str(self.certs["ca.crt"])]
        return self.start(f"node{i}", "flower-supernode", "--superlink", f"127.0.0.1:{self.port}", *tls,
                          "--auth-supernode-private-key", str(private), "--node-config", node_config,
                          "--port", str(_port()), *extra)

    def run(self, overrides, run_dir: Path, wait: bool = True):
        app = write_app(self.root / "app")
        run_config = f"overrides='{' '.join(overrides)}' run-dir='{run_dir}'"
        cmd = [str(BIN / "flwr"), "run", str(app), "local", "--run-config", run_config, "--stream"]
        if wait:
            return subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=600)
        return self.start("flwr-run", *cmd)


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])  # scaffold: state kept on each node
def test_a_tls_deployment_with_registered_supernodes_reproduces_the_in_process_run(tmp_path, monkeypatch, strategy):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY_RUN, "federated.rounds=2", f"federated.strategy={strategy}"]
    assert main(["run", *overrides, f"run.output_dir={tmp_path}", "run.name=inproc"]) == 0
    run_dir = tmp_path / "deployed"
    with Deployment(tmp_path) as d:
        d.node(0, worker=True)  # node 0 keeps its model loaded in a fedvlm worker
        d.node(1)  # node 1 is a plain SuperNode
        d.run(overrides, run_dir)

    final = "adapters/final/adapter_model.safetensors"
    assert (run_dir / final).read_bytes() == (tmp_path / "inproc" / final).read_bytes()
    deployed, inproc = _records(run_dir), _records(tmp_path / "inproc")
    assert [r["eval"] for r in deployed] == [r["eval"] for r in inproc]
    # each node keeps its own state in its own directory, on its own machine
    assert (tmp_path / "state0" / "0").is_dir() and (tmp_path / "state1" / "1").is_dir()
    if strategy == "scaffold":
        assert all((tmp_path / f"state{i}" / str(i) / "scaffold_c.round_0002.safetensors").is_file() for i in (0, 1))
    # node 0's worker set its model up once for the whole run; node 1's ephemeral ClientApp
    # (one process per message in flwr 1.42) set it up again for every message
    assert [r["clients"]["0"]["node_loads"] for r in deployed[1:]] == [1, 1]
    assert [r["clients"]["1"]["node_loads"] for r in deployed[1:]] == [3, 5]


def test_unregistered_and_plaintext_nodes_are_refused_and_a_killed_node_is_left_out(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY_RUN, "federated.rounds=3", "train.local_steps=6", "federated.round_timeout=20"]
    give_up = ("--max-retries", "2", "--max-wait-time", "30")
    with Deployment(tmp_path) as d:
        stranger = d.node(7, False, False, *give_up)  # key never registered
        plaintext = d.node(8, False, True, "--insecure", *give_up)  # no TLS against a TLS SuperLink
        d.node(0, worker=True)
        d.node(1, worker=True)
        d.run(overrides, run_dir, wait=False)
        deadline = time.monotonic() + 300
        while len(_records(run_dir)) < 2 and time.monotonic() < deadline:  # round 1 logged
            time.sleep(0.2)
        d.procs["node1"].kill()
        d.procs["worker1"].kill()
        d.procs["flwr-run"].wait(300)
        assert stranger.wait(60) != 0 and plaintext.wait(60) != 0  # neither ever joined
    records = _records(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert set(records[1]["clients"]) == {"0", "1"}
    for r in records[2:]:  # the rounds after the kill completed on node 0 and name node 1
        assert set(r["clients"]) == {"0"} and set(r["failed"]) == {"1"}
