"""Family detection from a model's config, and its one-line errors."""

import pytest
from transformers import (
    BertConfig,
    Blip2Config,
    BloomConfig,
    FuyuConfig,
    Gemma3Config,
    Idefics2Config,
    Idefics3Config,
    LlamaConfig,
    LlavaConfig,
    MllamaConfig,
    PaliGemmaConfig,
    Phi3Config,
    Qwen2VLConfig,
    T5Config,
)

from fedvlm.errors import ModelError
from fedvlm.models.families import FAMILIES, detect_family
from fedvlm.models.load import load_base, target_modules_for


@pytest.mark.parametrize(
    "config, family",
    [
        (LlavaConfig(), "image-text"),
        (LlavaConfig(text_config=Phi3Config().to_dict()), "image-text"),
        (Gemma3Config(), "image-text"),
        (MllamaConfig(), "image-text"),
        (PaliGemmaConfig(), "paligemma"),
        (FuyuConfig(), "fuyu"),
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


def test_families_the_generic_path_replaced_are_still_accepted_by_name():
    for name in ("llava", "phi3-llava", "qwen2-vl", "idefics3", "smolvlm"):
        assert detect_family(LlavaConfig(), name).name == "image-text"


@pytest.mark.parametrize(
    "config, towers, connector",
    [  # as each architecture's modeling file builds them
        (LlavaConfig(), ("vision_tower",), ("multi_modal_projector",)),
        (Gemma3Config(), ("vision_tower",), ("multi_modal_projector",)),
        (MllamaConfig(), ("vision_model",), ("multi_modal_projector",)),
        (Idefics3Config(), ("vision_model",), ("connector",)),
        # Idefics2's connector holds a perceiver resampler with a sub-config of its own
        (Idefics2Config(), ("vision_model",), ("connector",)),
        (Blip2Config(), ("vision_model",), ("qformer", "language_projection")),
        (Qwen2VLConfig(), ("visual",), ("merger",)),  # the merger sits inside the vision tower
        (FuyuConfig(), (), ("vision_embed_tokens",)),  # no tower: patches go through one linear
    ],
)
def test_towers_and_connector_are_found_from_the_structure(config, towers, connector):
    from fedvlm.models.structure import vision_language_parts

    parts = vision_language_parts(config)
    assert (parts.towers, parts.connector) == (towers, connector)


def test_all_linear_lm_on_a_phi3_llava_takes_the_fused_projections_of_the_language_model_only():
    import re

    from transformers import AutoModelForImageTextToText

    from fedvlm.models.load import all_linear_lm
    from fedvlm.models.structure import meta_instance

    tiny = Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2).to_dict()
    model = meta_instance(AutoModelForImageTextToText, LlavaConfig(text_config=tiny))
    targets = all_linear_lm(model)
    names = [n for n, _ in model.named_modules() if (re.fullmatch(targets, n) if isinstance(targets, str) else n in targets)]
    assert sorted({n.rsplit(".", 1)[-1] for n in names}) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert all(n.startswith("model.language_model.") for n in names)


def test_bad_model_path_is_one_line(tmp_path):
    with pytest.raises(ModelError) as err:
        load_base(str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)


def test_a_relative_model_path_is_saved_as_an_absolute_base_path(tmp_path, monkeypatch):
    """The adapter's base_model_name_or_path is where the base really is, so the adapter
    loads from any working directory (not the path as typed, relative to where it ran)."""
    import json
    import os

    from fedvlm.cli import main
    from fedvlm.models.load import embedded_model_path
    from tiny import TINY_RUN

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    relative = os.path.relpath(embedded_model_path(), work)
    assert not os.path.isabs(relative)
    assert main(["run", *TINY_RUN, "federated.rounds=1", f"model.path={relative}", f"run.output_dir={tmp_path}",
                 "run.name=rel"]) == 0
    config = json.loads((tmp_path / "rel" / "adapters" / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(embedded_model_path().resolve())


@pytest.mark.parametrize("override,field", [
    ("lora.modules_to_save=[projector_of_nothing]", "lora.modules_to_save"),
    ("model.family=janus", "lora.tuning=connector_lora (family janus's connector)"),
])
def test_a_module_setting_that_matches_no_module_is_one_line_naming_the_modules(override, field):
    """A connector or modules_to_save that matches nothing would silently train nothing:
    an error naming the setting and the modules the model does have."""
    from fedvlm.config import load_config
    from fedvlm.engine.federation import build_federation
    from tiny import TINY_RUN

    overrides = [*TINY_RUN, override]
    # (the embedded LLaVA has no module called "model.aligner")
    with pytest.raises(ModelError) as err:
        build_federation(load_config(None, overrides))
    message = str(err.value)
    assert "\n" not in message and message.startswith(field)
    assert "multi_modal_projector" in message and "language_model" in message


def test_all_linear_lm_targets_every_language_model_linear_and_nothing_else():
    """Found structurally on the embedded LLaVA: the language model's seven projections in
    every layer; no vision-tower layer, no projector, no lm_head."""
    import re

    import torch
    from transformers import AutoModelForImageTextToText

    from fedvlm.models.load import all_linear_lm, embedded_model_path

    model = AutoModelForImageTextToText.from_pretrained(str(embedded_model_path()))
    targets = all_linear_lm(model)
    chosen = [n for n, _ in model.named_modules() if (re.fullmatch(targets, n) if isinstance(targets, str) else n in targets)]
    expected = [n for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and n.startswith("model.language_model.")]
    assert chosen == expected and len(expected) == 7 * model.config.text_config.num_hidden_layers
    vision = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "vision_tower" in n]
    assert vision and not set(vision) & set(chosen)
    assert not any("multi_modal_projector" in n or n == "lm_head" for n in chosen)


def test_all_linear_lm_finds_gpt2_conv1d_layers_and_peft_adapts_them():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from fedvlm.models.load import language_model_linears, target_modules_for

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0))
    prefix, names = language_model_linears(model)
    assert prefix == "transformer"
    assert names == [f"transformer.h.{i}.{leaf}" for i in (0, 1)
                     for leaf in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=target_modules_for(FAMILIES["llama"], "all-linear-lm", model)))
    adapted = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n})
    assert adapted == sorted(f"base_model.model.{n}" for n in names)
    assert peft_model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)


