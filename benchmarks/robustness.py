"""Robust federation on the embedded default job with 8 clients: faults and attacks.

Runs, each an ordinary ``fedvlm run`` (same data, seed and budget; the default job's model
and data, 8 clients):

- ``clean``: FedAvg, every client honest;
- ``faults``: FedAvg with 2 of the 8 clients (25%) failing each round, picked at random,
  the kind rotating over every fault of ``fedvlm.client.faults.FAULTS`` (raise, hang, NaN, Inf,
  shape, dtype, missing and extra keys, norm x1e6): each round completes from the rest;
- ``clean/<aggregator>``: each robust aggregator with every client honest (its own cost);
- for ``sign_flip`` (the update reversed) and ``scale`` (the update times ``--scale``), 2
  of the 8 clients attacking every round, under FedAvg, coordinate-wise median, trimmed mean
  (beta 0.25: 2 dropped at each end), Krum (f=2), Multi-Krum (f=2, the 6 best kept) and
  norm-bounded averaging; the same for ``noise`` (Gaussian noise of ``--noise`` times the
  update's RMS added to it) and ``label_flip`` (honest training on the client's rows with
  every answer mapped to another of its answers);
- ``backdoor``: 2 of the 8 clients put a checkerboard trigger on half their images with the
  answer ``--target``, and boost their change ``--boost`` times (model replacement), under
  the same five aggregators; the table adds the trigger's success rate on the pooled test
  questions whose answer is another.

Prints and writes (``--out``) a table of final pooled accuracy and its difference from the
clean run, the backdoor's success rate, the clients left out and why, and the seconds each
run took.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python benchmarks/robustness.py --out bench-robust

On two cores, two processes of one thread each finish sooner, each with its share of the
runs and ``--reuse``; then ``--summarize`` writes the table of every finished run:

    OMP_NUM_THREADS=1 ... robustness.py --reuse --only clean faults sign_flip/fedavg ... &
    OMP_NUM_THREADS=1 ... robustness.py --reuse --only scale/fedavg ...
    ... robustness.py --summarize
"""

import argparse
import json
import random
import time
from pathlib import Path

from fedvlm.cli import main as fedvlm
from fedvlm.client.faults import FAULTS

ATTACKERS = ["0", "1"]
STRATEGIES = {
    "fedavg": [],
    "median": ["federated.strategy=median"],
    "trimmed_mean": ["federated.strategy=trimmed_mean", "federated.trim_beta=0.25"],
    "krum": ["federated.strategy=krum", "federated.krum_f=2"],
    "multi_krum": ["federated.strategy=krum", "federated.krum_f=2", "federated.krum_m=6"],
    "norm_bound": ["federated.strategy=norm_bound"],
}


def rotating_faults(clients: int, rounds: int, share: float, seed: int) -> str:
    """``share`` of the clients fail each round, picked at random (seeded), each with the
    next fault kind in turn, so every kind occurs once the run has had as many faults."""
    rng = random.Random(seed)
    per_round = max(1, round(share * clients))
    entries, k = [], 0
    for r in range(1, rounds + 1):
        for c in sorted(rng.sample(range(clients), per_round)):
            entries.append(f"{{kind: {FAULTS[k % len(FAULTS)]}, clients: [{c}], rounds: [{r}]}}")
            k += 1
    return "[" + ", ".join(entries) + "]"


