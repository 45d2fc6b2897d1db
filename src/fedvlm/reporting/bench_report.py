"""The summary of a bench (`fedvlm.tools.bench`): ``results.csv``, ``results.md`` and
``plots/accuracy_<partition>.png``, ``plots/accuracy_vs_uplink.png`` in the bench directory.

Only finished runs (their last round logged in ``metrics.jsonl``) count, so a partial bench
can be summarized; a cell without a finished seed shows ``-``. Statistics over seeds are
the mean and the population standard deviation (ddof=0): defined for one seed (std 0) and
numpy's default; with two seeds it is half their difference.
"""

import csv
from pathlib import Path
from typing import Any

import numpy as np

from fedvlm.reporting.html import write_html
from fedvlm.errors import DataError
from fedvlm.reporting.bench_spec import Bench, BenchRun, bench_runs, load_bench
from fedvlm.reporting.bench_plots import plot_accuracy_per_round, plot_accuracy_vs_uplink
from fedvlm.reporting.paired import paired_test
from fedvlm.reporting.records import (
    centralized_personalized,
    final_personalized,
    final_round,
    global_accuracy,
    local_personalized,
    number,
    personalized_accuracy,
)
from fedvlm.reporting.report import (
    MISSING,
    PLOTS_DIR,
    format_mb,
    format_pct,
    format_seconds,
    markdown_table,
    read_baselines,
    read_metrics,
)

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
CSV_COLUMNS = [
    "partition", "algorithm", "seeds",
    "final_accuracy_mean", "final_accuracy_std",
    "personalized_mean", "personalized_std", "client_std",
    "uplink_mb", "downlink_mb", "wall_seconds",
]
STD_NOTE = (
    "mean ± standard deviation over the finished seeds; the std is the population std "
    "(ddof=0), so a single seed shows ± 0.0"
)


def run_totals(run_dir: Path) -> dict[str, Any]:
    """A run's numbers from its ``metrics.jsonl``: final pooled accuracy in [0, 1], total
    bytes up / down and total ``seconds`` summed over all rounds, and ``curve``: round ->
    pooled accuracy (round 0 = zero-shot). No best round: it would be picked on the test set."""
    metrics = read_metrics(run_dir)
    final = final_round(metrics)

    def total(field: str) -> float:
        return sum(number(r.get(field)) or 0.0 for r in metrics)

    return {
        "final_accuracy": None if final is None else final[1],
        "personalized": final_personalized(metrics),  # (mean, std) across clients of their own models on their local tests
        "bytes_up": total("bytes_up"),
        "bytes_down": total("bytes_down"),
        "seconds": total("seconds"),
        "curve": {r["round"]: global_accuracy(r) for r in metrics if global_accuracy(r) is not None},
        "personal_curve": {r["round"]: personalized_accuracy(r)[0] for r in metrics if personalized_accuracy(r)},
    }


def collect_results(bench: Bench, runs: list[BenchRun]) -> dict[tuple[str, str], list[dict]]:
    """(partition, algorithm) -> `run_totals` of each seed whose last round is logged, in
    bench order (partitions, then algorithms). Unfinished runs are left out."""
    results: dict[tuple[str, str], list[dict]] = {(p, a): [] for p in bench.partitions for a in bench.algorithms}
    for run in runs:
        totals = {**run_totals(run.run_dir), "seed": run.seed}
        if run.cfg.federated.rounds in totals["curve"]:
            results[run.partition, run.algorithm].append(totals)
    return results


BASELINE_ROWS = {
    "centralized": ("centralized (same steps)", lambda b: number((b.get("centralized") or {}).get("accuracy"))),
    "local": ("local-only (mean over clients)", lambda b: number((b.get("local") or {}).get("mean_pooled"))),
}

# a baseline's personalized numbers, (mean, std across clients)
BASELINE_PERSONALIZED = {"local": local_personalized, "centralized": centralized_personalized}


