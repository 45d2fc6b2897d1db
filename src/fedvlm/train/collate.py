"""Turn VQA rows into model inputs: chat-template prompts, images, answer-only labels."""

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


def vqa_prompt(processor, question: str) -> str:
    """The user turn (an image and the question) rendered by the model's own chat template,
    ending with the assistant's generation prompt."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _rgb(images: Sequence) -> list:
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


def training_batch(processor, images: Sequence, questions: Sequence[str], answers: Sequence[str]) -> dict:
    """Inputs for a causal VLM with the loss on answer tokens only.

    Each sequence is ``prompt + answer + eos``; labels are -100 on the prompt (image tokens
    included) and on padding, so the model is trained to answer, not to echo questions.
    """
    tok = processor.tokenizer
    prompts = [vqa_prompt(processor, q) for q in questions]
    enc = processor(images=_rgb(images), text=prompts, return_tensors="pt", padding=True, padding_side="right")
    prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
    answer_ids = tok(list(answers), add_special_tokens=False)["input_ids"]
    rows = [
        enc["input_ids"][i, :n].tolist() + ans + [tok.eos_token_id]
        for i, (n, ans) in enumerate(zip(prompt_lens, answer_ids))
    ]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, prompt_lens)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, n : len(row)] = torch.tensor(row[n:])
        attention_mask[i, : len(row)] = 1
    out = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    out.update(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    return out


def generation_batch(processor, images: Sequence, questions: Sequence[str]) -> dict:
    """Left-padded prompts for batched greedy generation."""
    prompts = [vqa_prompt(processor, q) for q in questions]
    return dict(
        processor(images=_rgb(images), text=prompts, return_tensors="pt", padding=True, padding_side="left")
    )
