"""Text families on tiny random configs of their real classes, and the embedded MiniLM."""

import numpy as np
import pytest

from families.harness import TEXT_DATA, check_4bit, check_run, run_tiny
from families.tiny_text import build_bert_cls, build_bloom, build_llama, build_roberta_cls


@pytest.mark.parametrize("build", [build_roberta_cls, build_bert_cls, build_bloom, build_llama])
def test_text_family_trains_in_4bit(tmp_path, build):
    check_4bit(tmp_path, build(tmp_path / "model"), TEXT_DATA)


@pytest.mark.parametrize(
    "build, family, head",
    [
        (build_roberta_cls, "encoder-classifier", "classifier.out_proj.weight"),
        (build_bert_cls, "encoder-classifier", "classifier.weight"),
        (build_bloom, "bloom", None),
        (build_llama, "llama", None),
    ],
    ids=["roberta", "bert", "bloom", "llama"],
)
def test_text_family_trains_and_exports_a_stock_peft_adapter(tmp_path, build, family, head):
    model_dir = build(tmp_path / "model")
    cfg, fed, run_dir = run_tiny(tmp_path, model_dir, TEXT_DATA)
    assert fed.family.name == family
    check_run(cfg, fed, run_dir)
    keys = list(fed.initial_adapter)
    if head:  # the classification head is trained and aggregated with the adapter
        assert any(k.endswith(head) for k in keys)
        assert fed.task.label_names == ["negative", "neutral", "positive"]
    else:
        assert all(".lora_" in k for k in keys)
    targets = {"roberta": "query", "bert": "query", "bloom": "query_key_value", "llama": "q_proj"}
    assert any(f".{targets[build.__name__.split('_')[1]]}." in k for k in keys)


def test_embedded_minilm_classifier_learns_on_crowdflower(tmp_path):
    cfg, fed, run_dir = run_tiny(
        tmp_path, "embedded-text", TEXT_DATA, "train.batch_size=16", "train.local_steps=10", "train.lr=0.005"
    )
    assert fed.family.name == "encoder-classifier" and fed.model.config.num_labels == 3
    result = check_run(cfg, fed, run_dir)
    rounds = [np.mean([c["loss"] for c in r["clients"].values()]) for r in result["records"][1:]]
    assert rounds[1] < rounds[0] < np.log(3) + 0.1  # from about ln 3 (a uniform guess), downwards


def test_causal_lm_trains_on_instruction_data(tmp_path):
    # instruction / output pairs in a JSONL per split, mapped onto text / answer
    import json

    data = tmp_path / "instructions"
    data.mkdir()
    for split, n in (("train", 120), ("test", 30)):
        rows = [{"instruction": f"add {i % 7} and {i % 5}", "output": str(i % 7 + i % 5)} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg, fed, run_dir = run_tiny(
        tmp_path, build_llama(tmp_path / "model"), [f"data.source={data}", "eval.max_new_tokens=3"],
        "data.columns={text: instruction, answer: output}", "data.max_train_examples=null",
    )
    assert "label" not in fed.train_ds.column_names and fed.family.name == "llama"
    check_run(cfg, fed, run_dir)


def test_causal_lm_with_a_chat_template_prompts_through_it(tmp_path):
    # A text-only tokenizer template takes the message content as a string, and the
    # rendered prompt already holds bos: the batch must not add a second one.
    from transformers import AutoTokenizer

    model_dir = build_llama(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    tok.save_pretrained(model_dir)
    cfg, fed, run_dir = run_tiny(tmp_path, model_dir, TEXT_DATA, "data.max_length=256")  # nothing cut
    batch = fed.task.training_batch(fed.train_ds[:2])
    first = tok.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert first.startswith(tok.bos_token + "<|user|>") and first.count(tok.bos_token) == 1
    assert "<|assistant|>" in first and "[{" not in first
    check_run(cfg, fed, run_dir)


@pytest.mark.parametrize("kind", ["gpt2", "opt", "phi3", "distilbert", "electra"])
def test_an_architecture_no_family_names_trains_out_of_the_box(tmp_path, kind):
    """No model.family, no lora.target_modules: LoRA goes on every linear layer of the
    language model (GPT-2's Conv1D included), a classifier's head (whatever it is called)
    trains and is aggregated, and the adapter reloads in stock peft with equal outputs."""
    from families.tiny_text import build_generic

    cfg, fed, run_dir = run_tiny(tmp_path, build_generic(kind, tmp_path / "model"), TEXT_DATA)
    classifier = kind in ("distilbert", "electra")
    assert fed.family.name == ("sequence-classifier" if classifier else "causal-lm")
    check_run(cfg, fed, run_dir)
    head = {"distilbert": ("pre_classifier", "classifier"), "electra": ("classifier",)}.get(kind, ())
    base = fed.model.get_base_model()
    linears = {
        n.replace(".base_layer", "") for n, m in base.named_modules()
        if type(m).__name__ in ("Linear", "Conv1D") and ".lora_" not in n and "modules_to_save" not in n
        and "original_module" not in n
    }
    expected = {n for n in linears if n.split(".")[0] not in head and n != "lm_head"}
    adapted = {k.split(".lora_A")[0].removeprefix("base_model.model.") for k in fed.initial_adapter if ".lora_A." in k}
    assert adapted == expected
    keys = [k.removeprefix("base_model.model.") for k in fed.initial_adapter]
    assert fed.family.head == head
    for name in head:  # trained in full and aggregated with the adapter, never LoRA'd
        assert any(k.startswith(name + ".") and ".lora_" not in k for k in keys)
        assert not any(k.startswith(name + ".") and ".lora_" in k for k in keys)
    if not classifier:
        assert all(".lora_" in k for k in keys) and not any("lm_head" in k for k in keys)