def final(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    left_out = [why for r in records for why in (r.get("failed") or {}).values()]
    backdoor = next(iter((records[-1]["eval"].get("backdoor") or {}).values()), {})
    return {"accuracy": records[-1]["eval"]["accuracy"], "backdoor": backdoor.get("success_rate"), "left_out": len(left_out),
            "round_seconds": round(sum(r.get("seconds") or 0 for r in records), 1),
            "updates": sum(len(r.get("clients") or {}) for r in records[1:]) + len(left_out),
            "reasons": sorted({why.split(":")[-1].split("(")[0].strip()[:40] for why in left_out})}


def curves(results: dict, out_dir: Path, path: Path) -> None:
    """Pooled accuracy after each round of every finished run: one panel per attack, each
    with the clean and faults runs for reference (the object API, as fedvlm's plots)."""
    from matplotlib.figure import Figure

    acc = {name: [r["eval"]["accuracy"] * 100 for r in map(json.loads, (out_dir / name.replace("/", "-") / "metrics.jsonl")
                                                             .read_text().splitlines()) if "eval" in r]
           for name, r in results.items() if r.get("exit") == 0}
    panels = [p for p in ("clean", "sign_flip", "scale", "noise", "label_flip", "backdoor")
              if any(name.split("/")[0] == p for name in acc)]
    colors = {name: f"C{i}" for i, name in enumerate(STRATEGIES)}  # one color per aggregator in every panel
    cols, rows = min(3, len(panels)), -(-len(panels) // 3)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels):
        for name, ys in acc.items():
            group, _, aggregator = name.partition("/")
            if name in ("clean", "faults"):  # FedAvg, every client honest: the reference in every panel
                ax.plot(range(len(ys)), ys, color="black" if name == "clean" else "gray", linestyle=":", label=name)
            elif group == panel:
                ax.plot(range(len(ys)), ys, color=colors[aggregator], marker=".", label=name)
        ax.set(title=panel.replace("_", " "), xlabel="round")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[::cols]:
        ax.set_ylabel("pooled test accuracy %")
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-robust"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=10.0, help="the scale attack's factor")
    parser.add_argument("--target", default="circle", help="the backdoor's target answer")
    parser.add_argument("--noise", type=float, default=10.0, help="the noise attack's standard deviation, in RMS of the update")
    parser.add_argument("--boost", type=float, default=4.0, help="the backdoor's model-replacement factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run names to run (default: all)")
    parser.add_argument("--reuse", action="store_true", help="read runs already finished in --out instead of rerunning them")
    parser.add_argument("--summarize", action="store_true", help="run nothing: the table of the runs finished in --out")
    args = parser.parse_args()
    common = ["run.progress=false", "run.baselines=[]", "partition.num_clients=8", f"federated.rounds={args.rounds}",
              f"train.local_steps={args.local_steps}", f"run.seed={args.seed}", f"run.output_dir={args.out}",
              "run.overwrite=true", "federated.round_timeout=600"]
    runs = {"clean": [], "faults": [f"federated.faults={rotating_faults(8, args.rounds, 0.25, args.seed)}"]}
    for name, extra in STRATEGIES.items():  # each aggregator's own cost, every client honest
        if extra:
            runs[f"clean/{name}"] = extra
    for attack in ("sign_flip", "scale", "noise", "label_flip"):
        scale = {"scale": args.scale, "noise": args.noise}.get(attack, 1.0)
        for name, extra in STRATEGIES.items():
            runs[f"{attack}/{name}"] = [*extra, f"federated.attacks=[{{kind: {attack}, clients: [{', '.join(ATTACKERS)}], scale: {scale}}}]"]
    for name, extra in STRATEGIES.items():
        runs[f"backdoor/{name}"] = [*extra, f"federated.attacks=[{{kind: backdoor, clients: [{', '.join(ATTACKERS)}], "
                                            f"target: '{args.target}', scale: {args.boost}}}]"]
    results = {}
    unknown = sorted(set(args.only or ()) - set(runs))
    if unknown:
        parser.error(f"--only: unknown run {unknown[0]!r} (runs: {', '.join(runs)})")
    for name in args.only or runs:  # in the order --only names them
        overrides = runs[name]
        start = time.perf_counter()
        run_name = name.replace("/", "-")
        done = args.out / run_name / "adapters" / "final"
        if args.summarize and not done.is_dir():
            continue
        if (args.reuse or args.summarize) and done.is_dir():  # a finished run of an earlier invocation
            code, seconds = 0, None
        else:
            code = fedvlm(["run", *common, *overrides, f"run.name={run_name}"])
            seconds = round(time.perf_counter() - start, 1)
        results[name] = {"exit": code, "seconds": seconds, **(final(args.out / run_name) if code == 0 else {})}
        print(name, results[name], flush=True)
    clean = results.get("clean", {}).get("accuracy")
    lines = ["| run | final accuracy % | vs clean (points) | backdoor success % | updates left out | seconds |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        acc = r.get("accuracy")
        diff = "" if acc is None or clean is None else f"{100 * (acc - clean):+.1f}"
        bd = r.get("backdoor")
        seconds = r["seconds"] if r["seconds"] is not None else r.get("round_seconds")  # rounds only, when read back
        lines.append(f"| {name} | {'' if acc is None else f'{100 * acc:.1f}'} | {diff} | {'' if bd is None else f'{100 * bd:.1f}'} | "
                     f"{r.get('left_out', '')} of {r.get('updates', '')} | {seconds} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only and not args.summarize:  # a share of the runs: its own files, the whole table stays
        return
    (args.out / "robustness.json").write_text(json.dumps(results, indent=1))
    (args.out / "robustness.md").write_text(table + "\n")
    curves(results, args.out, args.out / "robustness_curves.png")


if __name__ == "__main__":
    main()
