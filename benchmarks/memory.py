"""Peak RSS of a whole simulator run: 100 clients vs 2 clients, same training per round.

Both runs train 2 clients per round for the same steps (100 clients with
federated.fraction=0.02 vs 2 clients with fraction=1.0), so the ratio shows what holding
many clients costs. Everything else ``fedvlm run`` does is kept, including the per-client
local evaluation of every client every round (100 clients x up to 10 local test rows in
the 100-client run vs 2 x 10 in the 2-client run).

Each run is ``python -m fedvlm.cli run ...`` in its own child process; its peak RSS is
the ``ru_maxrss`` that ``os.wait4`` returns for that one child (Linux: the child's own
high-water mark, plus that of any children it waited for), so runs do not contaminate
each other as ``RUSAGE_CHILDREN`` (a maximum over all children ever waited for) would.
The two configurations are interleaved (2, 100, 100, 2, ...) and medians reported.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory.py --repeats 2

Target: median peak(100 clients) / median peak(2 clients) <= 1.15.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMON = [
    "run.progress=false",
    "run.baselines=[]",
    "federated.rounds=2",
    "train.local_steps=5",
    "train.batch_size=16",
    "data.pooled_test_size=50",
    "partition.method=iid",
    "partition.min_partition_size=0",
    "partition.max_local_test=10",
]
VARIANTS = {
    2: ["partition.num_clients=2", "federated.fraction=1.0"],
    100: ["partition.num_clients=100", "federated.fraction=0.02"],
}


def run_once(num_clients: int, threads: int) -> tuple[float, float]:
    """Run one simulator job in a child; return (peak RSS in MB, wall seconds)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix=f"fedvlm-mem{num_clients}-") as tmp:
        cmd = [sys.executable, "-m", "fedvlm.cli", "run", f"run.output_dir={tmp}",
               *COMMON, *VARIANTS[num_clients]]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.read()  # drain the pipe before waiting, so the child never blocks
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(out.decode(errors="replace")[-3000:])
            raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    return usage.ru_maxrss / 1024.0, seconds  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="alternations (each runs both)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads in the children (default 1: on the shared 2-core "
                         "machine 2 threads made every step ~25x slower; 0 leaves the env alone)")
    args = ap.parse_args(argv)

    print(f"python {sys.version.split()[0]}  cpu count {os.cpu_count()}  child threads: "
          f"{args.threads or 'default'}")
    print("common overrides:", " ".join(COMMON))
    for n, extra in VARIANTS.items():
        print(f"  {n:>3} clients:", " ".join(extra))
    peaks = {n: [] for n in VARIANTS}
    for r in range(args.repeats):
        order = (2, 100) if r % 2 == 0 else (100, 2)
        for n in order:
            mb, sec = run_once(n, args.threads)
            peaks[n].append(mb)
            print(f"alternation {r + 1}: {n:>3} clients  peak RSS {mb:8.1f} MB  ({sec:.0f}s)", flush=True)
    med = {n: statistics.median(v) for n, v in peaks.items()}
    ratio = med[100] / med[2]
    print(f"median peak RSS: 2 clients {med[2]:.1f} MB  100 clients {med[100]:.1f} MB  "
          f"ratio {ratio:.3f}  ({med[100] - med[2]:+.1f} MB)  "
          f"(target <= 1.15: {'PASS' if ratio <= 1.15 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
