"""Instruction tuning on a text-only causal LM: data.max_length cuts prompts from the left
and keeps answers whole, drops (and counts) rows whose answer alone is too long; alpaca
and multi-turn conversation data train and are scored with the text metrics."""

import json
import logging

import pytest
from families.harness import check_run, run_tiny
from families.tiny_text import _byte_level_bpe, _wrap, build_llama

from fedvlm.train.chat import IGNORE_INDEX
from fedvlm.train.text_generation import TextGenerationTask

CHAT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}[system]\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}[user]\n{{ m['content'] }}\n"
    "{% else %}[assistant]\n{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)


def _tokenizer():
    tok = _wrap(_byte_level_bpe(["<unk>", "<s>", "</s>", "<pad>"], unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>",
                unk="<unk>")
    tok.chat_template = CHAT
    return tok


def _long_row(words: int):
    question = " ".join(f"word{i}" for i in range(words))
    return {"messages": [[{"role": "user", "content": question}, {"role": "assistant", "content": "fine"}]]}


def test_a_long_prompt_is_cut_from_the_left_and_its_answer_stays_whole():
    tok = _tokenizer()
    task = TextGenerationTask(tok, "chat", max_length=24)
    batch = task.training_batch(_long_row(60))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert len(ids) == 24
    answer = tok("fine</s>", add_special_tokens=False)["input_ids"]
    assert [t for t in labels if t != IGNORE_INDEX] == answer  # the whole answer, trained
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert ids[-len(answer) - len(newline):] == answer + newline
    text = tok.decode(ids)
    assert "word59" in text and "word0 " not in text and not text.startswith("<s>")  # the start went
    # generation: the prompt is cut so that it and the new tokens fit
    prompt = task.generation_batch(_long_row(60), max_new_tokens=4)["input_ids"][0].tolist()
    assert len(prompt) == 20 and tok.decode(prompt).endswith("[assistant]\n")


def test_fits_is_false_only_when_the_answer_alone_is_longer_than_max_length():
    tok = _tokenizer()
    task = TextGenerationTask(tok, "chat", max_length=24)
    long_answer = " ".join(["yes"] * 40)
    rows = {"messages": [
        [{"role": "user", "content": " ".join(["q"] * 100)}, {"role": "assistant", "content": "ok"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": long_answer}],
    ]}
    assert task.fits(rows) == [True, False]


def _alpaca(path, n, long_every=None):
    rows = []
    for i in range(n):
        output = " ".join(["long"] * 80) if long_every and i % long_every == 0 else str(i % 7 + i % 5)
        context = " ".join(f"n{j}" for j in range(i % 40))  # inputs of 0 to 39 words
        rows.append({"instruction": f"Add {i % 7} and {i % 5}.", "input": context, "output": output})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_openfedllm_setting_trains_on_batches_cut_to_max_length(tmp_path, caplog):
    """Alpaca rows (input kept) on a tiny LLaMA, batch 8, data.max_length=64: every training
    batch is [8, <=64]; rows whose output alone exceeds 64 tokens are dropped and counted;
    evaluation reports the text metrics and the held-out loss."""
    data = tmp_path / "alpaca"
    data.mkdir()
    _alpaca(data / "train.jsonl", 120, long_every=30)
    _alpaca(data / "test.jsonl", 30)
    with caplog.at_level(logging.WARNING, logger="fedvlm"):
        cfg, fed, run_dir = run_tiny(
            tmp_path, build_llama(tmp_path / "model"), [f"data.source={data}", "eval.max_new_tokens=3"],
            "data.max_length=64", "data.max_train_examples=null", "eval.metric=rouge_l",
        )
    assert "dropped 4 of 120 train rows" in caplog.text
    assert len(fed.train_ds) == 116 and fed.task.template == "alpaca"  # no chat template: alpaca
    batch = fed.task.training_batch(fed.train_ds[:8])
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
    assert "Add 5 and 0.\n\nn0 n1 n2 n3 n4" in fed.train_ds["text"]  # row 5: alpaca's input kept
    result = check_run(cfg, fed, run_dir)
    final = result["records"][-1]["eval"]
    assert {"exact_match", "rouge_l", "bleu", "loss"} <= final.keys() and final["loss"] > 0
    from fedvlm.reporting.report import write_report

    report = write_report(run_dir).read_text()
    assert "**ROUGE-L** (eval.metric)" in report and "ROUGE-L %" in report


def test_multi_turn_conversations_train_and_evaluate_on_a_tiny_chat_model(tmp_path):
    model_dir = build_llama(tmp_path / "model")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHAT
    tok.save_pretrained(model_dir)
    data = tmp_path / "chats"
    data.mkdir()
    for split, n in (("train", 80), ("test", 30)):
        rows = [{"messages": [
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": f"what is {i % 7} plus {i % 5}?"},
            {"role": "assistant", "content": str(i % 7 + i % 5)},
            {"role": "user", "content": "and twice that?"},
            {"role": "assistant", "content": str(2 * (i % 7 + i % 5))},
        ]} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg, fed, run_dir = run_tiny(tmp_path, model_dir, [f"data.source={data}", "eval.max_new_tokens=3"],
                                 "data.max_length=96", "data.max_train_examples=null")
    assert fed.task.template == "chat"
    batch = fed.task.training_batch(fed.train_ds[:2])
    trained = tok.decode([t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX])
    first = fed.train_ds[0]["messages"]
    assert trained == f"{first[2]['content']}</s>{first[4]['content']}</s>"  # both answers, nothing else
    result = check_run(cfg, fed, run_dir)
    assert {"rouge_l", "bleu", "exact_match", "loss"} <= result["records"][-1]["eval"].keys()
    assert fed.test_ds[0]["answer"] == str(2 * 0)  # evaluation scores the last answer


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_a_template_the_data_or_model_cannot_use_is_one_line(tmp_path, template):
    from tiny import TINY_RUN

    from fedvlm.config import load_config
    from fedvlm.errors import ModelError
    from fedvlm.engine.federation import build_federation

    data = tmp_path / "alpaca"
    data.mkdir()
    _alpaca(data / "train.jsonl", 20)
    _alpaca(data / "test.jsonl", 10)
    overrides = [*TINY_RUN, f"model.path={build_llama(tmp_path / 'model')}", f"data.source={data}",
                 f"data.template={template}"]
    with pytest.raises(ModelError) as err:
        build_federation(load_config(None, overrides))
    assert "\n" not in str(err.value) and f"data.template={template}" in str(err.value)
