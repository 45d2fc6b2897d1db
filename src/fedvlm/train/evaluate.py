"""Evaluate a VQA model: greedy generation, normalized exact match / VQA soft accuracy."""

from collections import defaultdict
from collections.abc import Sequence

import torch

from fedvlm.core.answers import vqa_accuracy
from fedvlm.train.collate import generation_batch


@torch.no_grad()
def generate_answers(
    model, processor, dataset, indices: Sequence[int], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy answers for ``dataset`` rows ``indices`` (columns image, question)."""
    model.eval()
    answers = []
    for start in range(0, len(indices), batch_size):
        rows = dataset[list(indices[start : start + batch_size])]
        batch = generation_batch(processor, rows["image"], rows["question"])
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        answers += processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return answers


def score_answers(predictions: Sequence[str], rows: dict) -> dict:
    """Accuracy overall and per question type.

    ``rows`` holds columns ``answer`` and ``question_type`` and optionally ``answers``
    (several references per question, scored with VQA soft accuracy).
    """
    references = rows.get("answers") or [[a] for a in rows["answer"]]
    types = rows.get("question_type") or ["all"] * len(predictions)
    scores = [vqa_accuracy(p, refs) for p, refs in zip(predictions, references)]
    by_type: dict[str, list[float]] = defaultdict(list)
    for t, s in zip(types, scores):
        by_type[t].append(s)
    return {
        "accuracy": sum(scores) / max(1, len(scores)),
        "num_examples": len(scores),
        "by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
    }


def evaluate_vqa(model, processor, dataset, indices: Sequence[int], batch_size: int, max_new_tokens: int) -> dict:
    """Generate answers for ``indices`` and score them against the dataset's references."""
    preds = generate_answers(model, processor, dataset, indices, batch_size, max_new_tokens)
    columns = [c for c in ("answer", "answers", "question_type") if c in dataset.column_names]
    rows = dataset.select_columns(columns)[list(indices)]
    return score_answers(preds, rows)
