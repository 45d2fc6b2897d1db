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


def test_a_tls_deployment_with_registered_supernodes_reproduces_the_in_process_run(tmp_path, monkeypatch):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY_RUN, "federated.rounds=2"]
    assert main(["run", *overrides, f"run.output_dir={tmp_path}", "run.name=inproc"]) == 0

    certs = make_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    keys = [make_node_key(tmp_path / "keys", f"node{i}") for i in range(2)]
    app = write_app(tmp_path / "app")
    link_port, home = _port(), tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink.local]\naddress = "127.0.0.1:{link_port}"\nroot-certificates = "{certs["ca.crt"]}"\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    logs, procs = tmp_path / "logs", []
    logs.mkdir()

    def start(name, *args):
        out = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, stdout=out, stderr=subprocess.STDOUT))

    try:
        start("superlink", "flower-superlink", "--ssl-ca-certfile", str(certs["ca.crt"]),
              "--ssl-certfile", str(certs["server.pem"]), "--ssl-keyfile", str(certs["server.key"]),
              "--enable-supernode-auth", "--disable-runtime-dependency-installation",
              "--host", "127.0.0.1", "--port", str(link_port))
        _wait(link_port)
        for _, public in keys:
            subprocess.run([str(BIN / "flwr"), "supernode", "register", str(public), "local"], env=env, check=True,
                           capture_output=True)
        # node 0 keeps its model loaded in a fedvlm worker; node 1 is a plain SuperNode
        socket_path = tmp_path / "node0.sock"
        start("worker0", "python", "-m", "fedvlm.cli", "flower", "worker", str(socket_path))
        deadline = time.monotonic() + 60
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for i, (private, _) in enumerate(keys):
            worker = f" worker='{socket_path}'" if i == 0 else ""
            start(f"node{i}", "flower-supernode", "--superlink", f"127.0.0.1:{link_port}",
                  "--root-certificates", str(certs["ca.crt"]), "--auth-supernode-private-key", str(private),
                  "--node-config", f"partition-id={i} num-partitions=2 state-dir='{tmp_path / f'state{i}'}'{worker}",
                  "--port", str(_port()))
        run_dir = tmp_path / "deployed"
        run_config = f"overrides='{' '.join(overrides)}' run-dir='{run_dir}'"
        subprocess.run([str(BIN / "flwr"), "run", str(app), "local", "--run-config", run_config, "--stream"],
                       env=env, check=True, capture_output=True, timeout=600)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)

    final = "adapters/final/adapter_model.safetensors"
    assert (run_dir / final).read_bytes() == (tmp_path / "inproc" / final).read_bytes()
    deployed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    inproc = [json.loads(line) for line in (tmp_path / "inproc" / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval"] for r in deployed] == [r["eval"] for r in inproc]
    # each node keeps its own state in its own directory, on its own machine
    assert (tmp_path / "state0" / "0").is_dir() and (tmp_path / "state1" / "1").is_dir()
    # node 0's worker set its model up once for the whole run; node 1's ephemeral ClientApp
    # (one process per message in flwr 1.42) set it up again for every message
    assert [r["clients"]["0"]["node_loads"] for r in deployed[1:]] == [1, 1]
    assert [r["clients"]["1"]["node_loads"] for r in deployed[1:]] == [3, 5]
