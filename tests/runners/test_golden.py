"""Golden end-to-end run: a reduced default job whose per-round numbers are recorded.

A regression guard for refactors: the same config and seed must give the same client
losses and the same pooled accuracy, round by round. The values were recorded from this
job (identical with 1 and 2 torch threads); if a change is meant to alter them, say why
in its commit and record the new ones.
"""

import json

import pytest

from fedvlm.config import load_config
from fedvlm.engine.simulate import run_simulation

GOLDEN_RUN = [
    "run.progress=false",
    "run.baselines=[]",
    "data.max_train_examples=600",
    "data.pooled_test_size=48",
    "partition.num_clients=2",
    "partition.max_local_test=8",
    "federated.rounds=3",
    "train.local_steps=6",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.lr=0.004",
    "eval.batch_size=48",
]
# round -> (client -> mean training loss, correct answers of 48 on the pooled test)
GOLDEN = {
    0: ({}, 0),
    1: ({"0": 6.24153, "1": 5.808869}, 1),
    2: ({"0": 3.117879, "1": 3.868382}, 5),
    3: ({"0": 3.13746, "1": 2.78448}, 3),
}


def test_reduced_default_job_reproduces_recorded_losses_and_accuracy(tmp_path):
    run_simulation(load_config(None, GOLDEN_RUN), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(GOLDEN)
    for record in records:
        losses, correct = GOLDEN[record["round"]]
        got = {cid: stats["loss"] for cid, stats in record.get("clients", {}).items()}
        assert got == pytest.approx(losses, rel=1e-5), f"round {record['round']}"
        assert record["eval"]["num_examples"] == 48
        assert round(record["eval"]["accuracy"] * 48) == correct, f"round {record['round']}"
