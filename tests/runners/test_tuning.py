"""Tuning strategies (FedVLMBench's F-L / F-C / F-CL / two-stage) and heterogeneous ranks:
each changes exactly the arrays it names, and exchanges exactly those, counted in bytes."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from families.harness import TEXT_DATA, run_tiny
from families.tiny_text import build_bloom
from fedvlm.config import client_ranks, load_config
from fedvlm.core.types import state_nbytes
from fedvlm.errors import ConfigError


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not np.array_equal(a[k], b[k])}


def _adapter(run_dir, name):
    return load_file(str(run_dir / "adapters" / name / "adapter_model.safetensors"))


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]


def _parts(keys):
    lora = {k for k in keys if ".lora_" in k}
    return lora, {k for k in keys if "multi_modal_projector" in k}


@pytest.mark.parametrize("tuning", ["lora", "connector", "connector_lora"])
def test_tuning_trains_and_exchanges_exactly_its_parts(tmp_path, tuning):
    cfg, fed, run_dir = run_tiny(tmp_path, "embedded", [], f"lora.tuning={tuning}")
    initial = fed.initial_adapter
    lora, connector = _parts(initial)
    assert lora  # LoRA is attached in every strategy (at B = 0 it is the identity)
    expected = {"lora": lora, "connector": connector, "connector_lora": lora | connector}[tuning]
    if tuning == "lora":
        assert connector == set()  # the connector is not even in the adapter
    assert _changed(initial, _adapter(run_dir, "final")) == expected
    for record in _records(run_dir):
        for metrics in record["clients"].values():
            sent = state_nbytes({k: initial[k] for k in expected})
            assert metrics["bytes_up"] == metrics["bytes_down"] == sent


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])
def test_two_stage_trains_the_connector_then_lora(tmp_path, strategy):
    # SCAFFOLD: the control variates follow the trained arrays from one stage to the next
    cfg, fed, run_dir = run_tiny(
        tmp_path, "embedded", [], "lora.tuning=two_stage", "lora.two_stage_rounds=1", "federated.rounds=3",
        "eval.keep_last=3", f"federated.strategy={strategy}",
    )
    initial = fed.initial_adapter
    lora, connector = _parts(initial)
    first, final = _adapter(run_dir, "round_0001"), _adapter(run_dir, "final")
    assert _changed(initial, first) == connector
    assert _changed(first, final) == lora  # the connector stays at what stage one reached
    records = _records(run_dir)
    up = [m["bytes_up"] for r in records for m in r["clients"].values()]
    down = [m["bytes_down"] for r in records for m in r["clients"].values()]
    connector_bytes = state_nbytes({k: initial[k] for k in connector})
    lora_bytes = state_nbytes({k: initial[k] for k in lora})
    control = 2 if strategy == "scaffold" else 1  # SCAFFOLD sends c down and dc up
    assert up == [control * connector_bytes] * 2 + [control * lora_bytes] * 4
    # stage two sends the frozen connector down with the LoRA payload
    assert down == [control * connector_bytes] * 2 + [control * lora_bytes + connector_bytes] * 4


def test_connector_tuning_needs_a_connector(tmp_path):
    with pytest.raises(ConfigError, match="lora.tuning"):
        run_tiny(tmp_path, build_bloom(tmp_path / "bloom"), TEXT_DATA, "lora.tuning=connector_lora")


def test_two_stage_needs_a_second_stage():
    with pytest.raises(ConfigError, match="two_stage_rounds"):
        load_config(None, ["lora.tuning=two_stage", "lora.two_stage_rounds=8", "federated.rounds=8"])


def test_rank_groups_and_client_ranks_resolve_per_client():
    cfg = load_config(
        None,
        ["partition.num_clients=4", "lora.r=8", "lora.rank_groups={2: [0, 1], 4: [2]}", "lora.client_ranks={1: 6}"],
    )
    assert client_ranks(cfg) == {"0": 2, "1": 6, "2": 4}


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora.rank_groups={2: [0], 4: [0]}", "client 0 is already in lora.rank_groups.2"),
        ("lora.rank_groups={16: [0]}", "expected a rank 1..lora.r"),
        ("lora.rank_groups={2: [7]}", "no such client 7"),
        ("lora.rank_groups={small: [0]}", "expected a rank"),
        ("lora.rank_groups={2: 0}", "expected a list"),
    ],
)
def test_bad_rank_groups_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["partition.num_clients=4", "lora.r=8", override])


def test_rank_groups_train_each_client_at_its_rank(tmp_path):
    cfg, fed, run_dir = run_tiny(tmp_path, "embedded", [], "lora.rank_groups={2: [0]}", "lora.r=4")
    for record in _records(run_dir):
        assert record["clients"]["0"]["rank"] == 2 and record["clients"]["1"]["rank"] == 4
        assert record["clients"]["0"]["bytes_up"] < record["clients"]["1"]["bytes_up"]


def test_two_stage_carries_modules_trained_in_stage_one_into_stage_two(tmp_path):
    # a module beyond the connector (here the LM's final norm) trains in both stages: the
    # second stage must start it from where the first left it, not from its initialization
    from fedvlm.core.sharing import PlannedStrategy
    from fedvlm.engine.simulate import make_strategy

    cfg, fed, run_dir = run_tiny(
        tmp_path, "embedded", [], "lora.tuning=two_stage", "lora.two_stage_rounds=1", "federated.rounds=2",
        "lora.modules_to_save=[model.language_model.norm]",
    )
    norm = [k for k in fed.initial_adapter if "language_model.norm" in k]
    stage_one = _adapter(run_dir, "round_0001")
    assert norm and _changed({k: fed.initial_adapter[k] for k in norm}, stage_one) == set(norm)
    server = PlannedStrategy(make_strategy(cfg, 2), fed.plan, fed.initial_adapter)
    previous = server.initialize()
    previous = previous.advance(1, {k: stage_one[k] for k in previous.global_state})
    assert server.begin_round(1, previous) is previous  # no new stage: nothing restarts
    state = server.begin_round(2, previous)
    assert all(np.array_equal(state.global_state[k], stage_one[k]) for k in norm)
    assert set(state.buffers["frozen"]) == _parts(fed.initial_adapter)[1]


def test_baselines_follow_the_two_stage_schedule():
    from types import SimpleNamespace

    from fedvlm.core.sharing import SharingPlan
    from fedvlm.engine.baselines import phases

    keys = {"m.multi_modal_projector.w": 0, "m.q.lora_A.weight": 0, "m.q.lora_B.weight": 0}
    cfg = load_config(None, ["lora.tuning=two_stage", "lora.two_stage_rounds=2", "federated.rounds=8"])
    fed = SimpleNamespace(plan=SharingPlan("two_stage", 2, ("multi_modal_projector",)), initial_adapter=keys)
    assert phases(cfg, fed, 40) == [(10, ["m.multi_modal_projector.w"]), (30, ["m.q.lora_A.weight", "m.q.lora_B.weight"])]
    fed.plan = SharingPlan("connector_lora", 0, ("multi_modal_projector",))
    assert phases(cfg, fed, 40) == [(40, list(keys))]
