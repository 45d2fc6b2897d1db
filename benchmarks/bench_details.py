"""Per-seed detail of a finished bench (``fedvlm bench``), for the tables of docs/results.md.

    python benchmarks/bench_details.py runs/bench-easyvqa --config configs/bench/easyvqa.yaml

For each algorithm of the partition (``--partition``, default the bench's first), in the
bench's order, one markdown row:

- the final pooled accuracy of every seed (%), in seed order;
- the mean over seeds of each seed's mean of the last three rounds (a fixed rule, not a
  selection on the test set; it smooths the round-to-round swing);
- the final accuracy per question type (``eval.by_type``), mean over seeds.

The centralized baseline (run beside the first algorithm) gets its finals and per-type
accuracies. It reads ``metrics.jsonl`` and ``baselines.json`` only.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from fedvlm.reporting.bench_spec import Bench, bench_runs, load_bench
from fedvlm.reporting.records import global_accuracy
from fedvlm.reporting.report import read_baselines, read_metrics

LAST = 3


def run_row(records: list[dict]) -> dict | None:
    """Final accuracy, mean of the last ``LAST`` rounds and final per-type accuracy of a run's
    ``metrics.jsonl`` records (fractions), or None when it has no evaluated round."""
    rounds = [(r["round"], acc, r["eval"]) for r in records
              if r.get("round", 0) > 0 and (acc := global_accuracy(r)) is not None]
    if not rounds:
        return None
    last = rounds[-LAST:]
    return {"final": rounds[-1][1], "last_mean": float(np.mean([a for _, a, _ in last])),
            "by_type": dict(rounds[-1][2].get("by_type") or {})}


def _mean_by_type(per_seed: list[dict], types: list[str]) -> list[str]:
    """Each type's accuracy (%), mean over the seeds that have it; blank where none has."""
    return [f"{100 * np.mean(values):.1f}" if (values := [d[t] for d in per_seed if t in d]) else "" for t in types]


def details(bench: Bench, bench_dir: Path, partition: str) -> tuple[list[str], list[list[str]]]:
    """(types, rows): one row per algorithm with at least one finished seed (in seed
    order), then centralized. A run counts once its last round is logged, as in the bench's
    own table (its baselines may still be running); others are left out."""
    finished, per_algorithm = {}, {a: [] for a in bench.algorithms}
    for run in bench_runs(bench, bench_dir):
        if run.partition != partition:
            continue
        records = read_metrics(run.run_dir)
        if run.cfg.federated.rounds in {r.get("round") for r in records} and (row := run_row(records)):
            finished.setdefault(run.algorithm, []).append(run.run_dir)
            per_algorithm[run.algorithm].append(row)
    types = sorted({t for runs in per_algorithm.values() for r in runs for t in r["by_type"]})
    rows = []
    for algorithm, runs in per_algorithm.items():
        if not runs:
            continue
        finals = " / ".join(f"{100 * r['final']:.1f}" for r in runs)
        by_type = _mean_by_type([r["by_type"] for r in runs], types)
        rows.append([algorithm, finals, f"{100 * np.mean([r['last_mean'] for r in runs]):.1f}", *by_type])
    central = [c for d in finished.get(next(iter(bench.algorithms)), [])
               if (c := read_baselines(d).get("centralized")) and c.get("accuracy") is not None]
    if central:
        by_type = _mean_by_type([c.get("by_type") or {} for c in central], types)
        rows.append(["centralized", " / ".join(f"{100 * c['accuracy']:.1f}" for c in central), "", *by_type])
    return types, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--config", type=Path, required=True, help="the bench file the runs came from")
    parser.add_argument("--partition", default=None, help="default: the bench's first partition")
    args = parser.parse_args(argv)
    bench = load_bench(args.config)
    partition = args.partition or next(iter(bench.partitions))
    types, rows = details(bench, args.bench_dir, partition)
    if not rows:
        print(f"{args.bench_dir}: no finished run of partition {partition!r}", file=sys.stderr)
        return 2
    header = ["algorithm", "final % per seed", f"mean of last {LAST} rounds %", *types]
    print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
