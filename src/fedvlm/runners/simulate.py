"""The in-process simulator: one base model in memory, adapter state swapped per client.

Memory does not grow with the number of clients: a client is a list of row indices plus,
for stateful algorithms, files in its own directory of the run.
"""

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fedvlm.config import Config, save_config
from fedvlm.core.strategies import STRATEGIES
from fedvlm.core.types import state_nbytes
from fedvlm.core.validate import validate_update
from fedvlm.models.adapter import save_adapter, set_adapter_state
from fedvlm.runners import rundir
from fedvlm.runners.client import run_client_round
from fedvlm.runners.federation import Federation, build_federation, seed_for
from fedvlm.train.evaluate import evaluate_vqa


def make_strategy(cfg: Config):
    f = cfg.federated
    return STRATEGIES[f.strategy](fraction=f.fraction, min_clients=f.min_clients)


def evaluate_global(cfg: Config, fed: Federation, state) -> dict:
    """The global adapter on the pooled test set and on each client's local test split."""
    set_adapter_state(fed.model, state)
    e = cfg.eval
    result = evaluate_vqa(
        fed.model, fed.processor, fed.test_ds, fed.pooled_test, e.batch_size, e.max_new_tokens
    )
    if e.local:
        result["clients"] = {
            cid: {
                k: v
                for k, v in evaluate_vqa(
                    fed.model, fed.processor, fed.train_ds, c.test, e.batch_size, e.max_new_tokens
                ).items()
                if k in ("accuracy", "num_examples")
            }
            for cid, c in fed.clients.items()
            if c.test
        }
    return result


def save_round_adapters(cfg: Config, fed: Federation, run_dir: Path, state, round_num: int, best: bool):
    adapters = run_dir / "adapters"
    save_adapter(fed.model, state.global_state, adapters / f"round_{round_num:04d}")
    rundir.rotate_round_adapters(adapters, cfg.eval.keep_last)
    if best:
        save_adapter(fed.model, state.global_state, adapters / "best")


def run_simulation(cfg: Config, run_dir: Path, resume: bool = False, fed: Federation | None = None) -> Federation:
    """Run (or continue) the federated job of ``cfg`` in ``run_dir``; returns the federation
    so that baselines can reuse the loaded model and data."""
    fed = fed or build_federation(cfg)
    strategy = make_strategy(cfg)
    client_ids = list(fed.clients)
    show = cfg.run.progress
    if resume:
        state, rng_state, extra = rundir.load_checkpoint(run_dir)
        rng = np.random.default_rng()
        rng.bit_generator.state = rng_state
        torch.set_rng_state(torch.tensor(extra["torch_rng"], dtype=torch.uint8))
        best_acc = extra["best_accuracy"]
        rundir.truncate_metrics(run_dir, state.round)
    else:
        save_config(cfg, run_dir / "config.yaml")
        state = strategy.initialize(fed.initial_adapter)
        rng = np.random.default_rng(seed_for(cfg, 5))
        zero_shot = evaluate_global(cfg, fed, state.global_state)
        rundir.append_metrics(run_dir, {"round": 0, "eval": zero_shot})
        best_acc = -1.0  # the first trained round is always saved as best so far

    rounds = tqdm(range(state.round + 1, cfg.federated.rounds + 1), desc="rounds", disable=not show,
                  initial=state.round, total=cfg.federated.rounds)
    for round_num in rounds:
        start = time.perf_counter()
        instructions = strategy.configure(round_num, state, client_ids, rng)
        updates, client_metrics, bytes_down = [], {}, 0
        for cid in tqdm(instructions, desc=f"round {round_num} clients", leave=False, disable=not show):
            ins = instructions[cid]
            bytes_down += state_nbytes(ins.payload)
            steps_bar = tqdm(desc=f"client {cid} steps", leave=False, disable=not show)
            update = run_client_round(
                cfg, fed.model, fed.processor, fed.train_ds, fed.clients[cid].train,
                cid, client_ids.index(cid), ins, round_num,
                on_step=lambda loss, bar=steps_bar: bar.update(1) or bar.set_postfix(loss=f"{loss:.3f}"),
            )
            steps_bar.close()
            validate_update(update, state.global_state)
            updates.append(update)
            client_metrics[cid] = update.metrics
        bytes_up = sum(state_nbytes(u.state) + state_nbytes(u.extras) for u in updates)
        state = strategy.aggregate(round_num, state, updates)
        train_seconds = time.perf_counter() - start
        result = evaluate_global(cfg, fed, state.global_state)
        is_best = result["accuracy"] > best_acc
        best_acc = max(best_acc, result["accuracy"])
        rounds.set_postfix(acc=f"{result['accuracy']:.3f}")
        record = {
            "round": round_num,
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "clients": client_metrics,
            "eval": result,
        }
        save_round_adapters(cfg, fed, run_dir, state, round_num, is_best)
        rundir.append_metrics(run_dir, record)
        rundir.save_checkpoint(
            run_dir, state, rng,
            {"torch_rng": torch.get_rng_state().tolist(), "best_accuracy": best_acc},
        )
    save_adapter(fed.model, state.global_state, run_dir / "adapters" / "final")
    set_adapter_state(fed.model, state.global_state)
    return fed
