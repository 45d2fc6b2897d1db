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
3. **paired**: the personalized mean accuracy and caption CIDEr-D of each method against
   local-only, and of FedALT's learned mixer against its fixed one, seed by seed
   (`fedvlm.reporting.paired.paired_test`: two-sided paired t-test and exact Wilcoxon).
"""

import sys
from pathlib import Path

import numpy as np

from fedvlm.reporting.bench_report import PAIRED_NOTE
from fedvlm.reporting.paired import paired_test
from fedvlm.reporting.report import read_baselines, read_metrics

ORDER = ["local-only", "fedavg", "fedprox", "fedsa-lora", "fedalt", "fedalt-fixed", "centralized"]
# (reference, other): every method against training alone, and FedALT's two mixers.
PAIRS = [*(("local-only", a) for a in ORDER[1:]), ("fedalt-fixed", "fedalt")]


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


def _mean_accuracy(scores: dict, tasks: list[str]) -> float | None:
    """The mean over the accuracy tasks (captions left out), None if one is missing."""
    values = [scores.get(t) for t in tasks if t != "caption"]
    return None if any(v is None for v in values) else float(np.mean(values))


def paired(tasks: list[str], personalized: dict) -> str:
    """Markdown: each pair of ``PAIRS`` compared seed by seed on the personalized mean
    accuracy and caption CIDEr-D, over the seeds both finished."""
    header = ["other vs reference", "metric", "pairs", "mean diff", "ahead / behind", "paired t p", "Wilcoxon p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    metrics = {"mean acc (points)": lambda s: _mean_accuracy(s, tasks), "caption CIDEr-D": lambda s: s.get("caption")}
    for reference, other in PAIRS:
        if reference not in personalized or other not in personalized:
            continue
        for metric, value in metrics.items():
            ref, own = ({seed: value(s) for seed, s in personalized[a].items()} for a in (reference, other))
            seeds = sorted(s for s in set(ref) & set(own) if ref[s] is not None and own[s] is not None)
            t = paired_test([ref[s] for s in seeds], [own[s] for s in seeds])
            p = [("-" if v is None else f"{v:.3f}") for v in (t["t_p"], t["wilcoxon_p"])]
            diff = "-" if t["mean_diff"] is None else f"{t['mean_diff']:+.2f}"
            lines.append(f"| {other} vs {reference} | {metric} | {t['n']} | {diff} | {t['wins']} / {t['losses']} | "
                         f"{p[0]} | {p[1]} |")
    return "\n".join(lines)


def table(tasks: list[str], by_algorithm: dict) -> str:
    header = ["method", *("caption CIDEr-D" if t == "caption" else f"{t} %" for t in tasks), "mean acc %", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for algorithm in [a for a in ORDER if a in by_algorithm]:
        seeds = by_algorithm[algorithm]
        cells = [_cell([s.get(t) for s in seeds.values()], 2 if t == "caption" else 1) for t in tasks]
        means = [m for s in seeds.values() if (m := _mean_accuracy(s, tasks)) is not None]
        lines.append("| " + " | ".join([algorithm, *cells, _cell(means), str(len(seeds))]) + " |")
    return "\n".join(lines)


def main(bench_dir: str) -> None:
    tasks, personalized, pooled, seconds = collect(Path(bench_dir))
    print("### Personalized: each client's model on its own task's local test\n")
    print(table(tasks, personalized))
    print("\n### Global: the global (or reference) model on the pooled test of every task\n")
    print(table(tasks, pooled))
    print(f"\n### Paired, personalized ({PAIRED_NOTE})\n")
    print(paired(tasks, personalized))
    print("\n### Wall seconds per run (sum of rounds; fedavg's run also trains the baselines after)\n")
    for algorithm, values in seconds.items():
        print(f"- {algorithm}: {np.mean(values):.0f} s (seeds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main(sys.argv[1])
