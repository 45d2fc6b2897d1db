"""Family detection from a model's config, and its one-line errors."""

import pytest
from transformers import BertConfig, BloomConfig, LlamaConfig, LlavaConfig, Phi3Config, T5Config

from fedvlm.errors import ModelError
from fedvlm.models.families import FAMILIES, detect_family
from fedvlm.models.load import load_base, target_modules_for


@pytest.mark.parametrize(
    "config, family",
    [
        (LlavaConfig(), "llava"),
        (LlavaConfig(text_config=Phi3Config().to_dict()), "phi3-llava"),
        (BertConfig(), "encoder-classifier"),
        (BloomConfig(), "bloom"),
        (LlamaConfig(), "llama"),
    ],
)
def test_family_is_detected_from_the_config(config, family):
    assert detect_family(config).name == family


def test_unknown_architecture_is_one_line_naming_families_and_the_fix():
    with pytest.raises(ModelError) as err:
        detect_family(T5Config())
    message = str(err.value)
    assert "\n" not in message and "'t5'" in message
    assert all(name in message for name in FAMILIES)
    assert "model.family=" in message and "lora.target_modules=" in message


def test_family_can_be_named_and_targets_overridden():
    assert detect_family(T5Config(), "llama").name == "llama"
    with pytest.raises(ModelError, match="model.family 'gpt9'"):
        detect_family(T5Config(), "gpt9")
    family = FAMILIES["bloom"]
    assert target_modules_for(family, "auto") == ["query_key_value"]
    assert target_modules_for(family, ["dense"]) == ["dense"]


def test_phi3_llava_targets_the_fused_projections_only():
    import re

    regex = FAMILIES["phi3-llava"].targets
    names = [
        "model.language_model.layers.0.self_attn.qkv_proj",
        "model.language_model.layers.0.mlp.gate_up_proj",
        "model.language_model.layers.0.mlp.down_proj",
        "model.language_model.layers.0.self_attn.o_proj",
    ]
    assert all(re.fullmatch(regex, n) for n in names)
    assert not re.fullmatch(regex, "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj")


def test_bad_model_path_is_one_line(tmp_path):
    with pytest.raises(ModelError) as err:
        load_base(str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
