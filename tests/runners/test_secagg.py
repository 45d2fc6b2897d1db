"""SecAgg+ through Flower's own protocol: the server learns the weighted mean within the
quantisation bound, clients that fail or send a bad update drop out and are named, and
settings it cannot run are one line."""

import copy
import uuid

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict

from fedvlm.algorithms.base import OptionError
from fedvlm.algorithms.secaggplus.options import SecAggPlusOptions, quantization_bound
from fedvlm.config import load_config
from fedvlm.errors import ConfigError
from fedvlm.flower.messages import Reply
from fedvlm.flower.secagg import HALTED, read_fitins, secure_aggregation_mod, secure_reply, train_securely

@pytest.fixture(autouse=True)
def flower_task(monkeypatch):
    """What Flower's runtime sets in a ServerApp's process (a Message needs its run id)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


SHAPES = {"layer.lora_A.weight": (4, 6), "layer.lora_B.weight": (6, 4), "head.bias": (3,)}


class _LocalGrid:
    """A Grid whose nodes answer at once in this process: each node runs the ClientApp's
    mod chain (``secure_aggregation_mod`` then the train handler) on its own Context, as
    a SuperNode keeps one per run."""

    def __init__(self, train):
        self.train, self.contexts, self.replies = train, {}, {}

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            msg = copy.deepcopy(msg)  # each node gets its own copy, as over the wire
            node = msg.metadata.dst_node_id
            context = self.contexts.setdefault(node, Context(run_id=1, node_id=node, node_config={}, state=RecordDict(),
                                                             run_config={}))
            try:
                reply = secure_aggregation_mod(msg, context, self.train)
            except Exception as e:  # a ClientApp's exception reaches the server as an error reply
                reply = Message(Error(code=0, reason=f"{type(e).__name__}: {e}"), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            self.replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(mid) for mid in list(message_ids) if mid in self.replies]


def _updates(seed: int, clients: list[str]) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {cid: {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in SHAPES.items()} for cid in clients}


def _federation(updates, sizes, bad=None):
    """The handler every node runs: client ``cid`` trains to ``updates[cid]``; ``bad``
    maps clients to what goes wrong with them."""
    bad = bad or {}
    node_of = {cid: 100 + i for i, cid in enumerate(updates)}
    client_of = {n: c for c, n in node_of.items()}

    def train(msg, context):
        arrays, config, options, run, terms = read_fitins(msg.content)
        cid = client_of[msg.metadata.dst_node_id]
        assert config["round"] == 1 and run["job"] == "yaml"  # fedvlm's message came through
        update = {k: v.copy() for k, v in updates[cid].items()}
        if bad.get(cid) == "raise":
            raise RuntimeError(f"client {cid} ran out of memory")
        if bad.get(cid) == "nan":
            update["head.bias"][0] = np.nan
        if bad.get(cid) == "huge":
            update["head.bias"][0] = 50.0
        reply = Reply(cid, {"train_size": sizes[cid], "loss": 0.5, "bytes_up": 1}, update)
        return Message(secure_reply(reply, arrays, terms), reply_to=msg)

    return node_of, train


def _run(updates, sizes, bad=None, options=SecAggPlusOptions(), uniform=False):
    node_of, train = _federation(updates, sizes, bad)
    sent = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    contents = {cid: (sent, {"round": 1}, {}, {"state_key": "", "job": "yaml"}) for cid in updates}
    weights = {cid: 1.0 if uniform else float(sizes[cid]) for cid in updates}
    return train_securely(_LocalGrid(train), node_of, contents, weights, options, None, 1, "late")


def _weighted_mean(updates, weights):
    total = sum(weights.values())
    return {k: sum(weights[c] * updates[c][k].astype(np.float64) for c in weights) / total for k in SHAPES}


def test_the_server_learns_the_weighted_mean_within_the_quantisation_bound():
    clients = ["0", "1", "2", "3"]
    updates, sizes = _updates(0, clients), {"0": 40, "1": 10, "2": 25, "3": 25}
    result, failed = _run(updates, sizes)
    assert failed == {}
    assert [u.client_id for u in result] == clients
    expected = _weighted_mean(updates, {c: sizes[c] for c in clients})
    bound = quantization_bound(SecAggPlusOptions(), [40, 10, 25, 25])
    # by hand: 4 clients, step 16 / 2**22, ratios 1, 0.25, 0.625, 0.625 (sum 2.5); plus C / (Q r_min)
    assert bound == pytest.approx(4 * 16 / 2**22 / 2.5 + 8 / (2**22 * 0.25))
    for update in result:
        assert update.num_examples == sizes[update.client_id] and update.metrics["loss"] == 0.5
        assert update.metrics["bytes_up"] > 8 * sum(np.prod(s) for s in SHAPES.values())  # the masked int64 vector
        for k in SHAPES:
            assert update.state[k].dtype == np.float32
            assert np.abs(update.state[k] - expected[k]).max() <= bound
    # the server did not get any client's own update: the mean differs from each one
    assert all(np.abs(result[0].state["head.bias"] - updates[c]["head.bias"]).max() > 1e-3 for c in clients)


def test_uniform_weighting_gives_the_plain_mean():
    clients = ["0", "1", "2"]
    updates = _updates(1, clients)
    result, failed = _run(updates, {"0": 40, "1": 10, "2": 25}, uniform=True)
    expected = _weighted_mean(updates, {c: 1.0 for c in clients})
    bound = quantization_bound(SecAggPlusOptions(), [1.0, 1.0, 1.0])
    assert bound == pytest.approx(16 / 2**22 + 8 / 2**22)
    assert not failed and all(np.abs(result[0].state[k] - expected[k]).max() <= bound for k in SHAPES)


def test_failing_and_bad_clients_drop_out_named_and_the_rest_are_summed():
    clients = ["0", "1", "2", "3", "4", "5"]
    updates, sizes = _updates(2, clients), {c: 20 for c in clients}
    bad = {"1": "raise", "3": "nan", "5": "huge"}
    result, failed = _run(updates, sizes, bad)
    assert [u.client_id for u in result] == ["0", "2", "4"]
    assert set(failed) == {"1", "3", "5"}
    assert "client 1 ran out of memory" in failed["1"]
    assert "client 3: update head.bias is not finite" in failed["3"]
    assert "beyond federated.secagg_clipping_range (8)" in failed["5"]
    expected = _weighted_mean(updates, {c: 20 for c in ("0", "2", "4")})
    bound = quantization_bound(SecAggPlusOptions(), [20, 20, 20])
    assert all(np.abs(result[0].state[k] - expected[k]).max() <= bound for k in SHAPES)


def test_too_many_dropouts_stop_the_round_with_every_client_named():
    clients = ["0", "1", "2", "3"]
    updates, sizes = _updates(3, clients), {c: 20 for c in clients}
    options = SecAggPlusOptions(secagg_reconstruction_threshold=1.0)  # every share needed: no dropout tolerated
    result, failed = _run(updates, sizes, {"2": "raise"}, options)
    assert result == []
    assert "client 2 ran out of memory" in failed["2"]
    assert failed["0"] == failed["1"] == failed["3"] == HALTED


def test_the_bound_by_hand_and_bad_options():
    options = SecAggPlusOptions(secagg_clipping_range=1.0, secagg_quantization_range=2**10, secagg_modulus_range=2**16)
    # 2 equal clients: 2 * (2 / 1024) / 2 + 1 / 1024
    assert quantization_bound(options, [5, 5]) == pytest.approx(3 / 1024)
    with pytest.raises(OptionError, match="secagg_modulus_range"):
        SecAggPlusOptions(secagg_modulus_range=3 * 2**22)
    with pytest.raises(OptionError, match="fewer than secagg_num_shares"):
        SecAggPlusOptions(secagg_num_shares=5, secagg_reconstruction_threshold=5)
    assert SecAggPlusOptions(secagg_num_shares=5, secagg_reconstruction_threshold=3).workflow_counts() == (5, 3)
    assert SecAggPlusOptions().workflow_counts() == (1.0, 0.5)


@pytest.mark.parametrize("overrides, key, says", [
    (["federated.strategy=median"], "federated.strategy", "not median"),
    (["federated.aggregation=flora"], "federated.aggregation", "FLoRA stacks"),
    (["federated.strategy=scaffold"], "federated.strategy", "control variates"),
    (["federated.compression=int8"], "federated.compression", "quantises the update itself"),
    (["federated.privacy=dp_fedavg", "federated.dp_noise_multiplier=1.0", "federated.weighting=uniform"],
     "federated.privacy", "clips each client's update on the server"),
    (["lora.client_ranks={'0': 4}"], "lora.client_ranks", "one shape"),
    (["federated.weighting=examples"], "federated.weighting", "before the round"),
    (["federated.secagg_clipping_range=0"], "federated.secagg_clipping_range", "positive"),
])
def test_settings_secure_aggregation_cannot_run_are_one_line(overrides, key, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["federated.secure_aggregation=secaggplus", *overrides])
    message = str(e.value)
    assert message.startswith(f"config key '{key}'") and says in message and "\n" not in message


def test_distributed_dp_noise_runs_under_secure_aggregation():
    cfg = load_config(None, ["federated.secure_aggregation=secaggplus", "federated.privacy=dp_fedavg",
                             "federated.weighting=uniform", "federated.dp_noise=clients", "federated.dp_noise_multiplier=1"])
    assert cfg.federated.options["dp_noise"] == "clients"


def test_the_in_process_simulator_refuses_secure_aggregation(tmp_path, capsys):
    from fedvlm.cli import main

    assert main(["run", "federated.secure_aggregation=secaggplus", f"run.output_dir={tmp_path}", "run.name=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "runs on Flower (run.engine=flower-sim or a deployment)" in err
    assert not (tmp_path / "x").exists()


def _adapter(run_dir):
    from safetensors.numpy import load_file

    return load_file(run_dir / "adapters" / "final" / "adapter_model.safetensors")


def test_secure_aggregation_on_flower_sim_gives_the_plain_adapter_within_the_bound(tmp_path, monkeypatch):
    """Three nodes on Flower's simulation runtime, node 1 raising in the round: SecAgg+
    unmasks the sum of the other two, which is the in-process simulator's plain FedAvg of
    them within the quantisation bound, and node 1 is named."""
    import json

    from fedvlm.cli import main
    from tiny import ONE_ACTOR, TINY_RUN

    monkeypatch.chdir(tmp_path)
    common = [*TINY_RUN, "partition.num_clients=3", "federated.rounds=1", f"run.output_dir={tmp_path}",
              "federated.faults=[{kind: raise, clients: [1], rounds: [1]}]"]
    assert main(["run", *common, "run.name=plain"]) == 0
    assert main(["run", *common, "run.name=secure", "run.engine=flower-sim", ONE_ACTOR, "run.report_to=[tensorboard]",
                 "federated.secure_aggregation=secaggplus"]) == 0
    plain, secure = _adapter(tmp_path / "plain"), _adapter(tmp_path / "secure")
    records = [json.loads(line) for line in (tmp_path / "secure" / "metrics.jsonl").read_text().splitlines()]
    assert set(records[1]["clients"]) == {"0", "2"}
    assert records[1]["failed"] == {"1": "error: client 1: injected fault 'raise'"}
    assert records[1]["secure_aggregation"] == "secaggplus"
    assert "**secure aggregation** (SecAgg+" in (tmp_path / "secure" / "report.md").read_text()
    # the ServerApp reports to the run's trackers as the simulator does
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "secure" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/accuracy")] == [0, 1]
    sizes = [records[1]["clients"][c]["train_size"] for c in ("0", "2")]
    bound = quantization_bound(SecAggPlusOptions(), sizes) + 1e-7  # (and float32's rounding of the result)
    gap = max(float(np.abs(secure[k].astype(np.float64) - plain[k]).max()) for k in plain)
    assert set(secure) == set(plain) and 0 < gap <= bound
