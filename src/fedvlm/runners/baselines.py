"""Reference points for a federated run, at the same total number of training samples.

- centralized: one model trained on the union of the clients' training rows.
- local-only: each client trains alone on its own rows for the steps it would have done
  in the federation, evaluated on its local test split and the pooled test set.
"""

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fedvlm.config import Config
from fedvlm.models.adapter import set_adapter_state, set_trainable
from fedvlm.runners.client import steps_per_round
from fedvlm.runners.federation import Federation
from fedvlm.train.batches import iter_steps
from fedvlm.train.evaluate import evaluate
from fedvlm.train.local import train_local
from fedvlm.train.schedule import lr_at


def train_alone(cfg: Config, fed: Federation, rows: list[int], num_steps: int, seed: list[int], desc: str):
    """Train the initial adapter on ``rows`` for ``num_steps`` with the run's optimizer and
    a schedule stretched over those steps. Leaves the trained adapter in ``fed.model``."""
    t = cfg.train
    set_adapter_state(fed.model, fed.initial_adapter)
    # Every part the federation trains at some round trains here throughout.
    rounds = range(1, cfg.federated.rounds + 1)
    set_trainable(fed.model, {k for r in rounds for k in fed.plan.trained(fed.initial_adapter, r)})
    torch.manual_seed(seed[-1])
    steps = iter_steps(
        fed.task, fed.train_ds, rows, num_steps=num_steps, batch_size=t.batch_size,
        grad_accum=t.grad_accum, first_step=0, seed=seed,
    )
    bar = tqdm(total=num_steps, desc=desc, leave=False, disable=not cfg.run.progress)
    result = train_local(
        fed.model,
        steps,
        lr_at=lambda s: lr_at(s, num_steps, t.lr, t.warmup_steps, t.schedule),
        first_step=0,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        on_step=lambda loss: bar.update(1),
    )
    bar.close()
    return result


def federated_steps(cfg: Config, fed: Federation) -> dict[str, int]:
    """Optimizer steps each client does over the run, in expectation under sampling."""
    f = cfg.federated
    return {
        cid: max(1, round(f.rounds * f.fraction * steps_per_round(cfg, len(c.train))))
        for cid, c in fed.clients.items()
    }


def _evaluate(cfg: Config, fed: Federation, ds, rows) -> dict:
    return evaluate(fed.task, fed.model, ds, rows, cfg.eval.batch_size, cfg.eval.max_new_tokens)


def run_centralized(cfg: Config, fed: Federation) -> dict:
    """Pool every client's training rows and train one model on as many samples."""
    start = time.perf_counter()
    rows = sorted(r for c in fed.clients.values() for r in c.train)
    num_steps = sum(federated_steps(cfg, fed).values())
    result = train_alone(cfg, fed, rows, num_steps, [cfg.run.seed, 6], "centralized steps")
    ev = _evaluate(cfg, fed, fed.test_ds, fed.pooled_test)
    return {
        "accuracy": ev["accuracy"],
        "by_type": ev["by_type"],
        "examples": result.examples,
        "loss": result.loss,
        "seconds": time.perf_counter() - start,
    }


def run_local_only(cfg: Config, fed: Federation) -> dict:
    """Each client alone, for the steps it would have done in the federation."""
    start = time.perf_counter()
    out = {}
    for k, (cid, num_steps) in enumerate(federated_steps(cfg, fed).items()):
        c = fed.clients[cid]
        result = train_alone(cfg, fed, c.train, num_steps, [cfg.run.seed, 7, k], f"local-only client {cid}")
        out[cid] = {
            "accuracy_local": _evaluate(cfg, fed, fed.train_ds, c.test)["accuracy"] if c.test else None,
            "accuracy_pooled": _evaluate(cfg, fed, fed.test_ds, fed.pooled_test)["accuracy"],
            "examples": result.examples,
        }
    local = [v["accuracy_local"] for v in out.values() if v["accuracy_local"] is not None]
    return {
        "clients": out,
        "mean_local": sum(local) / max(1, len(local)),
        "mean_pooled": sum(v["accuracy_pooled"] for v in out.values()) / len(out),
        "seconds": time.perf_counter() - start,
    }


BASELINES = {"centralized": run_centralized, "local": run_local_only}


def run_baselines(cfg: Config, fed: Federation, run_dir: Path, names: list[str]) -> dict:
    """Run the named baselines and merge them into ``run_dir/baselines.json``."""
    path = run_dir / "baselines.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        results[name] = BASELINES[name](cfg, fed)
        path.write_text(json.dumps(results, indent=2))
    return results
