"""fedvlm on Flower: the simulation runtime gives the in-process simulator's results, and
the server's side of Flower leaves failed or late clients out of a round."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fedvlm.client import RoundConfig
from fedvlm.config import load_config
from fedvlm.errors import ConfigError
from fedvlm.flower import server_app
from fedvlm.flower.records import pack
from fedvlm.flower.simulation import client_resources, federation_config
from tiny import ONE_ACTOR, TINY_RUN


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_flower_simulation_reproduces_the_in_process_run(tmp_path, monkeypatch):
    """FLoRA over a bfloat16 base: each node applies the merged factors the server sends
    (round 2's download is larger). (SCAFFOLD's node state: the deployment test;
    FedAvg's path under FedAdam with DP and client sampling, and FedSA-LoRA's personalized
    exports: tests/algorithms/test_dp_fedavg.py;
    under the median with faults and attacks: tests/runners/test_faults.py.)"""
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    common = [*TINY_RUN, "federated.aggregation=flora", "model.dtype=bfloat16", f"run.output_dir={tmp_path}"]
    assert main(["run", *common, "run.name=inproc"]) == 0
    assert main(["run", *common, "run.name=flower", "run.engine=flower-sim", ONE_ACTOR]) == 0
    ours, theirs = tmp_path / "flower", tmp_path / "inproc"
    final = "adapters/final/adapter_model.safetensors"
    assert (ours / final).read_bytes() == (theirs / final).read_bytes()
    flower, inproc = _metrics(ours), _metrics(theirs)
    assert [r["eval"] for r in flower] == [r["eval"] for r in inproc]
    for a, b in zip(flower[1:], inproc[1:]):
        assert {c: m["loss"] for c, m in a["clients"].items()} == {c: m["loss"] for c, m in b["clients"].items()}
        assert (a["bytes_up"], a["bytes_down"]) == (b["bytes_up"], b["bytes_down"])
        # a node is set up once per Ray actor that serves it (one here), not once per
        # message (six messages per node in this run)
        assert all(m["node_loads"] == 1 for m in a["clients"].values())
    # round 2's FLoRA clients were sent round 1's merged factors and trained on that base
    assert flower[2]["bytes_down"] > flower[1]["bytes_down"]


def test_each_virtual_client_reserves_what_the_machine_has(monkeypatch):
    def cfg(*overrides):
        return load_config(None, ["run.engine=flower-sim", "partition.num_clients=3", *overrides])

    # by default one CPU each, and one GPU each where CUDA sees one (Ray hides the GPUs from a
    # client that reserves none)
    assert client_resources(cfg(), cpus=16, gpus=0) == (1, 0.0)
    assert client_resources(cfg(), cpus=16, gpus=2) == (1, 1.0)
    assert client_resources(cfg("run.flower_client_gpus=0.25", "run.flower_client_cpus=4"), cpus=16, gpus=1) == (4, 0.25)
    assert client_resources(cfg("run.flower_client_gpus=0"), cpus=16, gpus=1) == (1, 0.0)
    # more than exists would leave Ray waiting forever: one line instead
    with pytest.raises(ConfigError, match=r"^config key 'run.flower_client_gpus': 1 GPUs per client, but CUDA sees 0"):
        client_resources(cfg("run.flower_client_gpus=1"), cpus=16, gpus=0)
    with pytest.raises(ConfigError, match=r"^config key 'run.flower_client_cpus': 32 CPUs per client, but this machine has 16"):
        client_resources(cfg("run.flower_client_cpus=32"), cpus=16, gpus=0)
    with pytest.raises(ConfigError, match=r"^config key 'run.flower_client_cpus': expected a positive"):
        cfg("run.flower_client_cpus=0")
    with pytest.raises(ConfigError, match=r"^config key 'run.flower_client_gpus': expected 0 or more"):
        cfg("run.flower_client_gpus=-1")
    # what `flwr run` is told, on a machine without a GPU
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert federation_config(cfg("run.flower_client_cpus=1")) == (
        "num-supernodes=3 client-resources-num-cpus=1 client-resources-num-gpus=0")


class _Grid:
    """Flower's Grid as far as FlowerClients uses it: node 11 trains, node 12 replies with
    an error, node 13 never answers."""

    def push_messages(self, messages):
        self.sent = {str(i): m for i, m in enumerate(messages)}
        return list(self.sent)

    def pull_messages(self, message_ids):
        replies = []
        for mid in message_ids:
            node = self.sent[mid].dst_node_id
            meta = SimpleNamespace(src_node_id=node, reply_to_message_id=mid)
            if node == 11:
                content = pack({"w": np.ones(2, np.float32)}, {}, client={"client_id": "a"},
                               metrics={"train_size": 5, "bytes_up": 8, "bytes_down": 8})
                replies.append(SimpleNamespace(metadata=meta, has_error=lambda: False, content=content))
            elif node == 12:  # an error Flower makes for a node may name another source node
                meta = SimpleNamespace(src_node_id=0, reply_to_message_id=mid)
                replies.append(SimpleNamespace(metadata=meta, has_error=lambda: True,
                                               error=SimpleNamespace(reason="CUDA out of memory")))
        return replies


@pytest.fixture
def plain_messages(monkeypatch):
    # Flower's Message needs a running Flower task; the fake grid only reads these fields
    monkeypatch.setattr(server_app, "Message", lambda content, dst_node_id, message_type: SimpleNamespace(
        content=content, dst_node_id=dst_node_id, message_type=message_type))


def _config():
    return RoundConfig(round=1, seed=0, rounds_done=0, schedule_rounds=1, local_steps=1, local_epochs=0.0,
                       batch_size=1, grad_accum=1, lr=0.1, warmup_steps=0, schedule="constant",
                       weight_decay=0.0, max_grad_norm=0.0, rank=8, full_rank=8)


def test_failed_and_late_clients_are_left_out_and_named(plain_messages):
    clients = server_app.FlowerClients(_Grid(), {"a": 11, "b": 12, "c": 13}, timeout=0.5, min_clients=1)
    payload = {"w": np.zeros(2, np.float32)}
    updates, failed = clients.train({cid: (payload, {}, _config()) for cid in "abc"}, 1)
    assert [u.client_id for u in updates] == ["a"] and updates[0].num_examples == 5
    assert updates[0].state["w"].tolist() == [1.0, 1.0]
    assert failed == {"b": "error: CUDA out of memory", "c": "no reply before the round deadline"}


def test_a_flower_run_extended_with_resume_matches_the_in_process_one(tmp_path, monkeypatch):
    """``--resume`` continues a flower-sim run from its checkpoint on Flower again (here one
    more round), exactly as the in-process simulator continues its own. FedALT: each node's
    own LoRA and mixer come back from its store, and the personalized exports (own adapter,
    rest of world, mixer) match byte for byte."""
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    common = [*TINY_RUN, "federated.aggregation=fedalt", "federated.rounds=1", f"run.output_dir={tmp_path}"]
    for name, engine in (("inproc", "simulator"), ("flower", "flower-sim")):
        assert main(["run", *common, f"run.name={name}", f"run.engine={engine}"]) == 0
        assert main(["run", "--resume", str(tmp_path / name), "federated.rounds=2"]) == 0
    ours, theirs = tmp_path / "flower", tmp_path / "inproc"
    files = sorted(p.relative_to(theirs) for p in (theirs / "adapters").rglob("*.safetensors"))
    assert {str(f) for f in files} >= {"adapters/final/adapter_model.safetensors"} | {
        f"adapters/personalized/{c}/fedalt/{n}.safetensors" for c in "01" for n in ("rest_of_world", "mixer")}
    for f in files:
        assert (ours / f).read_bytes() == (theirs / f).read_bytes(), f
    flower, inproc = _metrics(ours), _metrics(theirs)
    assert [r["round"] for r in flower] == [0, 1, 2]
    assert [r["eval"] for r in flower] == [r["eval"] for r in inproc]
