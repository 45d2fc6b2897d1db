"""Reference points for a federated run, at the same total number of training samples.

- centralized: one model trained on the union of the clients' training rows.
- local-only: each client trains alone on its own rows for the steps it would have done
  in the federation, evaluated on its local test split and the pooled test set.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fedvlm.config import Config
from fedvlm.models.adapter import set_adapter_state, set_trainable
from fedvlm.engine.client import steps_per_round
from fedvlm.core.sampling import sampling_plan
from fedvlm.engine.federation import Federation
from fedvlm.seeds import Stream, seed_for, torch_seed
from fedvlm.engine.records import BASELINES_FILE, read_baselines, read_metrics
from fedvlm.fileio import write_atomic
from fedvlm.train.batches import iter_steps
from fedvlm.train.evaluate import evaluate
from fedvlm.train.local import LocalResult, train_local
from fedvlm.train.schedule import lr_at


def phases(cfg: Config, fed: Federation, num_steps: int) -> list[tuple[int, list[str]]]:
    """``(steps, trained keys)`` per phase: one phase, or for two-stage tuning the
    connector for the first stage's share of the steps, then LoRA."""
    plan, rounds = fed.plan, cfg.federated.rounds
    if plan.tuning != "two_stage":
        return [(num_steps, plan.trained(fed.initial_adapter, 1))]
    first = round(num_steps * plan.two_stage_rounds / rounds)
    return [(first, plan.trained(fed.initial_adapter, 1)), (num_steps - first, plan.trained(fed.initial_adapter, rounds))]


def train_alone(cfg: Config, fed: Federation, rows: list[int], num_steps: int, seed: list[int], desc: str):
    """Train the initial adapter on ``rows`` for ``num_steps`` with the run's optimizer and
    a schedule stretched over those steps, training what the federation trains (in two
    phases for two-stage tuning). Leaves the trained adapter in ``fed.model``."""
    t = cfg.train
    set_adapter_state(fed.model, fed.initial_adapter)
    torch.manual_seed(torch_seed(seed))
    bar = tqdm(total=num_steps, desc=desc, leave=False, disable=not cfg.run.progress)
    results, done = [], 0
    for count, trained in phases(cfg, fed, num_steps):
        set_trainable(fed.model, trained)
        steps = iter_steps(
            fed.task, fed.train_ds, rows, num_steps=count, batch_size=t.batch_size,
            grad_accum=t.grad_accum, first_step=done, seed=seed, loading=fed.loading, device=fed.model.device,
        )
        results.append(train_local(
            fed.model,
            steps,
            lr_at=lambda s: lr_at(s, num_steps, t.lr, t.warmup_steps, t.schedule),
            first_step=done,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            on_step=lambda loss: bar.update(1),
            mixed_precision=t.mixed_precision,
        ))
        done += count
    bar.close()
    steps_done = sum(r.steps for r in results)
    return LocalResult(
        loss=sum(r.loss * r.steps for r in results) / max(1, steps_done),
        examples=sum(r.examples for r in results),
        steps=steps_done,
        seconds=sum(r.seconds for r in results),
        data_seconds=sum(r.data_seconds for r in results),
    )


def federated_steps(cfg: Config, fed: Federation, run_dir: Path | None = None) -> dict[str, int]:
    """Optimizer steps each client did in the federation: summed from ``run_dir``'s
    ``metrics.jsonl`` when it holds every round (the steps the run actually ran), else the
    steps the run will do, its seeded client sampling replayed (`core.sampling.sampling_plan`)."""
    f = cfg.federated
    records = [r for r in read_metrics(run_dir) if r["round"] >= 1] if run_dir else []
    if {r["round"] for r in records} == set(range(1, f.rounds + 1)):
        steps = dict.fromkeys(fed.clients, 0)
        for record in records:
            for cid, stats in record["clients"].items():
                steps[cid] += stats["steps"]
        return steps
    rng = np.random.default_rng(seed_for(cfg.run.seed, Stream.SAMPLING))
    plan = sampling_plan(list(fed.clients), f.rounds, f.fraction, f.min_clients, rng)
    per_round = {cid: steps_per_round(cfg, len(c.train)) for cid, c in fed.clients.items()}
    return {cid: sum(per_round[cid] for chosen in plan if cid in chosen) for cid in fed.clients}


