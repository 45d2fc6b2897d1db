"""The per-task table of the multi-task bench (configs/bench/multitask.yaml).

    fedvlm bench configs/bench/multitask.yaml --out runs/bench-multitask
    python benchmarks/multitask_table.py runs/bench-multitask

Prints two markdown tables, mean ± std over the finished seeds (population std, ddof=0):

1. **personalized**: each client's model on its own task's local test split (a client
   holds one task): its own model for local-only, FedSA-LoRA and FedALT; the global model
   for FedAvg and FedProx; the centralized model for centralized. Accuracy % per task,
   CIDEr-D for captions, and the mean accuracy over the six accuracy tasks (captions are
   left out of the mean: CIDEr is not on the accuracy scale).
2. **global**: the global model on the pooled test of every task, per task; for FedSA-LoRA
   and FedALT the server's reference (the mean of the clients' arrays, no mixer), which
   is not a model either method deploys.
"""

import sys
from pathlib import Path

import numpy as np

from fedvlm.reporting.report import read_baselines, read_metrics

ORDER = ["local-only", "fedavg", "fedprox", "fedsa-lora", "fedalt", "fedalt-fixed", "centralized"]


def _tasks_of(clients: dict) -> dict[str, str]:
    """Client id -> its task, read from its local evaluation's question types."""
    return {cid: next(iter(m["by_type"])) for cid, m in clients.items() if m.get("by_type")}


def _scores(view: dict, task: str) -> float | None:
    """A client's (or the pooled) score on ``task``: CIDEr-D for captions, else accuracy %."""
    if task == "caption":
        cider = ((view.get("captions") or {}).get("caption") or {}).get("cider")
        return cider
    acc = view.get("accuracy") if "by_type" not in view else view["by_type"].get(task)
    return None if acc is None else 100 * acc


def collect(bench_dir: Path):
    personalized, pooled, tasks, seconds = {}, {}, None, {}
    for run_dir in sorted(bench_dir.glob("*/task/seed*")):
        algorithm, seed = run_dir.parts[-3], run_dir.name
        metrics = read_metrics(run_dir)
        if not metrics or "clients" not in metrics[-1].get("eval", {}):
            continue
        final = metrics[-1]["eval"]
        seconds.setdefault(algorithm, []).append(sum(r.get("seconds") or 0 for r in metrics))
        task_of = _tasks_of(final["clients"])
        tasks = tasks or sorted(task_of.values())
        personalized.setdefault(algorithm, {}).setdefault(seed, {
            task_of[c]: _scores(m, task_of[c]) for c, m in final["clients"].items() if c in task_of})
        pooled.setdefault(algorithm, {})[seed] = {t: _scores(final, t) for t in tasks}
        baselines = read_baselines(run_dir)
        local = (baselines.get("local") or {}).get("clients") or {}
        if local:
            personalized.setdefault("local-only", {})[seed] = {
                task_of[c]: (m.get("captions_local") or {}).get("caption", {}).get("cider") if task_of[c] == "caption"
                else 100 * m["accuracy_local"] for c, m in local.items() if c in task_of}
        central = baselines.get("centralized") or {}
        if central.get("clients"):
            personalized.setdefault("centralized", {})[seed] = {
                task_of[c]: _scores(m, task_of[c]) for c, m in central["clients"].items() if c in task_of}
            pooled.setdefault("centralized", {})[seed] = {t: _scores(central, t) for t in tasks}
    return tasks, personalized, pooled, seconds


def _cell(values: list, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def table(tasks: list[str], by_algorithm: dict) -> str:
    accuracy_tasks = [t for t in tasks if t != "caption"]
    header = ["method", *("caption CIDEr-D" if t == "caption" else f"{t} %" for t in tasks), "mean acc %", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for algorithm in [a for a in ORDER if a in by_algorithm]:
        seeds = by_algorithm[algorithm]
        cells = [_cell([s.get(t) for s in seeds.values()], 2 if t == "caption" else 1) for t in tasks]
        means = [np.mean([s[t] for t in accuracy_tasks]) for s in seeds.values() if all(s.get(t) is not None for t in accuracy_tasks)]
        lines.append("| " + " | ".join([algorithm, *cells, _cell(means), str(len(seeds))]) + " |")
    return "\n".join(lines)


def main(bench_dir: str) -> None:
    tasks, personalized, pooled, seconds = collect(Path(bench_dir))
    print("### Personalized: each client's model on its own task's local test\n")
    print(table(tasks, personalized))
    print("\n### Global: the global (or reference) model on the pooled test of every task\n")
    print(table(tasks, pooled))
    print("\n### Wall seconds per run (sum of rounds; fedavg's run also trains the baselines after)\n")
    for algorithm, values in seconds.items():
        print(f"- {algorithm}: {np.mean(values):.0f} s (seeds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main(sys.argv[1])
