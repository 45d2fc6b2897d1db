"""The generic image-text path on architectures no family names: Gemma3 (token type ids,
pooled image tokens) and Mllama (cross-attention to the image, a 4-D cross-attention mask),
built by the coverage script's generic builder; and the per-token inputs and chat-template
checks of the generative task, against hand-built expectations."""

import pytest
import torch
from PIL import Image

from families import tiny_image_text
from families.harness import check_run, run_tiny
from fedvlm.errors import ModelError
from fedvlm.train.collate import IGNORE_INDEX, GenerativeTask


@pytest.mark.parametrize("model_type", ["gemma3", "mllama"])
def test_an_image_text_architecture_no_family_names_trains_out_of_the_box(tmp_path, model_type):
    model_dir = tiny_image_text.build(model_type, tmp_path / "model")
    cfg, fed, run_dir = run_tiny(tmp_path, model_dir, ["eval.max_new_tokens=3"])
    assert fed.family.name == "image-text"
    check_run(cfg, fed, run_dir)
    assert fed.family.connector == ("multi_modal_projector",)
    lora = [k for k in fed.initial_adapter if ".lora_" in k]
    assert lora and all(".language_model." in k for k in lora), "LoRA only on the language model"
    if model_type == "mllama":  # the cross-attention to the image is adapted too
        assert any(".cross_attn.q_proj." in k for k in lora)
    connector = [k for k in fed.initial_adapter if ".lora_" not in k]
    assert connector and all(".multi_modal_projector." in k for k in connector)


