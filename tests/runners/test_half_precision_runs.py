"""A bfloat16 base end to end on the embedded model: every client side (hooks, key plans,
layers, merged bases, rank masks) and a server optimizer train float32 arrays, byte counts
are those of float32 arrays, a killed run resumes to the same bytes, and the saved adapter
evaluates as the run did and merges. (Flower's simulation in bfloat16:
tests/runners/test_flower.py.)"""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedvlm.cli import main
from fedvlm.config import load_config
from fedvlm.engine.simulate import run_simulation
from tiny import TINY_RUN

BF16 = [*TINY_RUN, "model.dtype=bfloat16"]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final(run_dir):
    return run_dir / "adapters" / "final" / "adapter_model.safetensors"


@pytest.mark.parametrize(
    "settings",
    [
        ["federated.strategy=scaffold"],
        ["federated.strategy=fedprox", "federated.mu=0.01"],
        ["federated.strategy=fedadam"],
        ["federated.aggregation=svd", "federated.server_rank=4"],
        ["federated.aggregation=ffa"],
        ["federated.aggregation=fedsa"],
        ["federated.aggregation=fedalt"],
        ["federated.aggregation=flora"],
        ["federated.aggregation=fedex"],
        ["federated.compression=int8"],
        ["lora.client_ranks={'1': 4}"],
        ["lora.tuning=two_stage", "federated.rounds=2"],
    ],
    ids=lambda s: s[0].split("=")[1].strip("{}'").replace(": ", "-"),
)
def test_every_strategy_and_variant_trains_over_a_bfloat16_base(tmp_path, settings):
    cfg = load_config(None, [*BF16, "federated.rounds=1", *settings])
    fed = run_simulation(cfg, tmp_path)
    records = _records(tmp_path)
    clients = records[-1]["clients"]
    assert clients and all(np.isfinite(c["loss"]) for c in clients.values())
    final = load_file(str(_final(tmp_path)))
    assert {a.dtype for a in final.values()} == {np.dtype(np.float32)}
    assert any(not np.array_equal(final[k], fed.initial_adapter[k]) for k in fed.initial_adapter if k in final)
    if cfg.federated.compression == "none" and not cfg.lora.client_ranks:
        # what travels is float32: 4 bytes an element of every exchanged array, both ways
        exchanged = fed.plan.exchanged(fed.initial_adapter, cfg.federated.rounds)
        per_client = sum(fed.initial_adapter[k].size * 4 for k in exchanged)
        # (SCAFFOLD sends its control-variate delta too, the same size again)
        expected = per_client * (2 if cfg.federated.strategy == "scaffold" else 1)
        assert all(c["bytes_up"] == expected for c in clients.values())


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    assert main(["run", *BF16, f"run.output_dir={root}", "run.name=done"]) == 0
    return root, root / "done"


def test_a_bfloat16_run_resumed_after_round_one_ends_with_the_same_bytes(tmp_path, bf16_run):
    root, done = bf16_run
    assert main(["run", *BF16, "federated.rounds=1", f"run.output_dir={tmp_path}", "run.name=cut"]) == 0
    assert main(["run", "--resume", str(tmp_path / "cut"), "federated.rounds=2"]) == 0
    assert _final(tmp_path / "cut").read_bytes() == _final(done).read_bytes()


def test_the_saved_bfloat16_adapter_evaluates_as_the_run_logged(bf16_run, capsys):
    root, done = bf16_run
    assert main(["eval", str(done / "adapters" / "final"), "--out", str(root / "eval.json")]) == 0
    result = json.loads((root / "eval.json").read_text())
    logged = _records(done)[-1]["eval"]
    assert result["accuracy"] == logged["accuracy"] and result["by_type"] == logged["by_type"]


def test_merging_bfloat16_runs_adapters_gives_float32_arrays(bf16_run, tmp_path):
    root, done = bf16_run
    other = tmp_path / "other"
    shutil.copytree(done / "adapters" / "round_0001", other)
    out = tmp_path / "merged"
    assert main(["merge", str(done / "adapters" / "final"), str(other), "--method", "svd", "--out", str(out)]) == 0
    merged = load_file(str(out / "adapter_model.safetensors"))
    assert {a.dtype for a in merged.values()} == {np.dtype(np.float32)}
    assert main(["eval", str(out), "--out", str(tmp_path / "m.json")]) == 0
