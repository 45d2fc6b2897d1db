"""End to end on the embedded model: a real 2-client, 2-round job through the simulator."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tiny import TINY_RUN
from fedvlm.config import load_config
from fedvlm.models.adapter import get_adapter_state, set_adapter_state
from fedvlm.engine import rundir
from fedvlm.engine.simulate import run_simulation


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, TINY_RUN)
    fed = run_simulation(cfg, run_dir)
    return cfg, fed, run_dir


def test_run_writes_metrics_adapters_and_checkpoint(finished_run):
    cfg, fed, run_dir = finished_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    for r in records[1:]:
        assert set(r["clients"]) == {"0", "1"}
        for c in r["clients"].values():
            assert c["examples"] == 2 * 8 and c["steps"] == 2 and np.isfinite(c["loss"])
        expected_bytes = sum(a.nbytes for a in fed.initial_adapter.values())
        assert r["bytes_down"] == r["bytes_up"] == 2 * expected_bytes
        assert 0 <= r["eval"]["accuracy"] <= 1 and r["eval"]["num_examples"] == 24
        assert set(r["eval"]["clients"]) == {"0", "1"}
    assert (run_dir / "config.yaml").exists()
    for name in ("final", "round_0001", "round_0002"):
        assert (run_dir / "adapters" / name / "adapter_model.safetensors").exists()
    assert not (run_dir / "adapters" / "best").exists()  # no round picked on the test set
    state, _, extra = rundir.load_checkpoint(run_dir)
    assert state.round == 2
    final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
    assert final.keys() == state.global_state.keys()
    assert all(np.array_equal(final[k], state.global_state[k]) for k in final)


def test_training_changes_every_trainable_tensor_and_no_frozen_one(finished_run):
    cfg, fed, run_dir = finished_run
    final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
    unchanged = [k for k in final if np.array_equal(final[k], fed.initial_adapter[k])]
    assert unchanged == []
    base = fed.model.get_base_model()
    from transformers import AutoModelForImageTextToText

    fresh = AutoModelForImageTextToText.from_pretrained(fed.model.peft_config["default"].base_model_name_or_path)
    fresh_params = dict(fresh.named_parameters())
    for name, p in base.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(p, fresh_params[key]), name


def test_stock_peft_reproduces_fedvlm_logits(finished_run):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText


    cfg, fed, run_dir = finished_run
    final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
    set_adapter_state(fed.model, final)
    rows = fed.test_ds[fed.pooled_test[:4]]
    batch = fed.task.training_batch(rows)
    path = fed.model.peft_config["default"].base_model_name_or_path
    stock = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(path), str(run_dir / "adapters" / "final"))
    stock.eval()
    fed.model.eval()
    with torch.no_grad():
        ours = fed.model(**batch).logits
        theirs = stock(**batch).logits
    assert torch.equal(ours, theirs)
    # The adapter must matter: the base alone gives other logits.
    with torch.no_grad(), stock.disable_adapter():
        assert not torch.allclose(stock(**batch).logits, theirs)


def test_adapter_state_roundtrips_exactly(finished_run):
    _, fed, _ = finished_run
    rng = np.random.default_rng(0)
    noisy = {k: (v + rng.normal(size=v.shape)).astype(v.dtype) for k, v in fed.initial_adapter.items()}
    set_adapter_state(fed.model, noisy)
    back = get_adapter_state(fed.model)
    assert all(np.array_equal(back[k], noisy[k]) for k in noisy)


def _fedvlm(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fedvlm.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_killed_mid_round_resumes_bit_identical(tmp_path):
    """SIGKILL at whatever moment of round 2 the machine gives (the processes' own files
    half written, SCAFFOLD's client control variates among them); the resumed run's adapter
    and server control variate are the uninterrupted run's, byte for byte."""
    common = [*TINY_RUN, "federated.rounds=3", f"run.output_dir={tmp_path}", "federated.strategy=scaffold"]
    straight = _fedvlm("run", *common, "run.name=straight", cwd=tmp_path)
    killed = _fedvlm("run", *common, "run.name=killed", cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and (rundir.latest_round(tmp_path / "killed") or 0) < 1:
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert rundir.latest_round(tmp_path / "killed") == 1, "the kill came too late"
    assert not (tmp_path / "killed" / "adapters" / "final").exists()

    resumed = _fedvlm("run", "--resume", str(tmp_path / "killed"), cwd=tmp_path)
    for proc in (straight, resumed):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    _assert_same_run(tmp_path / "straight", tmp_path / "killed")
    assert len(list((tmp_path / "killed" / "clients").rglob("scaffold_c.*"))) >= 2
    c_a = (tmp_path / "straight" / "checkpoint" / "round_0003" / "buffer.c.safetensors").read_bytes()
    assert c_a == (tmp_path / "killed" / "checkpoint" / "round_0003" / "buffer.c.safetensors").read_bytes()


def _assert_same_run(straight, resumed):
    final = "adapters/final/adapter_model.safetensors"
    assert (straight / final).read_bytes() == (resumed / final).read_bytes()
    files = sorted(p.relative_to(straight) for p in (straight / "adapters").rglob("*.safetensors"))
    assert all((straight / f).read_bytes() == (resumed / f).read_bytes() for f in files)
    rounds = [json.loads(l)["round"] for l in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2, 3]


VARIANTS = {
    "fedadam": ["federated.strategy=fedadam"],
    "flora": ["federated.aggregation=flora"],
    "two_stage": ["federated.strategy=fedadam", "lora.tuning=two_stage", "lora.two_stage_rounds=1"],
    "fedalt": ["federated.aggregation=fedalt"],
}
STOP_IN = {"two_stage": 3}  # after the switch: the frozen connector must come back from the checkpoint


@pytest.mark.parametrize("strategy", list(VARIANTS))
def test_a_run_interrupted_mid_round_resumes_bit_identical(tmp_path, monkeypatch, strategy):
    """Ctrl-C while the second client of round 2 trains (the first one's round already in its
    store), then ``--resume``: the same adapters as the uninterrupted run, byte for byte.
    FedAdam checks the server moments (and the FedAvg path underneath); FLoRA the base
    weights rebuilt from the checkpointed merge; two-stage the switch from the connector
    stage to the LoRA stage right before the stop; FedALT each client's own LoRA, mixer and
    rest of world back from its store."""
    from fedvlm.cli import main
    from fedvlm.engine import simulate

    monkeypatch.chdir(tmp_path)
    common = ["run", *TINY_RUN, "federated.rounds=3", f"run.output_dir={tmp_path}", *VARIANTS[strategy]]
    assert main([*common, "run.name=straight"]) == 0
    train, calls = simulate.client_train, []

    def interrupted(payload, extras, config, *args, **kwargs):
        calls.append(config.round)
        if calls.count(STOP_IN.get(strategy, 2)) == 2:  # two clients a round
            raise KeyboardInterrupt
        return train(payload, extras, config, *args, **kwargs)

    monkeypatch.setattr(simulate, "client_train", interrupted)
    assert main([*common, "run.name=stopped"]) == 130
    monkeypatch.setattr(simulate, "client_train", train)
    assert rundir.latest_round(tmp_path / "stopped") == STOP_IN.get(strategy, 2) - 1
    assert main(["run", "--resume", str(tmp_path / "stopped")]) == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "stopped")
    if strategy == "fedalt":
        files = list((tmp_path / "straight" / "adapters" / "personalized").rglob("*.safetensors"))
        assert len(files) == 2 * 3  # two clients: own adapter, rest of world, mixer