def test_all_linear_lm_leaves_out_layers_a_text_forward_never_calls():
    """BART's causal-LM decoder has cross-attention layers that get no input (and so no
    gradient) without an encoder: LoRA on them would never train."""
    from transformers import BartConfig, BartForCausalLM

    from fedvlm.models.load import language_model_linears

    model = BartForCausalLM(BartConfig(vocab_size=64, d_model=16, decoder_layers=1, decoder_attention_heads=2,
                                       decoder_ffn_dim=32, encoder_layers=1, encoder_attention_heads=2,
                                       encoder_ffn_dim=32)).eval()
    prefix, names = language_model_linears(model)
    assert prefix == "model.decoder"
    assert names and not any("encoder_attn" in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"k_proj", "v_proj", "q_proj", "out_proj", "fc1", "fc2"}
    cross = [n for n, m in model.named_modules() if "encoder_attn." in n and type(m).__name__ == "Linear"]
    assert cross  # they exist, and were left out


def test_all_linear_lm_leaves_a_vision_tower_inside_the_decoder_alone():
    """IDEFICS keeps its vision model inside the module get_decoder() returns: its layers
    must still not be adapted."""
    import re

    from transformers import AutoModelForImageTextToText, IdeficsConfig

    from fedvlm.models.load import all_linear_lm
    from fedvlm.models.structure import meta_instance

    config = IdeficsConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           vision_config={"embed_dim": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "intermediate_size": 64},
                           perceiver_config={"resampler_depth": 1, "resampler_n_heads": 2, "resampler_head_dim": 8})
    model = meta_instance(AutoModelForImageTextToText, config)
    targets = all_linear_lm(model)
    names = [n for n, _ in model.named_modules() if (re.fullmatch(targets, n) if isinstance(targets, str) else n in targets)]
    assert names and not any(".vision_model." in n for n in names)
    assert any(".layers.0.self_attn.q_proj" in n for n in names)
    assert any("gated_cross_attn_layers" in n for n in names)  # the cross-attention to the image is adapted
