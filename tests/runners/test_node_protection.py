"""A node owns its disk: the server's names cannot reach outside its state directory, the
worker survives malformed, truncated and oversized messages and removes its socket when
stopped, private keys are never readable by others, and nothing is unpickled anywhere."""

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
import pytest

import fedvlm
from fedvlm.errors import FedvlmError
from fedvlm.flower import worker
from fedvlm.flower.deploy import make_certificates, make_node_key
from fedvlm.flower.messages import Request
from fedvlm.flower.node_handler import NodeHandler


@pytest.mark.parametrize("key", ["", "..", "../../etc", "/tmp/elsewhere", "a/b", " x"])
def test_a_server_sent_state_key_cannot_leave_the_nodes_state_dir(tmp_path, key):
    req = Request("query", 1, 7, run_config={"run_dir": str(tmp_path / "run")},
                  node_config={"state-dir": str(tmp_path / "state"), "partition-id": 0, "num-partitions": 2}, state_key=key)
    with pytest.raises(ValueError, match="not one directory name"):
        NodeHandler().handle(req)
    assert not (tmp_path / "state").exists() and not (tmp_path / "elsewhere").exists()


def test_private_keys_are_created_private(tmp_path):
    old = os.umask(0o000)  # even a permissive umask never exposes a key, not for an instant
    try:
        make_certificates(tmp_path / "certs", ["127.0.0.1"])
        make_node_key(tmp_path / "keys", "node0")
    finally:
        os.umask(old)
    for private in (tmp_path / "certs" / "ca.key", tmp_path / "certs" / "server.key", tmp_path / "keys" / "node0"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


class _Handler:
    def handle(self, req):
        from fedvlm.flower.messages import Reply

        return Reply("c0", {"n": len(req.arrays)}, {"w": np.ones(2, np.float32)})


@pytest.fixture
def running_worker(tmp_path, monkeypatch):
    monkeypatch.setattr("fedvlm.flower.node_handler.NodeHandler", _Handler)
    path = tmp_path / "w.sock"
    thread = threading.Thread(target=worker.serve, args=(str(path), 4), daemon=True)
    thread.start()
    while not path.exists():
        time.sleep(0.05)
    yield str(path)
    thread.join(10)


def test_the_worker_survives_malformed_truncated_and_oversized_messages(running_worker, monkeypatch):
    # 1: a header that is not JSON gets an error reply
    with Client(running_worker, family="AF_UNIX") as conn:
        conn.send_bytes(b"\xff not json")
        assert "malformed message: a message header that is not JSON" in json.loads(conn.recv_bytes())["error"]
    # 2: a client that dies mid-message (header sent, its arrays never)
    with Client(running_worker, family="AF_UNIX") as conn:
        conn.send_bytes(json.dumps({"kind": "train", "groups": ["arrays"]}).encode())
    # 3: an array group past the bound
    monkeypatch.setattr(worker, "MAX_PART_BYTES", 16)
    with Client(running_worker, family="AF_UNIX") as conn:
        conn.send_bytes(json.dumps({"groups": ["arrays"]}).encode())
        conn.send_bytes(b"x" * 64)
        assert "past 16 bytes" in json.loads(conn.recv_bytes())["error"]
    monkeypatch.setattr(worker, "MAX_PART_BYTES", 4 << 30)
    # 4: and a real request is still answered
    req = Request("train", 1, 1, {}, {}, arrays={"a": np.zeros(3, np.float32)})
    reply = worker.ask(running_worker, req)
    assert reply.client_id == "c0" and reply.metrics == {"n": 1} and reply.arrays["w"].tolist() == [1.0, 1.0]


def test_a_stale_socket_is_replaced_and_sigterm_removes_the_socket(tmp_path):
    path = tmp_path / "w.sock"
    code = ("import sys; from fedvlm.flower import worker; worker.serve(sys.argv[1])")
    first = subprocess.Popen([sys.executable, "-c", code, str(path)])
    while not path.exists():
        time.sleep(0.05)
    first.kill()  # SIGKILL: the socket stays behind
    first.wait()
    assert path.exists()
    second = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline, live = time.monotonic() + 120, False  # (importing the worker is slow on a loaded machine)
    while not live and time.monotonic() < deadline:  # the stale socket replaced by a live one
        try:
            Client(str(path), family="AF_UNIX").close()
            live = True
        except OSError:
            time.sleep(0.1)
    assert live, "the second worker never replaced the stale socket"
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(FedvlmError, match="is not a stale fedvlm worker socket"):
        worker.serve(str(path), 0)


def test_nothing_in_the_package_unpickles():
    """No pickle on the wire or on disk: no pickle module, no torch.load without
    weights_only=True, no numpy load with allow_pickle, no multiprocessing send/recv."""
    found = []
    for path in sorted(Path(fedvlm.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") for n in names):
                    found.append(f"{where} imports a pickler")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                kw = {k.arg: k.value for k in node.keywords}
                if node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch":
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        found.append(f"{where} torch.load without weights_only=True")
                if node.func.attr in ("load", "loads") and getattr(node.func.value, "id", "") in ("np", "numpy"):
                    if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                        found.append(f"{where} numpy load with allow_pickle")
                if node.func.attr in ("send", "recv") and getattr(node.func.value, "id", "") == "conn":
                    found.append(f"{where} multiprocessing's pickling {node.func.attr}")
    assert found == []


def _job(tmp_path):
    from fedvlm.config import config_text, load_config
    from tiny import TINY_RUN

    return config_text(load_config(None, [*TINY_RUN, f"run.output_dir={tmp_path}"]))


def test_a_node_takes_the_job_from_the_message_and_its_paths_from_its_own_config(tmp_path):
    from fedvlm.errors import ModelError
    from fedvlm.flower.node_handler import SetupError

    node = {"state-dir": str(tmp_path / "state"), "partition-id": 1, "num-partitions": 2}
    # the run config names a YAML file the node does not have: it is never read
    run_config = {"config": str(tmp_path / "nowhere.yaml"), "run_dir": str(tmp_path / "run")}
    reply = NodeHandler().handle(Request("query", 1, 7, run_config, node, state_key="k", job=_job(tmp_path)))
    assert reply.client_id == "1" and reply.metrics["train_size"] > 0
    # the node's own model-path wins over the job's model.path
    own = {**node, "model-path": str(tmp_path / "the-nodes-model")}
    with pytest.raises(SetupError, match="^client 1 failed to set up: .*the-nodes-model") as failed:
        NodeHandler().handle(Request("query", 2, 7, run_config, own, state_key="k", job=_job(tmp_path)))
    assert isinstance(failed.value.__cause__, ModelError)
    with pytest.raises(ValueError, match="sent no job"):
        NodeHandler().handle(Request("query", 3, 7, run_config, node, state_key="k"))


def test_a_node_that_fails_to_set_up_is_named_as_its_owner_calls_it(tmp_path, monkeypatch):
    """The server's line names the client the node calls itself (its client-id, data file or
    partition), not only Flower's numeric node id."""
    from types import SimpleNamespace

    from fedvlm.errors import FedvlmError
    from fedvlm.flower import server_app
    from fedvlm.flower.node_handler import SetupError

    own = {"state-dir": str(tmp_path / "s"), "data-path": str(tmp_path / "ward-b.jsonl")}
    with pytest.raises(SetupError) as failed:
        NodeHandler().handle(Request("query", 1, 5, {}, own, state_key="k", job=_job(tmp_path)))
    reason = ("Traceback (most recent call last):\n  File \"node_handler.py\", line 50, in node\n"
              f"fedvlm.flower.node_handler.SetupError: {failed.value}\n")
    reply = SimpleNamespace(has_error=lambda: True, error=SimpleNamespace(reason=reason),
                            metadata=SimpleNamespace(src_node_id=831942))
    grid = SimpleNamespace(get_node_ids=lambda: [831942])
    monkeypatch.setattr(server_app, "push", lambda grid, messages, timeout: lambda: [reply])
    monkeypatch.setattr(server_app, "Message", lambda *args, **kwargs: None)  # Flower's needs a live run
    with pytest.raises(FedvlmError) as line:
        server_app.discover(grid, 1, "k", _job(tmp_path))
    assert str(line.value).startswith("client ward-b failed to set up: node config: 'data-path' ")
    assert str(line.value).endswith("does not exist (node id 831942)")
