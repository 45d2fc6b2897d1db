"""Run a tiny federated job on a model directory and check what every family must satisfy."""

import json
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file

from tiny import TINY_RUN
from fedvlm.config import load_config
from fedvlm.models.adapter import set_adapter_state
from fedvlm.models.load import load_base
from fedvlm.engine.simulate import run_simulation

TEXT_DATA = ["data.source=crowdflower", "data.max_length=32", "eval.max_new_tokens=3"]


def run_tiny(tmp_path: Path, model_path, data: list[str], *overrides: str):
    """A 2-client, 2-round job (tests/tiny.py) on the model at ``model_path``."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    cfg = load_config(None, [*TINY_RUN, f"model.path={model_path}", *data, *overrides])
    fed = run_simulation(cfg, run_dir)
    return cfg, fed, run_dir


def outputs(model, batch: dict) -> torch.Tensor:
    """The tensor a forward pass is judged by: the logits, or for BLIP VQA (which returns
    none) the answer decoder's loss."""
    with torch.no_grad():
        out = model(**batch)
    for name in ("logits", "loss"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise AssertionError(f"no logits in {type(out).__name__}")


def check_run(cfg, fed, run_dir: Path) -> dict:
    """Every trained array changed, no base weight did, the final adapter loads in stock
    peft and reproduces fedvlm's outputs, and every round was evaluated."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    for r in records:
        assert 0 <= r["eval"]["accuracy"] <= 1 and r["eval"]["num_examples"] == cfg.data.pooled_test_size
    final_dir = run_dir / "adapters" / "final"
    final = load_file(str(final_dir / "adapter_model.safetensors"))
    assert final.keys() == fed.initial_adapter.keys()
    trained = {k for r in (1, 2) for k in fed.plan.trained(final, r)}
    assert trained, "nothing trained"
    changed = {k for k in final if not np.array_equal(final[k], fed.initial_adapter[k])}
    assert changed == trained, (sorted(trained - changed)[:3], sorted(changed - trained)[:3])

    path = fed.model.peft_config["default"].base_model_name_or_path
    fresh, _, _ = load_base(
        path, family=cfg.model.family, labels=getattr(fed.task, "label_names", None), seed=cfg.run.seed
    )
    fresh_params = dict(fresh.named_parameters())
    for name, p in fed.model.get_base_model().named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(p, fresh_params[key]), f"frozen weight changed: {name}"

    set_adapter_state(fed.model, final)
    fed.model.eval()
    batch = fed.task.training_batch(fed.test_ds[fed.pooled_test[:4]])
    stock = PeftModel.from_pretrained(fresh, str(final_dir)).eval()
    ours, theirs = outputs(fed.model, batch), outputs(stock, batch)
    assert torch.equal(ours, theirs)
    with stock.disable_adapter():
        assert not torch.allclose(outputs(stock, batch), theirs), "the adapter changes nothing"
    return {"records": records, "final": final}


def check_4bit(tmp_path: Path, model_path, data: list[str]) -> None:
    """One round on the model loaded in 4-bit NF4: its linears are quantized and LoRA (and
    any connector or head) trains on top."""
    import bitsandbytes as bnb

    cfg, fed, run_dir = run_tiny(tmp_path, model_path, data, "model.quantization=4bit", "federated.rounds=1")
    quantized = [m for m in fed.model.get_base_model().modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized, "nothing was quantized"
    final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
    changed = {k for k in final if not np.array_equal(final[k], fed.initial_adapter[k])}
    assert changed == set(fed.plan.trained(final, 1))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(c["loss"]) for c in records[1]["clients"].values())


def check_half(cfg, fed, run_dir: Path, dtype: torch.dtype = torch.bfloat16) -> dict:
    """A run over a 16-bit base: the base stays 16-bit and frozen, every trained array is
    float32 in the model, on the wire and in the files, every one of them changed, the
    losses are finite, and stock peft loads the adapter onto a fresh 16-bit base with
    outputs that match fedvlm's to 16-bit rounding."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(cfg.federated.rounds + 1))
    assert all(np.isfinite(c["loss"]) for r in records[1:] for c in r["clients"].values())
    final_dir = run_dir / "adapters" / "final"
    final = load_file(str(final_dir / "adapter_model.safetensors"))
    assert final.keys() == fed.initial_adapter.keys()
    assert {a.dtype for a in final.values()} == {np.dtype(np.float32)}
    assert {a.dtype for a in fed.initial_adapter.values()} == {np.dtype(np.float32)}
    trained = {k for r in range(1, cfg.federated.rounds + 1) for k in fed.plan.trained(final, r)}
    changed = {k for k in final if not np.array_equal(final[k], fed.initial_adapter[k])}
    assert trained and changed == trained, (sorted(trained - changed)[:3], sorted(changed - trained)[:3])

    adapter_params = {n for n, _ in fed.model.named_parameters() if ".lora_" in n or ".modules_to_save." in n}
    for name, p in fed.model.named_parameters():
        assert p.dtype == (torch.float32 if name in adapter_params else dtype), name

    path = fed.model.peft_config["default"].base_model_name_or_path
    fresh, _, _ = load_base(path, cfg.model.dtype, family=cfg.model.family,
                            labels=getattr(fed.task, "label_names", None), seed=cfg.run.seed)
    fresh_params = dict(fresh.named_parameters())
    for name, p in fed.model.get_base_model().named_parameters():
        if name.replace(".base_layer", "").replace(".original_module", "") in fresh_params and name not in adapter_params:
            assert torch.equal(p, fresh_params[name.replace(".base_layer", "").replace(".original_module", "")]), name

    set_adapter_state(fed.model, final)
    fed.model.eval()
    batch = fed.task.training_batch(fed.test_ds[fed.pooled_test[:4]])
    batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    stock = PeftModel.from_pretrained(fresh, str(final_dir)).eval()
    ours, theirs = outputs(fed.model, batch).float(), outputs(stock, batch).float()
    assert torch.isfinite(ours).all()
    # stock peft keeps connector/head copies in the base's dtype: equal to 16-bit rounding
    assert torch.allclose(ours, theirs, rtol=0.05, atol=0.05 * float(theirs.abs().max())), float((ours - theirs).abs().max())
    if theirs.dim() > 0:  # logits (BLIP VQA's scalar loss moves less than 16-bit rounding in 2 rounds)
        with stock.disable_adapter():
            assert not torch.allclose(outputs(stock, batch).float(), theirs), "the adapter changes nothing"
    return {"records": records, "final": final}
