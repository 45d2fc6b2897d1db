"""SecAgg+ on a loopback deployment: the adapter it gives against plain aggregation's, and
what it costs per round.

One loopback deployment (`fedvlm.flower.loopback`: a SuperLink with TLS and SuperNode
authentication, ``--nodes`` registered SuperNodes, each with a fedvlm worker that keeps
the model loaded) serves the embedded default job with ``partition.num_clients=--nodes``
and every round adapter kept, run alternately with plain aggregation and with
``federated.secure_aggregation=secaggplus``, ``--pairs`` times. Per round:

- seconds: metrics.jsonl's ``seconds`` (training, aggregation, the server's and the
  clients' evaluation) and ``train_seconds`` (the training exchange alone: one message per
  node plainly, SecAgg+'s four stages), the median over the pairs and the ratio;
- the largest coordinate gap between the two runs' round adapters, beside SecAgg+'s
  quantisation bound (``fedvlm.algorithms.secaggplus.options.quantization_bound``). Round 1
  starts both runs from the same adapter, so its gap is SecAgg+'s rounding alone and must
  be within the bound; later rounds start from adapters that already differ by that much,
  and training carries the difference on;
- the pooled accuracy of both.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/secagg.py --rounds 4 --out bench-secagg
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedvlm.algorithms.secaggplus.options import SecAggPlusOptions, quantization_bound
from fedvlm.flower.loopback import LoopbackDeployment


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def adapter(run_dir: Path, round_num: int) -> dict:
    return load_file(run_dir / "adapters" / f"round_{round_num:04d}" / "adapter_model.safetensors")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=1, help="plain/SecAgg+ runs, alternating")
    parser.add_argument("--node-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-secagg"))
    args = parser.parse_args()
    job = [f"partition.num_clients={args.nodes}", f"federated.rounds={args.rounds}", f"train.local_steps={args.local_steps}",
           f"eval.keep_last={args.rounds}", "run.baselines=[]", "run.progress=false"]
    settings = {"plain": [], "secagg": ["federated.secure_aggregation=secaggplus"]}
    runs: dict[str, list[Path]] = {name: [] for name in settings}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with LoopbackDeployment(args.out / "deployment") as d:
        threads = {"OMP_NUM_THREADS": str(args.node_threads), "MKL_NUM_THREADS": str(args.node_threads)}
        for i in range(args.nodes):
            d.node(i, worker=True, env=threads, of=args.nodes)
        for pair in range(args.pairs):
            for name, extra in settings.items():
                run_dir = args.out / f"{name}-{pair}"
                d.run([*job, *extra], run_dir)
                runs[name].append(run_dir)
    plain, secure = [records(r) for r in runs["plain"]], [records(r) for r in runs["secagg"]]
    print(f"{args.nodes} nodes, {args.rounds} rounds of {args.local_steps} steps, {args.pairs} pair(s), "
          f"{time.perf_counter() - start:.0f} s in all\n")
    print("| round | seconds plain | seconds SecAgg+ | ratio | train s plain | train s SecAgg+ | ratio "
          "| max gap | bound | acc plain | acc SecAgg+ |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for r in range(1, args.rounds + 1):
        row = {"round": r}
        for key in ("seconds", "train_seconds"):
            row[f"{key}_plain"] = statistics.median(recs[r][key] for recs in plain)
            row[f"{key}_secagg"] = statistics.median(recs[r][key] for recs in secure)
        a, b = adapter(runs["plain"][0], r), adapter(runs["secagg"][0], r)
        row["gap"] = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
        sizes = [m["train_size"] for m in secure[0][r]["clients"].values()]
        row["bound"] = quantization_bound(SecAggPlusOptions(), sizes)
        row["acc_plain"], row["acc_secagg"] = plain[0][r]["eval"]["accuracy"], secure[0][r]["eval"]["accuracy"]
        out.append(row)
        print(f"| {r} | {row['seconds_plain']:.1f} | {row['seconds_secagg']:.1f} | "
              f"{row['seconds_secagg'] / row['seconds_plain']:.2f} | {row['train_seconds_plain']:.1f} | "
              f"{row['train_seconds_secagg']:.1f} | {row['train_seconds_secagg'] / row['train_seconds_plain']:.2f} | "
              f"{row['gap']:.2e} | {row['bound']:.2e} | {100 * row['acc_plain']:.1f} | {100 * row['acc_secagg']:.1f} |")
    up_plain = plain[0][1]["bytes_up"]
    up_secure = secure[0][1]["bytes_up"]
    print(f"\nround 1 upload: plain {up_plain} bytes, SecAgg+ {up_secure} bytes ({up_secure / up_plain:.2f}x, "
          "the masked int64 vector)")
    (args.out / "secagg.json").write_text(json.dumps(out, indent=1))
    return 0 if out[0]["gap"] <= out[0]["bound"] + 1e-7 else 1


if __name__ == "__main__":
    raise SystemExit(main())
