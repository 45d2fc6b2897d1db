"""The numbers a run reports: client weights, each client's own data stream and schedule,
equal-budget baselines under client sampling, SCAFFOLD with heterogeneous ranks."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tiny import TINY_RUN
from fedvlm.config import load_config
from fedvlm.client import unit as client_module
from fedvlm.engine import simulate
from fedvlm.engine.baselines import federated_steps, run_baselines
from fedvlm.engine.simulate import run_simulation

SAMPLED = [
    *TINY_RUN,
    "partition.num_clients=4",
    "federated.rounds=3",
    "federated.fraction=0.25",
    "federated.min_clients=2",  # 2 of 4 clients a round, not round(0.25 * 4) = 1
    "partition.method=dirichlet",  # clients of different sizes
    "partition.alpha=1.0",
    "partition.label_column=question_type",
]


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    """A run with client sampling, recording what each client was told and did."""
    calls = []
    real_round, real_steps = simulate.client_train, client_module.iter_steps

    def recording_round(payload, extras, config, node, on_step=None):
        update = real_round(payload, extras, config, node, on_step)
        calls.append({"cid": node.client_id, **config.to_record(), "num_examples": update.num_examples})
        return update

    def recording_steps(*args, **kwargs):
        calls.append({"first_step": kwargs["first_step"], "num_steps": kwargs["num_steps"]})
        return real_steps(*args, **kwargs)

    run_dir = tmp_path_factory.mktemp("sampled")
    cfg = load_config(None, SAMPLED)
    mp = pytest.MonkeyPatch()
    mp.setattr(simulate, "client_train", recording_round)
    mp.setattr(client_module, "iter_steps", recording_steps)
    try:
        fed = run_simulation(cfg, run_dir)
    finally:
        mp.undo()
    return cfg, fed, run_dir, calls


def test_clients_report_their_training_set_size(sampled_run):
    _, fed, _, calls = sampled_run
    sizes = {cid: len(c.train) for cid, c in fed.clients.items()}
    assert len(set(sizes.values())) > 1  # the weights really differ
    rounds = [c for c in calls if "cid" in c]
    assert rounds and all(c["num_examples"] == sizes[c["cid"]] for c in rounds)


def test_a_client_reads_on_from_its_own_last_round(sampled_run):
    cfg, fed, run_dir, calls = sampled_run
    # calls alternate: iter_steps (inside the client round), then the round's record
    steps_calls, round_calls = calls[0::2], calls[1::2]
    seen: dict[str, int] = {}
    for s, r in zip(steps_calls, round_calls):
        assert r["rounds_done"] == seen.get(r["cid"], 0)  # its own rounds, not the global round
        assert s["first_step"] == r["rounds_done"] * cfg.train.local_steps
        assert r["schedule_rounds"] == 2  # ceil(3 rounds * 2 sampled / 4 clients)
        seen[r["cid"]] = seen.get(r["cid"], 0) + 1
    # somebody skipped a round and came back: that is where the global round would differ
    assert any(r["rounds_done"] < r["round"] - 1 for r in round_calls)


def test_baselines_get_the_steps_the_federation_ran(sampled_run):
    cfg, fed, run_dir, _ = sampled_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    ran = sum(c["steps"] for r in records for c in r["clients"].values())
    assert ran == 3 * 2 * cfg.train.local_steps  # 3 rounds x 2 clients x 2 steps = 12
    assert sum(federated_steps(cfg, fed, run_dir).values()) == ran
    assert federated_steps(cfg, fed) == federated_steps(cfg, fed, run_dir)  # replayed sampling agrees
    results = run_baselines(cfg, fed, run_dir, ["centralized"])
    saved = json.loads((run_dir / "baselines.json").read_text())["centralized"]
    assert saved["steps"] == saved["federated_steps"] == ran == results["centralized"]["steps"]


def test_scaffold_client_of_lower_rank_keeps_control_variates_within_its_rank(tmp_path):
    cfg = load_config(None, [*TINY_RUN, "federated.rounds=1", "federated.strategy=scaffold", "lora.client_ranks={0: 2}"])
    run_simulation(cfg, tmp_path)
    c0 = load_file(str(tmp_path / "clients" / "0" / "scaffold_c.round_0001.safetensors"))
    c1 = load_file(str(tmp_path / "clients" / "1" / "scaffold_c.round_0001.safetensors"))
    lora_a = [k for k in c0 if ".lora_A." in k]
    assert lora_a
    for key in lora_a:
        b_key = key.replace(".lora_A.", ".lora_B.")
        # c_i starts at 0 and outside the client's rank dc = 0, so it stays 0 there ...
        assert np.all(c0[key][2:] == 0) and np.all(c0[b_key][:, 2:] == 0)
        # ... while inside it, and for the full-rank client, it is estimated
        assert np.any(c0[key][:2] != 0) and np.any(c1[key][2:] != 0)