class _Processor:
    """Stands in for a processor whose output has a 4-D per-token array (Mllama's
    cross-attention mask: batch x tokens x images x tiles) and a per-token type id."""

    chat_template = None

    def __init__(self):
        from families.tiny_text import _byte_level_bpe, _wrap

        self.tokenizer = _wrap(_byte_level_bpe(["<unk>", "<s>", "</s>", "<pad>"], unk="<unk>"),
                               bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")

    def __call__(self, images, text, **kwargs):
        # two prompts of 3 and 2 real tokens, right-padded to 3
        ids = torch.tensor([[5, 6, 7], [8, 9, 3]])
        mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
        cross = torch.zeros(2, 3, 1, 4, dtype=torch.long)
        cross[0, :, 0, :2] = 1  # prompt 0 sees 2 tiles from every token
        cross[1, 1, 0, :3] = 1  # prompt 1: its last real token sees 3 tiles, its first none
        types = torch.tensor([[1, 0, 0], [1, 1, 0]])
        return {"input_ids": ids, "attention_mask": mask, "cross_attention_mask": cross,
                "token_type_ids": types, "pixel_values": torch.zeros(2, 3, 8, 8)}


def test_per_token_inputs_continue_the_prompts_last_value_over_the_answer():
    task = GenerativeTask(_Processor(), prompt="{question}")
    tok = task.tokenizer
    answers = [tok("ab", add_special_tokens=False)["input_ids"], tok("c", add_special_tokens=False)["input_ids"]]
    batch = task.training_batch({"image": [Image.new("RGB", (8, 8))] * 2, "question": ["q", "q"], "answer": ["ab", "c"]})
    lengths = [3 + len(answers[0]) + 1, 2 + len(answers[1]) + 1]  # prompt + answer + eos
    width = max(lengths)
    assert batch["input_ids"].shape == (2, width) and batch["cross_attention_mask"].shape == (2, width, 1, 4)
    assert batch["pixel_values"].shape == (2, 3, 8, 8)  # not per token: passed through
    # row 0: every position sees tiles 0 and 1, as the prompt's last token does
    expected0 = torch.zeros(width, 1, 4, dtype=torch.long)
    expected0[:, 0, :2] = 1
    assert torch.equal(batch["cross_attention_mask"][0], expected0)
    # row 1: its first token sees nothing, the rest (last prompt token onwards) tiles 0..2
    expected1 = torch.zeros(width, 1, 4, dtype=torch.long)
    expected1[1:, 0, :3] = 1
    assert torch.equal(batch["cross_attention_mask"][1], expected1)
    assert batch["token_type_ids"][0].tolist() == [1, 0, 0] + [0] * (width - 3)
    assert batch["token_type_ids"][1].tolist() == [1, 1] + [1] * (width - 2)
    eos = tok.eos_token_id
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * 3 + answers[0] + [eos] + [IGNORE_INDEX] * (width - lengths[0])
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 2 + answers[1] + [eos] + [IGNORE_INDEX] * (width - lengths[1])
    assert batch["attention_mask"][1].tolist() == [1] * lengths[1] + [0] * (width - lengths[1])


def test_a_family_fill_value_overrides_the_continuation():
    """PaliGemma's answer is its suffix: token_type_ids 1 over the answer and padding."""
    task = GenerativeTask(_Processor(), prompt="{question}", token_fill={"token_type_ids": 1})
    batch = task.training_batch({"image": [Image.new("RGB", (8, 8))] * 2, "question": ["q", "q"], "answer": ["ab", "c"]})
    assert batch["token_type_ids"][0, 3:].eq(1).all() and batch["token_type_ids"][1, 2:].eq(1).all()


def _templated(template):
    processor = _Processor()
    processor.chat_template = template

    def render(messages, add_generation_prompt, tokenize):
        from jinja2 import Template

        return Template(template).render(messages=messages, add_generation_prompt=add_generation_prompt)

    processor.apply_chat_template = render
    return GenerativeTask(processor)


def test_a_chat_template_whose_answer_turn_does_not_follow_its_generation_prompt_is_refused():
    good = "{% for m in messages %}[{{ m.role }}]{% for p in m.content %}{{ p.text }}{% endfor %}{% endfor %}" \
           "{% if add_generation_prompt %}[assistant]{% endif %}"
    assert _templated(good).prompts(["hi"]) == ["[user]hi[assistant]"]
    # the generation prompt says "Answer:", the answer turn renders "[assistant]": labels would
    # train the model on a prompt it is never given
    bad = good.replace("{% if add_generation_prompt %}[assistant]", "{% if add_generation_prompt %}Answer:")
    with pytest.raises(ModelError, match="generation prompt") as err:
        _templated(bad).prompts(["hi"])
    assert "\n" not in str(err.value)


def test_a_processor_without_a_chat_template_is_one_line():
    with pytest.raises(ModelError, match="no chat template") as err:
        GenerativeTask(_Processor()).prompts(["hi"])
    assert "\n" not in str(err.value)


def test_qwen_vl_grids_train_through_the_generic_path_in_the_light_setup(tmp_path):
    """Qwen2-VL's input style (flattened patches + image_grid_thw, 3-D RoPE) through the
    generic path's pieces; its processor loads here without torchvision for images only
    (the whole job runs in the torchvision setup: tests/families/test_vision_families.py)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from families.tiny_vision_a import build_qwen2_vl, image_only_processor
    from fedvlm.models.load import attach_lora, resolve_family
    from fedvlm.train.tasks import build_task

    model_dir = build_qwen2_vl(tmp_path / "qwen")
    family = resolve_family(AutoConfig.from_pretrained(model_dir))
    assert family.name == "image-text" and family.connector == ("merger",)
    assert family.keep_full_precision == ("visual",)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).requires_grad_(False)
    model = attach_lora(model, family, 4, 8, 0.0, "auto", family.connector, seed=0)
    task = build_task(family, image_only_processor(model_dir))
    rows = {"image": [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (32, 32), "blue")],
            "question": ["what color?", "which shape?"], "answer": ["red", "circle"]}
    batch = task.training_batch(rows)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 4, 4]]  # one grid per image, carried
    answers = [task.tokenizer(a, add_special_tokens=False)["input_ids"] + [task.tokenizer.eos_token_id]
               for a in rows["answer"]]
    for labels, answer in zip(batch["labels"].tolist(), answers):
        kept = [t for t in labels if t != IGNORE_INDEX]
        assert kept == answer  # the loss is on the answer and eos only
    model.train()
    model(**batch).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(".language_model." in n or ".merger." in n for n in grads)
    assert any(".lora_B." in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any(".merger." in n and g.abs().sum() > 0 for n, g in grads.items())
    model.eval()
    assert len(task.predict(model, rows, max_new_tokens=2)) == 2