def _evaluate(cfg: Config, fed: Federation, ds, rows) -> dict:
    e = cfg.eval
    return evaluate(fed.task, fed.model, ds, rows, e.batch_size, e.max_new_tokens, e.answer_span, e.caption_types,
                    cfg.train.mixed_precision, e.references)


def _local_view(ev: dict) -> dict:
    return {k: ev[k] for k in ("accuracy", "num_examples", "captions") if k in ev}


def run_centralized(cfg: Config, fed: Federation, fed_steps: dict[str, int]) -> dict:
    """Pool every client's training rows and train one model for as many steps as the
    federation's clients took together (``fed_steps``, `federated_steps`)."""
    start = time.perf_counter()
    rows = sorted(r for c in fed.clients.values() for r in c.train)
    num_steps = sum(fed_steps.values())
    result = train_alone(cfg, fed, rows, num_steps, seed_for(cfg.run.seed, Stream.CENTRALIZED), "centralized steps")
    ev = _evaluate(cfg, fed, fed.test_ds, fed.pooled_test)
    # the one model on every client's local test too, beside the personalized methods' numbers
    local = {cid: _local_view(_evaluate(cfg, fed, fed.train_ds, c.test))
             for cid, c in fed.clients.items() if c.test and cfg.eval.local}
    return {
        "accuracy": ev["accuracy"],
        "by_type": ev["by_type"],
        **({"captions": ev["captions"]} if "captions" in ev else {}),
        **({"clients": local} if local else {}),
        "steps": result.steps,
        "federated_steps": num_steps,
        "examples": result.examples,
        "loss": result.loss,
        "seconds": time.perf_counter() - start,
    }


def run_local_only(cfg: Config, fed: Federation, fed_steps: dict[str, int]) -> dict:
    """Each client alone, for the steps it took in the federation (``fed_steps``)."""
    start = time.perf_counter()
    out = {}
    for k, (cid, num_steps) in enumerate(fed_steps.items()):
        c = fed.clients[cid]
        result = train_alone(cfg, fed, c.train, num_steps, seed_for(cfg.run.seed, Stream.LOCAL_ONLY, k), f"local-only client {cid}")
        own = _evaluate(cfg, fed, fed.train_ds, c.test) if c.test else {}
        out[cid] = {
            "accuracy_local": own.get("accuracy"),
            **({"captions_local": own["captions"]} if "captions" in own else {}),
            "accuracy_pooled": _evaluate(cfg, fed, fed.test_ds, fed.pooled_test)["accuracy"],
            "steps": result.steps,
            "federated_steps": num_steps,
            "examples": result.examples,
        }
    local = [v["accuracy_local"] for v in out.values() if v["accuracy_local"] is not None]
    return {
        "clients": out,
        "mean_local": sum(local) / max(1, len(local)),
        "std_local": float(np.std(local)) if local else 0.0,  # ddof=0, as eval.personalized
        "mean_pooled": sum(v["accuracy_pooled"] for v in out.values()) / len(out),
        "seconds": time.perf_counter() - start,
    }


BASELINES = {"centralized": run_centralized, "local": run_local_only}


def run_baselines(cfg: Config, fed: Federation, run_dir: Path, names: list[str]) -> dict:
    """Run the named baselines and merge them into ``run_dir/baselines.json``."""
    results = read_baselines(run_dir)
    fed_steps = federated_steps(cfg, fed, run_dir)
    for name in names:
        results[name] = BASELINES[name](cfg, fed, fed_steps)
        write_atomic(run_dir / BASELINES_FILE, json.dumps(results, indent=2))
    return results