def collect_baselines(bench: Bench, runs: list[BenchRun]) -> dict[tuple[str, str], list[float]]:
    """(partition, baseline) -> pooled accuracy per seed, from the first run of each
    (partition, seed) whose ``baselines.json`` has it (a baseline does not depend on the
    algorithm: the bench runs it with one algorithm only)."""
    found: dict[tuple[str, str, int], float] = {}
    for run in runs:
        recorded = read_baselines(run.run_dir)
        for name, (_, accuracy) in BASELINE_ROWS.items():
            value = accuracy(recorded)
            if value is not None:
                found.setdefault((run.partition, name, run.seed), value)
            own = BASELINE_PERSONALIZED.get(name, lambda b: None)(recorded)
            if own is not None:
                found.setdefault((run.partition, f"{name}:personalized", run.seed), own)
    out: dict[tuple[str, str], list] = {}
    for (partition, name, _), value in found.items():
        out.setdefault((partition, name), []).append(value)
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and population standard deviation (ddof=0: one value gives std 0); None if empty."""
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values))


def personalized_stats(per_seed: list) -> dict:
    """Over the seeds with personalized numbers ``(mean, std across clients)``: the mean and
    std over seeds of the clients' mean, and the mean over seeds of the across-client std."""
    present = [p for p in per_seed if p is not None]
    stats = mean_std([p[0] for p in present])
    mean, std = stats or (None, None)
    return {"personalized_mean": mean, "personalized_std": std,
            "client_std": float(np.mean([p[1] for p in present])) if present else None}


