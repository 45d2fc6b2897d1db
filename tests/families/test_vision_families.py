"""Every vision family on a tiny random config of its real class, loaded by path: a 2-client,
2-round job on easy-VQA trains exactly the adapter, keeps the base frozen, and exports an
adapter stock peft loads with identical outputs."""

import pytest

from families import tiny_vision_a, tiny_vision_b
from families.harness import check_4bit, check_run, run_tiny
from fedvlm.models.load import embedded_model_path

VISION = {
    "llava": lambda out: embedded_model_path(),
    "phi3-llava": tiny_vision_b.build_phi3_llava,
    "janus": tiny_vision_b.build_janus,
    "fuyu": tiny_vision_b.build_fuyu,
    "blip-vqa": tiny_vision_b.build_blip_vqa,
    "idefics3": tiny_vision_a.build_idefics3,
    "smolvlm": tiny_vision_a.build_smolvlm,
    "paligemma": tiny_vision_a.build_paligemma,
    "qwen2-vl": tiny_vision_a.build_qwen2_vl,
    "qwen2.5-vl": tiny_vision_a.build_qwen2_5_vl,
}
# The architectures the generic image-text path serves (no family of their own).
GENERIC = ("llava", "phi3-llava", "idefics3", "smolvlm", "qwen2-vl", "qwen2.5-vl")
NEEDS_TORCHVISION = pytest.mark.skipif(
    not tiny_vision_a.HAS_TORCHVISION,
    reason="the processor needs torchvision: FEDVLM_TORCHVISION=1 scripts/quickstart.sh test",
)
# The LoRA-adapted layers each family must have (the published systems' targets).
TARGETS = {
    "llava": ("q_proj", "down_proj"),
    "phi3-llava": ("qkv_proj", "gate_up_proj"),
    "janus": ("q_proj", "v_proj"),
    "fuyu": ("query_key_value", "dense_4h_to_h"),
    "blip-vqa": ("text_encoder", "text_decoder"),
    "idefics3": ("q_proj", "down_proj"),
    "smolvlm": ("q_proj", "down_proj"),
    "paligemma": ("q_proj", "down_proj"),
    "qwen2-vl": ("q_proj", "down_proj"),
    "qwen2.5-vl": ("q_proj", "down_proj"),
}


NAMES = [pytest.param(n, marks=NEEDS_TORCHVISION) if n in ("smolvlm", "qwen2-vl", "qwen2.5-vl") else n for n in VISION]


@pytest.mark.parametrize("name", NAMES)
def test_vision_family_trains_and_exports_a_stock_peft_adapter(tmp_path, name):
    model_dir = VISION[name](tmp_path / "model")
    cfg, fed, run_dir = run_tiny(tmp_path, model_dir, ["eval.max_new_tokens=3"])
    assert fed.family.name == ("image-text" if name in GENERIC else name)
    check_run(cfg, fed, run_dir)
    lora_keys = [k for k in fed.initial_adapter if ".lora_" in k]
    for target in TARGETS[name]:
        assert any(target in k for k in lora_keys), target
    assert not any("vision" in k for k in lora_keys), "LoRA must stay off the vision encoder"
    connector = [k for k in fed.initial_adapter if ".lora_" not in k]
    if fed.family.connector:  # auto tuning = connector_lora: the connector trains in full
        assert connector and all(any(f".{c}." in k for c in fed.family.connector) for k in connector)
    else:
        assert connector == []


@pytest.mark.parametrize("name", NAMES)
def test_vision_family_trains_in_4bit(tmp_path, name):
    check_4bit(tmp_path, VISION[name](tmp_path / "model"), ["eval.max_new_tokens=3"])
