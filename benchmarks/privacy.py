"""Client-level differential privacy (DP-FedAvg) on the embedded default jobs: accuracy at
epsilon 1, 4 and 8 (delta 1e-5) and without DP, the mean of ``--seeds`` seeds, with the
noise multiplier the accountant needed for each epsilon over the run's rounds.

Each run is an ordinary ``fedvlm run`` of the job (``--config``: the VQA default, or
``configs/text/minilm_sentiment.yaml``), with uniform client weights in every row (DP-FedAvg
needs them, so the no-DP row gets them too, for an equal comparison), every client in every
round (q = 1) and clipping norm ``--clip``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/privacy.py --out bench-privacy
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/privacy.py --config configs/text/minilm_sentiment.yaml --out bench-privacy-text
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from fedvlm.cli import main as fedvlm


def final(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    return {"accuracy": last["eval"]["accuracy"], **{k: last.get("privacy", {}).get(k) for k in ("epsilon", "noise_multiplier")}}


def stopped(run_dir: Path) -> dict:
    """A run that stopped early: its last complete round and what its records say."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    last = records[-1] if records else {}
    return {"stopped": f"after round {last.get('round', 0)}",
            **{k: last.get("privacy", {}).get(k) for k in ("epsilon", "noise_multiplier")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a job YAML (default: the embedded VQA job)")
    parser.add_argument("--out", type=Path, default=Path("bench-privacy"))
    parser.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    # about the norm of one round's mean update in the default job (4.4, measured): clipping bites a little
    parser.add_argument("--clip", type=float, default=5.0, help="federated.dp_clip")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--reuse", action="store_true",
                        help="read runs already finished (or stopped) in --out instead of rerunning them")
    parser.add_argument("overrides", nargs="*", help="more section.key=value overrides for every run")
    args = parser.parse_args()
    common = [*([args.config] if args.config else []), "run.progress=false", "run.baselines=[]", "federated.weighting=uniform",
              f"run.output_dir={args.out}", "run.overwrite=true", *args.overrides]
    settings = {"no DP": []}
    for eps in args.epsilons:
        settings[f"ε={eps:g}"] = ["federated.privacy=dp_fedavg", f"federated.dp_target_epsilon={eps}",
                                  f"federated.dp_delta={args.delta}", f"federated.dp_clip={args.clip}"]
    results = {}
    for name, extra in settings.items():
        runs = []
        for seed in args.seeds:
            run_name = f"{name.replace('ε=', 'eps').replace(' ', '-')}-seed{seed}"
            start = time.perf_counter()
            done = args.out / run_name
            if args.reuse and (done / "adapters" / "final").is_dir():  # an earlier invocation's
                code = 0
            elif args.reuse and (done / "stopped.log").is_file():  # an earlier invocation's, stopped early
                code = 2
            else:
                code = fedvlm(["run", *common, *extra, f"run.seed={seed}", f"run.name={run_name}"])
                if code != 0:  # remember that it stopped, and why, for --reuse
                    (done / "stopped.log").write_text(f"exit {code}\n")
            runs.append({"exit": code, "seconds": round(time.perf_counter() - start, 1),
                         **(final(args.out / run_name) if code == 0 else stopped(args.out / run_name))})
            print(name, seed, runs[-1], flush=True)
        results[name] = runs
    lines = ["| setting | accuracy % (mean of seeds) | per seed | noise multiplier z | epsilon spent | seconds per run |",
             "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        accs = [r["accuracy"] for r in runs if "accuracy" in r]
        z = runs[0].get("noise_multiplier")
        spent = runs[0].get("epsilon")
        mean = f"{100 * statistics.mean(accs):.1f}" if accs else "stopped"
        per_seed = ", ".join(f"{100 * r['accuracy']:.1f}" if "accuracy" in r else f"stopped ({r.get('stopped', '')})" for r in runs)
        lines.append(f"| {name} | {mean} | {per_seed} | "
                     f"{'' if z is None else f'{z:.3g}'} | {'' if spent is None else f'{spent:.2f}'} | "
                     f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy.json").write_text(json.dumps(results, indent=1))
    (args.out / "privacy.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