def summary_rows(results: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """One row per (partition, algorithm): accuracy mean/std in [0, 1], mean total bytes
    up/down and mean wall seconds over the finished seeds (None where no seed finished)."""
    rows = []
    for (partition, algorithm), totals in results.items():
        row = {"partition": partition, "algorithm": algorithm, "seeds": len(totals)}
        stats = mean_std([t["final_accuracy"] for t in totals if t["final_accuracy"] is not None])
        row["final_accuracy_mean"], row["final_accuracy_std"] = stats or (None, None)
        row.update(personalized_stats([t["personalized"] for t in totals]))
        for field in ("bytes_up", "bytes_down", "seconds"):
            row[field] = (mean_std([t[field] for t in totals]) or (None,))[0]
        rows.append(row)
    return rows


def write_results_csv(rows: list[dict], path: Path) -> Path:
    """``CSV_COLUMNS``: accuracies as fractions, MB = 10^6 bytes; empty cells where no seed finished."""

    def cell(value: Any, scale: float = 1.0) -> str:
        return "" if value is None else f"{value / scale:.6f}"

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([
                r["partition"], r["algorithm"], r["seeds"],
                cell(r["final_accuracy_mean"]), cell(r["final_accuracy_std"]),
                cell(r.get("personalized_mean")), cell(r.get("personalized_std")), cell(r.get("client_std")),
                cell(r["bytes_up"], 1e6), cell(r["bytes_down"], 1e6), cell(r["seconds"]),
            ])
    return path


def _pct_pm(mean: float | None, std: float | None) -> str:
    return MISSING if mean is None else f"{format_pct(mean)} ± {format_pct(std)}"


def tuned_values(bench: Bench, out_dir: Path) -> dict[tuple[str, str], str]:
    """(partition, algorithm) -> ``key=value`` that tuning chose (``tune/chosen.json``)."""
    import json

    out = {}
    for algorithm in bench.tune:
        for partition in bench.partitions:
            path = out_dir / algorithm / partition / "tune" / "chosen.json"
            if path.is_file():
                chosen = json.loads(path.read_text())
                out[partition, algorithm] = f"{chosen['key'].split('.')[1]}={chosen['value']}"
    return out


def paired_rows(bench: Bench, results: dict[tuple[str, str], list[dict]]) -> dict[str, list[dict]]:
    """Partition -> one `paired_test` per algorithm against the bench's first algorithm, over
    the seeds both finished (final accuracy in points)."""
    def finals(partition: str, algorithm: str) -> dict[int, float]:  # seed -> final accuracy
        return {t["seed"]: t["final_accuracy"] for t in results[partition, algorithm] if t["final_accuracy"] is not None}

    reference = next(iter(bench.algorithms))
    out: dict[str, list[dict]] = {}
    for partition in bench.partitions:
        ref = finals(partition, reference)
        rows = []
        for algorithm in bench.algorithms:
            if algorithm == reference:
                continue
            own = finals(partition, algorithm)
            seeds = sorted(set(ref) & set(own))
            test = paired_test([100 * ref[s] for s in seeds], [100 * own[s] for s in seeds])
            rows.append({"algorithm": algorithm, "reference": reference, **test})
        out[partition] = rows
    return out


def _p(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def render_paired(rows: list[dict]) -> list[str]:
    """The markdown lines of one partition's paired comparisons."""
    if not rows or all(r["n"] < 2 for r in rows):
        return []
    reference = rows[0]["reference"]
    table = [[r["algorithm"], str(r["n"]), MISSING if r["mean_diff"] is None else f"{r['mean_diff']:+.1f}",
              f"{r['wins']} / {r['losses']}", _p(r["t_p"]), _p(r["wilcoxon_p"])] for r in rows]
    return [f"Paired against `{reference}` on the same seeds ({PAIRED_NOTE}):", "",
            markdown_table(["algorithm", "pairs", "mean diff (points)", "ahead / behind", "paired t p",
                            "Wilcoxon p"], table), ""]


PAIRED_NOTE = ("final accuracy minus the reference's, per seed; two-sided paired t-test and exact Wilcoxon "
               "signed-rank test (scipy); no correction for the many comparisons; with 5 pairs the Wilcoxon "
               "p is at least 0.0625")


def render_results(
    bench: Bench, rows: list[dict], plots: dict[str, Path | None], baselines: dict | None = None,
    tuned: dict[tuple[str, str], str] | None = None, paired: dict[str, list[dict]] | None = None,
) -> str:
    """``results.md``: one table per partition (the algorithms, then the baselines found),
    its accuracy plot, then accuracy vs uplink."""
    baselines, tuned = baselines or {}, tuned or {}
    finished = sum(r["seeds"] for r in rows)
    total = len(bench.seeds) * len(rows)
    parts = [
        f"# Bench: {bench.path.stem}", "",
        f"- **bench file**: `{bench.path}`",
        f"- **runs finished**: {finished} / {total} (seeds {', '.join(map(str, bench.seeds))})",
        f"- **accuracy**: pooled test, %, final round (no best round: it would be picked on the test set); {STD_NOTE}",
        ("- **personalized**: each client's own model (the global model for global methods) on its own local "
         "test, mean over clients (unweighted), final round, then mean ± std over seeds; **client std**: the "
         "std across clients (ddof=0), mean over seeds"),
        "- **MB up / down**: total over all rounds and clients (MB = 10^6 bytes), mean over seeds",
        "- **wall s**: sum of the rounds' `seconds` (training + evaluation), mean over seeds",
        *([f"- **tuned**: {', '.join(f'{a} `{k}`' for a, (k, _) in bench.tune.items())}, per partition, on rows held "
           "out of the training split (one run per value, the first seed; `tune/chosen.json`); the value chosen is "
           "beside the algorithm. The accuracies here are on the test split, which the choice never saw; untuned "
           "algorithms run at their defaults, so a tuned one had more runs behind it"] if bench.tune else []),
        "",
    ]
    header = ["algorithm", "final acc %", "personalized %", "client std", "MB up", "MB down", "wall s", "seeds"]
    for partition, overrides in bench.partitions.items():
        parts += [f"## Partition `{partition}`", ""]
        if overrides:
            parts += [" ".join(f"`{o}`" for o in overrides), ""]
        table = [
            [
                r["algorithm"] + (f" ({tuned[partition, r['algorithm']]})" if (partition, r["algorithm"]) in tuned else ""),
                _pct_pm(r["final_accuracy_mean"], r["final_accuracy_std"]),
                _pct_pm(r.get("personalized_mean"), r.get("personalized_std")),
                MISSING if r.get("client_std") is None else format_pct(r["client_std"]),
                format_mb(r["bytes_up"]), format_mb(r["bytes_down"]), format_seconds(r["seconds"]),
                str(r["seeds"]),
            ]
            for r in rows if r["partition"] == partition
        ]
        for name, (label, _) in BASELINE_ROWS.items():
            values = baselines.get((partition, name))
            if values:
                mean, std = mean_std(values)
                own = personalized_stats(baselines.get((partition, f"{name}:personalized"), []))
                table.append([label, _pct_pm(mean, std), _pct_pm(own["personalized_mean"], own["personalized_std"]),
                              MISSING if own["client_std"] is None else format_pct(own["client_std"]),
                              MISSING, MISSING, MISSING, str(len(values))])
        parts += [markdown_table(header, table), ""]
        parts += render_paired((paired or {}).get(partition, []))
        for name, what in (("accuracy", "accuracy per round"), ("personalized", "personalized accuracy per round")):
            plot = plots.get(f"{name}_{partition}")
            if plot is not None:
                parts += [f"![{what}, {partition}]({PLOTS_DIR}/{plot.name})", ""]
    parts += ["## Final accuracy vs uplink", ""]
    plot = plots.get("accuracy_vs_uplink")
    parts += [f"![final accuracy vs uplink]({PLOTS_DIR}/{plot.name})" if plot else "_no finished runs yet_", ""]
    return "\n".join(parts)


def summarize_bench(out_dir: str | Path, bench: Bench | str | Path) -> dict[str, Path | None]:
    """Write ``results.csv``, ``results.md`` and ``plots/*.png`` in ``out_dir`` from the run
    directories there (finished runs only; works on a partial bench). ``bench`` is a
    loaded `Bench` or the path of its file. Returns name -> path (None: plot skipped, no data)."""
    bench = bench if isinstance(bench, Bench) else load_bench(bench)
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DataError(f"bench directory {out_dir} not found (run the bench first, or pass its --out)")
    runs = bench_runs(bench, out_dir)
    results = collect_results(bench, runs)
    rows = summary_rows(results)
    plots: dict[str, Path | None] = {}
    for partition in bench.partitions:
        curves = {a: [t["curve"] for t in results[partition, a]] for a in bench.algorithms}
        plots[f"accuracy_{partition}"] = plot_accuracy_per_round(
            curves, f"Global accuracy per round, partition {partition}",
            out_dir / PLOTS_DIR / f"accuracy_{partition}.png",
        )
        personal = {a: [t["personal_curve"] for t in results[partition, a] if t["personal_curve"]] for a in bench.algorithms}
        plots[f"personalized_{partition}"] = plot_accuracy_per_round(
            personal, f"Personalized accuracy per round (clients' own models, local tests), partition {partition}",
            out_dir / PLOTS_DIR / f"personalized_{partition}.png", ylabel="accuracy, mean over clients (%)",
        )
    plots["accuracy_vs_uplink"] = plot_accuracy_vs_uplink(rows, out_dir / PLOTS_DIR / "accuracy_vs_uplink.png")
    for name, path in plots.items():
        if path is None:  # no data now: drop a plot left from an earlier summary
            (out_dir / PLOTS_DIR / f"{name}.png").unlink(missing_ok=True)
    csv_path = write_results_csv(rows, out_dir / RESULTS_CSV)
    md_path = out_dir / RESULTS_MD
    md_path.write_text(render_results(bench, rows, plots, collect_baselines(bench, runs), tuned_values(bench, out_dir),
                                      paired_rows(bench, results)), encoding="utf-8")
    return {"csv": csv_path, "markdown": md_path, "html": write_html(md_path), **plots}
