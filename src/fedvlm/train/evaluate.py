"""Evaluate a model on its task: answers (generated, or a classifier's label names) scored
as the official VQA evaluation does (exact match of processed answers; soft accuracy over
several annotators), overall and per question type; text-only generation also by exact
match, ROUGE-L and BLEU of the free text and the loss on the held-out answers."""

import time
from collections import defaultdict
from collections.abc import Sequence

from fedvlm.core.answers import vqa_accuracy
from fedvlm.core.text_metrics import caption_scores, text_scores
from fedvlm.models.precision import autocast


def predict_rows(
    task, model, dataset, indices: Sequence[int], batch_size: int, max_new_tokens: int, mixed_precision: str = "no"
) -> list[str]:
    """The model's answers for ``dataset`` rows ``indices``, in batches (generative models:
    batched greedy decoding of left-padded prompts with the KV cache, `Task.predict`)."""
    model.eval()
    answers = []
    device = next(model.parameters()).device
    # Prompts are made inside the loop, not ahead in a thread: decoding the answers uses the
    # same (Rust) tokenizer, which two threads may not borrow at once.
    with autocast(device, mixed_precision):
        for start in range(0, len(indices), batch_size):
            answers += task.predict(model, dataset[list(indices[start : start + batch_size])], max_new_tokens)
    return answers


def score_answers(predictions: Sequence[str], rows: dict, span: str = "whole", references: str = "official") -> dict:
    """Accuracy overall and per question type.

    ``rows`` holds columns ``answer`` and ``question_type`` and optionally ``answers``
    (several references per question, scored with VQA soft accuracy); ``span`` is the part
    of each generated answer that is scored (`fedvlm.core.answers.answer_span`) and
    ``references`` how the references are read (`fedvlm.core.answers.vqa_accuracy`).
    """
    refs_of = rows.get("answers") or [[a] for a in rows["answer"]]
    types = rows.get("question_type") or ["all"] * len(predictions)
    scores = [vqa_accuracy(p, refs, span, references) for p, refs in zip(predictions, refs_of)]
    by_type: dict[str, list[float]] = defaultdict(list)
    for t, s in zip(types, scores):
        by_type[t].append(s)
    return {
        "accuracy": sum(scores) / max(1, len(scores)),
        "num_examples": len(scores),
        "by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
    }


def evaluate(
    task, model, dataset, indices: Sequence[int], batch_size: int, max_new_tokens: int, span: str = "whole",
    caption_types: Sequence[str] = (), mixed_precision: str = "no", references: str = "official",
) -> dict:
    """Predict ``indices`` and score them against the dataset's references; rows of the
    question types ``caption_types`` are also scored as captions (CIDEr-D, BLEU-4,
    ROUGE-L: ``captions``, per type). ``speed``: the predictions' seconds and questions
    per second (collation included)."""
    start = time.perf_counter()
    preds = predict_rows(task, model, dataset, indices, batch_size, max_new_tokens, mixed_precision)
    seconds = time.perf_counter() - start
    columns = [c for c in ("answer", "answers", "question_type") if c in dataset.column_names]
    rows = dataset.select_columns(columns)[list(indices)]
    result = score_answers(preds, rows, span, references)
    types = rows.get("question_type") or ["all"] * len(preds)
    captions = {}
    for kind in sorted(set(types) & set(caption_types)):
        refs_of = rows.get("answers") or [[a] for a in rows["answer"]]  # every reference a row has
        pairs = [(p, refs) for p, refs, t in zip(preds, refs_of, types) if t == kind]
        captions[kind] = caption_scores([p for p, _ in pairs], [refs for _, refs in pairs])
    if captions:
        result["captions"] = captions
    if hasattr(task, "loss"):  # generated free text: the instruction-tuning metrics too
        result.update(text_scores(preds, rows["answer"]))
        result["loss"] = held_out_loss(task, model, dataset, indices, batch_size)
    result["speed"] = {"seconds": seconds, "questions_per_second": len(preds) / seconds if seconds > 0 else None}
    return result


def held_out_loss(task, model, dataset, indices: Sequence[int], batch_size: int) -> float:
    """Mean token loss on the rows' answers (teacher-forced), as training counts it."""
    total, count = 0.0, 0
    for start in range(0, len(indices), batch_size):
        summed, n = task.loss(model, dataset[list(indices[start : start + batch_size])])
        total, count = total + summed, count + n
    return total / max(1, count)
