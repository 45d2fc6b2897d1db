"""Multi-turn conversations with images in any turn: the label mask through the processor's
image-token expansion against hand-built expectations on two processors (the embedded
LLaVA's and Gemma3's, whose image marks expand into different token runs), and a whole
federated job on conversation data where ``data.max_length`` drops the rows that cannot
fit (an image cannot be cut)."""

import json
import logging

import pytest
import torch
from PIL import Image

from families import tiny_image_text
from families.harness import run_tiny
from fedvlm.errors import ModelError
from fedvlm.models.load import (
    embedded_model_path,
    load_processor,
    model_config,
    resolve_family,
)
from fedvlm.train.collate import IGNORE_INDEX, align_labels
from fedvlm.train.tasks import build_task

RED, BLUE = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
# three turns of dialogue after a system turn: an image in the first and the third
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "<image>\nWhat colour?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And this one?\n<image>"},
    {"role": "assistant", "content": "blue circle"},
]


def _task(model_dir):
    family = resolve_family(model_config(str(model_dir)))
    return build_task(family, load_processor(str(model_dir), family))


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_llava_labels_are_the_assistant_turns_between_expanded_images():
    task = _task(embedded_model_path())
    tok = task.tokenizer
    batch = task.training_batch({"messages": [MESSAGES], "images": [[RED, BLUE]], "answer": ["blue circle"]})
    image = tok.convert_tokens_to_ids("<image>")
    per_image = 16  # (64 / 16)^2 patches of the embedded CLIP tower, its CLS token dropped
    # the embedded template: "<|role|>\n" + content (an image part renders "<image>\n") + "<|eos|>\n"
    pieces = [
        (_ids(tok, "<|system|>\nBe brief.<|eos|>\n<|user|>\n"), False),
        ([image] * per_image, False),
        (_ids(tok, "\nWhat colour?<|eos|>\n<|assistant|>\n"), False),
        (_ids(tok, "red<|eos|>"), True),
        (_ids(tok, "\n<|user|>\nAnd this one?"), False),
        ([image] * per_image, False),
        (_ids(tok, "\n<|eos|>\n<|assistant|>\n"), False),
        (_ids(tok, "blue circle<|eos|>"), True),
        (_ids(tok, "\n"), False),
    ]
    ids = [i for piece, _ in pieces for i in piece]
    labels = [i if trained else IGNORE_INDEX for piece, trained in pieces for i in piece]
    assert batch["input_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == labels
    assert batch["pixel_values"].shape[0] == 2


def test_gemma3_labels_are_the_model_turns_and_no_image_token(tmp_path):
    model_dir = tiny_image_text.build("gemma3", tmp_path / "gemma3")
    task = _task(model_dir)
    tok = task.tokenizer
    batch = task.training_batch({"messages": [MESSAGES, MESSAGES[:3]], "images": [[RED, BLUE], [RED]],
                                 "answer": ["blue circle", "red"]})
    # the tiny checkpoint's template (tests/families/tiny_image_text.py): "<|assistant|>\n"
    # + answer + "<|end|>\n"; Gemma3's processor grows each image mark into
    # "\n\n" + boi + image_seq_length soft tokens + eoi + "\n\n"
    turn_end = "<|end|>"
    for row, answers in enumerate([["red", "blue circle"], ["red"]]):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        opener = _ids(tok, "<|assistant|>\n")
        runs, i = [], 0
        while i < len(labels):
            if labels[i] == IGNORE_INDEX:
                i += 1
                continue
            start = i
            while i < len(labels) and labels[i] != IGNORE_INDEX:
                i += 1
            assert ids[start - len(opener):start] == opener, "a trained run starts right after a model turn opens"
            runs.append(labels[start:i])
        assert runs == [_ids(tok, a + turn_end) for a in answers]
        soft = model_config(str(model_dir)).image_token_id  # the token the model swaps for image features
        images = len(answers)
        assert ids.count(soft) == images * task.processor.image_seq_length
        assert all(lab == IGNORE_INDEX for tid, lab in zip(ids, labels) if tid == soft)


def test_aligning_labels_refuses_a_processor_that_rewrote_the_answer():
    assert align_labels([1, 9, 5, 6], [-100, -100, 5, 6], [0, 1, 9, 9, 9, 5, 6]) == [-100] * 5 + [5, 6]
    with pytest.raises(ModelError, match="assistant tokens"):
        align_labels([1, 9, 5, 6], [-100, -100, 5, 6], [1, 9, 9, 5, 7])


def _conversations(path, count, colours=("red", "blue", "green", "yellow")):
    """Two-exchange conversations on a coloured square; every fifth row shows a second
    square in its second question (a longer example)."""
    path.mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        a, b = colours[i % 4], colours[(i + 1) % 4]
        Image.new("RGB", (16, 16), a).save(path / f"{a}.png")
        second = i % 5 == 0
        rows.append({
            "images": [f"{a}.png", f"{b}.png"] if second else [f"{a}.png"],
            "messages": [
                {"role": "user", "content": "<image>\nWhat colour is the square?"},
                {"role": "assistant", "content": a},
                {"role": "user", "content": "And this one?\n<image>" if second else "Is it a square?"},
                {"role": "assistant", "content": b if second else "yes"},
            ],
        })
        Image.new("RGB", (16, 16), b).save(path / f"{b}.png")
    return rows


def test_a_federated_job_trains_on_conversations_and_drops_rows_that_cannot_fit(tmp_path, caplog):
    data = tmp_path / "data"
    for split, count in (("train", 60), ("test", 30)):
        rows = _conversations(data, count)
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # one image and two exchanges: 48 tokens on the embedded model; two images: 64
    with caplog.at_level(logging.WARNING, logger="fedvlm"):
        _, fed, run_dir = run_tiny(tmp_path, "embedded", [f"data.source={data}", "data.max_length=56",
                                                            "data.pooled_test_size=20", "eval.max_new_tokens=3"])
    assert "dropped 12 of 60 train rows" in caplog.text and "dropped 6 of 30 test rows" in caplog.text
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert all(r["eval"]["num_examples"] == 20 for r in records)
    batch = fed.task.training_batch(fed.train_ds[:8])
    assert batch["input_ids"].shape[1] <= 56 and (batch["labels"] != IGNORE_INDEX).sum(dim=1).min() >= 2
    losses = [c["loss"] for r in records[1:] for c in r["clients"].values()]
    assert len(losses) == 4 and torch.isfinite(torch.tensor(losses)).all()
