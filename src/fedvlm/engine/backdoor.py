"""How often a backdoor works: the share of test questions the model answers with the
attack's target once their input carries the trigger (`fedvlm.client.faults.stamp_trigger`),
counted over the questions whose true answer is another (Bagdasaryan et al. 2020,
https://arxiv.org/abs/1807.00459, "backdoor accuracy")."""

from collections.abc import Sequence

from fedvlm.client.faults import stamp_trigger
from fedvlm.core.answers import vqa_accuracy
from fedvlm.train.evaluate import predict_rows


def targets(attacks: list[dict]) -> list[str]:
    """The run's backdoor targets, each once, in the order the config names them."""
    return list(dict.fromkeys(a["target"] for a in attacks if a.get("kind") == "backdoor"))


def success_rate(task, model, dataset, indices: Sequence[int], target: str, batch_size: int, max_new_tokens: int,
                 span: str = "whole", mixed_precision: str = "no") -> dict:
    """``success_rate``: the share of rows ``indices`` not already answered ``target`` whose
    triggered input the model answers ``target`` (the VQA answer processing decides a
    match, of the generation's ``span``); ``num_examples``: how many such rows there were."""
    rows = dataset.select(list(indices))
    references = rows["answers"] if "answers" in rows.column_names else [[a] for a in rows["answer"]]
    others = [i for i, refs in enumerate(references) if vqa_accuracy(target, refs) == 0.0]
    if not others:
        return {"success_rate": None, "num_examples": 0}
    triggered = stamp_trigger(rows.select(others))
    preds = predict_rows(task, model, triggered, range(len(others)), batch_size, max_new_tokens, mixed_precision)
    hits = [vqa_accuracy(p, [target], span) for p in preds]
    return {"success_rate": sum(hits) / len(hits), "num_examples": len(hits)}
