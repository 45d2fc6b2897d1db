"""Every family the CI runs trains over a bfloat16 base on the CPU: float32 adapter arrays
(in the model, on the wire, in the files) over a frozen 16-bit base, an adapter stock peft
loads; and float16, autocast and the attention kernels on the embedded model."""

import pytest
import torch

from families import tiny_vision_a, tiny_vision_b
from families.harness import TEXT_DATA, check_half, run_tiny
from families.tiny_text import build_bert_cls, build_bloom, build_llama, build_roberta_cls
from fedvlm.errors import ConfigError, ModelError
from fedvlm.models.load import embedded_model_path

VLM = ["eval.max_new_tokens=3"]
FAMILIES = {
    "llava": (lambda out: embedded_model_path(), VLM),
    "phi3-llava": (tiny_vision_b.build_phi3_llava, VLM),
    "janus": (tiny_vision_b.build_janus, VLM),
    "fuyu": (tiny_vision_b.build_fuyu, VLM),
    "blip-vqa": (tiny_vision_b.build_blip_vqa, VLM),
    "idefics3": (tiny_vision_a.build_idefics3, VLM),
    "paligemma": (tiny_vision_a.build_paligemma, VLM),
    "roberta": (build_roberta_cls, TEXT_DATA),
    "bert": (build_bert_cls, TEXT_DATA),
    "bloom": (build_bloom, TEXT_DATA),
    "llama": (build_llama, TEXT_DATA),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_float32_adapters_over_a_bfloat16_base(tmp_path, name):
    build, data = FAMILIES[name]
    cfg, fed, run_dir = run_tiny(tmp_path, build(tmp_path / "model"), data, "model.dtype=bfloat16")
    check_half(cfg, fed, run_dir)


def test_float16_base_and_bf16_autocast_train_the_embedded_model(tmp_path):
    cfg, fed, run_dir = run_tiny(tmp_path / "fp16", "embedded", VLM, "model.dtype=float16", "federated.rounds=1")
    check_half(cfg, fed, run_dir, torch.float16)
    # autocast over a float32 base: the model stays float32, the matmuls run in bf16
    _, _, plain_dir = run_tiny(tmp_path / "plain", "embedded", VLM, "federated.rounds=1")
    _, fed_ac, ac_dir = run_tiny(tmp_path / "autocast", "embedded", VLM, "federated.rounds=1", "train.mixed_precision=bf16")
    assert {p.dtype for p in fed_ac.model.parameters()} == {torch.float32}
    plain, autocast = (_client_losses(d) for d in (plain_dir, ac_dir))
    # same data and seeds; only the precision of the forward differs: close, not equal
    assert plain != autocast
    assert all(abs(autocast[c] - plain[c]) < 0.02 * plain[c] for c in plain)


def _client_losses(run_dir) -> dict:
    import json

    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    return {c: m["loss"] for c, m in record["clients"].items()}


def test_fp16_autocast_scales_the_loss(tmp_path):
    from fedvlm.models.precision import grad_scaler

    assert grad_scaler(torch.device("cpu"), "fp16").get_scale() == 2.0**16
    assert not grad_scaler(torch.device("cpu"), "bf16").is_enabled()
    _, _, run_dir = run_tiny(tmp_path, "embedded", VLM, "federated.rounds=1", "train.mixed_precision=fp16")
    losses = _client_losses(run_dir)
    assert all(0 < loss < 20 for loss in losses.values())


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_the_attention_kernel_reaches_transformers(tmp_path, kernel):
    from fedvlm.models.load import load_base

    model, _, _ = load_base("embedded", attn_implementation=kernel)
    assert model.config._attn_implementation == kernel
    assert model.config.text_config._attn_implementation == kernel


def test_an_attention_kernel_that_cannot_load_is_one_line():
    from fedvlm.config import load_config
    from fedvlm.models.load import load_base

    with pytest.raises(ConfigError, match="model.attn_implementation"):
        load_config(None, ["model.attn_implementation=flash"])
    with pytest.raises(ModelError, match=r"model.attn_implementation=flash_attention_2 needs the flash_attn package"):
        load_base("embedded", attn_implementation="flash_attention_2")
