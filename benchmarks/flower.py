"""fedvlm on a Flower deployment vs the in-process simulator: round wall time, base-model
loads per node, and each SuperNode's peak memory per round.

The same job runs twice, one after the other: the embedded default (tiny LLaVA, easy-VQA,
20 local steps of batch 32, the server's evaluation on 1,000 pooled questions and each
client's on its local test split every round) with ``partition.num_clients=2`` and
``--rounds`` rounds,

1. in process: ``python -m fedvlm.cli run ...`` in a child process;
2. on a loopback deployment (`fedvlm.flower.loopback`): one SuperLink with TLS and
   SuperNode authentication, two registered SuperNodes each with a fedvlm worker that keeps
   the model loaded, the run started with ``flwr run``.

Round wall time is the ``seconds`` metrics.jsonl records for each round (training,
aggregation, the server's and the clients' evaluation), the first round left out of the
median (the deployment's first messages also wait for the nodes' first polls). Base loads
per node are the ``node_loads`` each node reports with every training reply (setups of the
node in this run, counted in its state directory). A SuperNode's memory is the summed RSS
of its processes (the ``flower-supernode``, its ClientApp processes, its fedvlm worker),
sampled every 0.2 s from /proc; a round's peak is the largest sample taken while that
round ran.

Threads: the in-process run gets the machine (torch's default threads); each node gets
``--node-threads`` (default 1: two nodes on two cores), the ServerApp the default. The two
nodes train in parallel, the simulator's clients one after the other; the table says so.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/flower.py --rounds 10   # about 5 min
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/flower.py --rounds 4 --local-steps 200   # about 8 min
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/flower.py --rounds 3 --no-worker

Targets (the issue): deployment / in-process round time <= 1.25; 1 base load per node per
run; per node, the last round's peak RSS <= the first round's + 5 %. Exit status 0 when all
three hold.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fedvlm.flower.loopback import LoopbackDeployment

RATIO_TARGET, RSS_GROWTH = 1.25, 0.05


def job(rounds: int, steps: int) -> list[str]:
    return ["partition.num_clients=2", f"federated.rounds={rounds}", f"train.local_steps={steps}", "run.baselines=[]",
            "run.progress=false"]


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def round_seconds(recs: list[dict]) -> list[float]:
    return [r["seconds"] for r in recs if r["round"] >= 1]


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


class RssSampler(threading.Thread):
    """Per node, the peak summed RSS of its processes during each round of ``run_dir``."""

    def __init__(self, roots: dict[str, list[int]], run_dir: Path):
        super().__init__(daemon=True)
        self.roots, self.run_dir, self.stop = roots, run_dir, threading.Event()
        self.peaks: dict[str, dict[int, int]] = {n: {} for n in roots}

    def run(self):
        while not self.stop.is_set():
            done = [r["round"] for r in records(self.run_dir)]
            if done:  # round 0 (zero-shot) logged: the round running now is the next one
                running = max(done) + 1
                for node, pids in self.roots.items():
                    kb = sum(rss_kb(p) for root in pids for p in tree(root))
                    self.peaks[node][running] = max(self.peaks[node].get(running, 0), kb)
            time.sleep(0.2)


def in_process(root: Path, job: list[str]) -> tuple[list[dict], float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedvlm.cli", "run", *job, f"run.output_dir={root}",
                    "run.name=inproc"], check=True, stdout=subprocess.DEVNULL)
    return records(root / "inproc"), time.perf_counter() - start


def deployed(root: Path, job: list[str], node_threads: int, worker: bool) -> tuple[list[dict], float, dict]:
    run_dir = root / "deployed"
    with LoopbackDeployment(root / "deployment") as d:
        threads = {"OMP_NUM_THREADS": str(node_threads), "MKL_NUM_THREADS": str(node_threads)}
        for i in (0, 1):
            d.node(i, worker=worker, env=threads)
        roots = {str(i): [d.procs[name].pid for name in (f"node{i}", f"worker{i}") if name in d.procs] for i in (0, 1)}
        sampler = RssSampler(roots, run_dir)
        sampler.start()
        start = time.perf_counter()
        d.run(job, run_dir)
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    return records(run_dir), seconds, sampler.peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=20, help="steps per client per round (default job: 20)")
    parser.add_argument("--node-threads", type=int, default=1)
    parser.add_argument("--no-worker", dest="worker", action="store_false",
                        help="plain SuperNodes: flwr 1.42 starts a ClientApp process per message, "
                             "which sets the model up again every time")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="fedvlm-bench-flower-") as tmp:
        root = Path(tmp)
        work = job(args.rounds, args.local_steps)
        ours, ours_wall = in_process(root, work)
        theirs, theirs_wall, peaks = deployed(root, work, args.node_threads, args.worker)
    a, b = round_seconds(ours), round_seconds(theirs)
    ratio = statistics.median(b[1:]) / statistics.median(a[1:])
    same = [r["eval"]["accuracy"] for r in ours] == [r["eval"]["accuracy"] for r in theirs]
    print(f"job: embedded default, 2 clients, {args.rounds} rounds of {args.local_steps} local steps; "
          f"nodes {args.node_threads} thread(s) each, "
          f"{'with' if args.worker else 'without'} a fedvlm worker")
    print("round seconds  in-process:", " ".join(f"{s:.1f}" for s in a))
    print("round seconds  deployment:", " ".join(f"{s:.1f}" for s in b))
    print(f"whole run      in-process {ours_wall:.0f} s, deployment {theirs_wall:.0f} s (flwr run, incl. set-up)")
    print(f"same accuracy every round: {same}")
    ok_ratio = ratio <= RATIO_TARGET
    extra = statistics.median(b[1:]) - statistics.median(a[1:])
    print(f"median round (rounds 2..{args.rounds}): deployment / in-process = {ratio:.2f}, {extra:+.1f} s "
          f"(target <= {RATIO_TARGET}) {'PASS' if ok_ratio else 'FAIL'}")
    loads = {c: [r["clients"][c]["node_loads"] for r in theirs[1:] if c in r["clients"]] for c in ("0", "1")}
    ok_loads = all(set(v) == {1} for v in loads.values())
    print(f"base loads per node per run: {loads} {'PASS' if ok_loads else 'FAIL'}")
    ok_rss = True
    for node, per_round in peaks.items():
        first, last = per_round.get(1, 0), per_round.get(args.rounds, 0)
        good = 0 < last <= first * (1 + RSS_GROWTH)
        ok_rss &= good
        series = " ".join(f"{per_round[r] / 1024:.0f}" for r in sorted(per_round) if r <= args.rounds)
        print(f"node {node} peak RSS per round (MB): {series}; last/first = {last / max(first, 1):.3f} "
              f"{'PASS' if good else 'FAIL'}")
    return 0 if (ok_ratio and ok_loads and ok_rss and same) else 1


if __name__ == "__main__":
    sys.exit(main())
