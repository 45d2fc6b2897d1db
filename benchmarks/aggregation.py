"""Server-side LoRA aggregation at a 7B-model shape: svd_aggregate vs the naive average.

Builds K random client adapters (default 16) with 128 LoRA layers each (32 blocks x q/k/v/o
of a 7B model: B 4096 x 16, A 16 x 4096, float32, standard-normal values, seeded), then
times ``core.lora.svd_aggregate`` (FlexLoRA: exact weighted dW, truncated SVD to the server
rank) and ``core.aggregate.weighted_mean`` (FedIT's naive average of A and B).

Each measurement is its own child process, which sets OMP/OPENBLAS/MKL_NUM_THREADS before
numpy is imported, builds the inputs, and times one call. Its peak RSS is the ``ru_maxrss``
that ``os.wait4`` returns for that child alone, so it includes the inputs, the output and
the interpreter, and methods do not contaminate each other. The methods alternate (svd,
naive, naive, svd, ...) and the script reports medians.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py --repeats 3

Targets (default shape, error feedback off, 2 threads): svd_aggregate <= 10 s wall, and the
whole child's peak RSS <= 1.5 x the inputs' bytes (the 16 client states as float32 arrays).
With ``--error-feedback`` the residual (up to K r - r directions per layer, about the size
of the inputs) is returned as well, so the memory target does not apply.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGET_SECONDS = 10.0
GB = 1e9
TARGET_PEAK_RATIO = 1.5
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def build_states(layers: int, clients: int, rank: int, dim: int, seed: int = 0):
    """``clients`` adapter states of ``layers`` PEFT-named LoRA pairs, plus example counts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    states = []
    for _ in range(clients):
        state = {}
        for i in range(layers):
            prefix = f"base_model.model.model.layers.{i // 4}.self_attn.{PROJECTIONS[i % 4]}"
            state[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, dim), dtype=np.float32)
            state[f"{prefix}.lora_B.weight"] = rng.standard_normal((dim, rank), dtype=np.float32)
        states.append(state)
    weights = [float(n) for n in rng.integers(50, 500, size=clients)]
    return states, weights


def child(args) -> None:
    """Build the inputs, time one aggregation, print one JSON line (runs in the child)."""
    import resource

    import fedvlm
    from fedvlm.core.aggregate import weighted_mean
    from fedvlm.core.lora import svd_aggregate

    states, weights = build_states(args.layers, args.clients, args.rank, args.dim)
    input_bytes = sum(a.nbytes for s in states for a in s.values())
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scaling = 2.0  # alpha / r, the same for clients and server
    wall, cpu = time.perf_counter(), time.process_time()
    if args.child == "svd":
        # as FedAvg(error_feedback=True) calls it; without the flag, as merge and FedAvg do
        extra = {"with_residual": True, "residual_rank": args.rank * args.clients}
        out, errors, residual = svd_aggregate(
            states, weights, [scaling] * len(states), args.rank, scaling,
            **(extra if args.error_feedback else {}),
        )
        detail = {"mean_truncation_error": sum(errors.values()) / len(errors),
                  "residual_bytes": sum(a.nbytes for a in residual.values())}
    else:
        out, detail = weighted_mean(states, weights), {}
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "input_bytes": input_bytes,
                      "output_bytes": sum(a.nbytes for a in out.values()),
                      "rss_after_inputs": rss_inputs, "fedvlm": fedvlm.__file__, **detail}))


def run_once(method: str, args) -> dict:
    """One child process: its JSON report plus its own peak RSS in bytes."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--child", method, "--layers", str(args.layers),
           "--clients", str(args.clients), "--rank", str(args.rank), "--dim", str(args.dim)]
    if args.error_feedback:
        cmd.append("--error-feedback")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()  # drain the pipe before waiting, so the child never blocks
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-3000:])
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    report["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return report


def report_run(r: int, method: str, rep: dict) -> None:
    extra = f"  mean truncation error {rep['mean_truncation_error']:.3f}" if method == "svd" else ""
    if rep.get("residual_bytes"):
        extra += f"  residual {rep['residual_bytes'] / GB:.3f} GB"
    print(f"run {r + 1} {method:>5}: {rep['seconds']:7.2f} s wall  {rep['cpu_seconds']:7.2f} s cpu  "
          f"peak RSS {rep['peak_rss'] / GB:.3f} GB = {rep['peak_rss'] / rep['input_bytes']:.2f}x inputs "
          f"({rep['rss_after_inputs'] / GB:.3f} GB with just the inputs)  "
          f"load {os.getloadavg()[0]:.2f}{extra}", flush=True)


def verdict(runs: dict, args) -> bool:
    """Print each method's medians; return whether svd_aggregate met the targets."""
    ok = True
    for method, reps in runs.items():
        sec = statistics.median(r["seconds"] for r in reps)
        ratio = statistics.median(r["peak_rss"] / r["input_bytes"] for r in reps)
        line = f"median {method:>5}: {sec:.2f} s wall, peak RSS {ratio:.2f}x inputs"
        if method == "svd":
            fast, lean = sec <= TARGET_SECONDS, ratio <= TARGET_PEAK_RATIO
            ok = fast and (lean or args.error_feedback)
            memory = "n/a with --error-feedback" if args.error_feedback else "PASS" if lean else "FAIL"
            line += (f"  (targets: <= {TARGET_SECONDS:g} s {'PASS' if fast else 'FAIL'}, "
                     f"<= {TARGET_PEAK_RATIO:g}x {memory})")
        print(line)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=128)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rank", type=int, default=16, help="client rank = server rank")
    ap.add_argument("--dim", type=int, default=4096, help="d_in = d_out of every layer")
    ap.add_argument("--threads", type=int, default=2, help="OMP/OPENBLAS/MKL threads in the children")
    ap.add_argument("--repeats", type=int, default=1, help="alternations (each runs both methods)")
    ap.add_argument("--error-feedback", action="store_true",
                    help="also return the truncated tail (svd_aggregate(with_residual=True))")
    ap.add_argument("--child", choices=("svd", "naive"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    print(f"python {sys.version.split()[0]}  cpus {os.cpu_count()}  threads {args.threads}  "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"shape: {args.clients} clients x {args.layers} layers, B {args.dim}x{args.rank}, "
          f"A {args.rank}x{args.dim}, float32; server rank {args.rank}; "
          f"error feedback {'on' if args.error_feedback else 'off'}")
    runs = {"svd": [], "naive": []}
    for r in range(args.repeats):
        for method in ("svd", "naive") if r % 2 == 0 else ("naive", "svd"):
            rep = run_once(method, args)
            if not any(runs.values()):
                print(f"fedvlm from {rep['fedvlm']}\ninputs: {rep['input_bytes'] / GB:.3f} GB  "
                      f"output: {rep['output_bytes'] / GB:.3f} GB")
            runs[method].append(rep)
            report_run(r, method, rep)
    ok = verdict(runs, args)
    if (args.layers, args.clients, args.rank, args.dim, args.threads) == (128, 16, 16, 4096, 2):
        print("PASS" if ok else "FAIL")
    else:
        print("no verdict: the targets are for the default shape and 2 threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
