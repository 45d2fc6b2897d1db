"""Peak RSS of a whole SCAFFOLD simulator run: 100 clients vs 10 clients, same training per round.

DESIGN.md: the simulator holds one base model and memory must not grow with the number of
clients; a client's persistent state lives in its store on disk. The benchmark uses a
stateful strategy, ``federated.strategy=scaffold``: every client that trains keeps its
control variate c_i (adapter-sized) in ``RUN_DIR/clients/<id>/``. With LoRA r=128 one c_i
is about 7.7 MB, so a simulator that kept a copy per client in memory would add about
(100 - 10) x 7.7 MB = 0.7 GB to the 100-client job, several times the 15 % allowance.
The script prints that margin from the numbers it measures.

Both jobs train the same number of clients per round (10) for the same steps and rounds:
100 clients with ``federated.fraction=0.1`` vs 10 clients with ``fraction=1.0``. The
number of rounds is the first at which the simulator's own client sampling (seed
``[run.seed, 5]``, replayed with ``fedvlm.core.sampling.sampling_plan``) has drawn all
100 clients, so every client trains at least once and has its c_i on disk; after each
job the script checks that every client directory holds a ``scaffold_c`` file.
Everything else ``fedvlm run`` does is kept (round-0 and per-round evaluation, the
local evaluation of every client every round, adapters, checkpoints).

Each job is ``python -m fedvlm.cli run ...`` in its own child process; its peak RSS is
the ``ru_maxrss`` that ``os.wait4`` returns for that one child (Linux: the child's own
high-water mark, plus that of any children it waited for), so jobs do not contaminate
each other as ``RUSAGE_CHILDREN`` (a maximum over all children ever waited for) would.
The two configurations are interleaved (small, large, large, small, ...) and medians
reported.

``--self-check`` shows that the benchmark can fail. It runs both jobs through a wrapper
(``python -c``) that replaces ``fedvlm.engine.rundir.ClientStore.save`` with one that
saves as before and also keeps a copy of the state in a module-level dict keyed by
client, then calls ``fedvlm.cli.main``: the simulator then holds every client's c_i in
memory, as a leaking simulator would. The benchmark must report FAIL for it. The leak
lives only in this script; the product has no switch for it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory.py --repeats 2
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory.py --self-check

Target: median peak(100 clients) / median peak(10 clients) <= 1.15. Exit status 0 when
the target is met (with --self-check: when the leaking run is reported FAIL), else 1.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedvlm.core.sampling import sampling_plan

TARGET = 1.15
SEED = 0
RUN_NAME = "bench"
STATE_NAME = "scaffold_c"  # what engine/client.py saves in each SCAFFOLD client's store

# Run in the child instead of ``-m fedvlm.cli`` for --self-check: every state a client
# saves is also kept in memory (the newest per client and name), then the CLI runs as usual.
LEAK_WRAPPER = """
import sys
import fedvlm.engine.rundir as rundir
from fedvlm.cli import main

HELD = {}
_save = rundir.ClientStore.save

def save_and_keep(self, client_id, name, state, round_num):
    _save(self, client_id, name, state, round_num)
    HELD[(client_id, name)] = {k: v.copy() for k, v in state.items()}

rundir.ClientStore.save = save_and_keep
sys.exit(main(sys.argv[1:]))
"""


def rounds_to_cover(num_clients: int, fraction: float, min_clients: int = 1, limit: int = 10_000) -> int:
    """The first round by which the simulator's sampling has drawn every client.

    ``run_simulation`` samples with ``np.random.default_rng(seed_for(seed, Stream.SAMPLING))`` =
    ``default_rng([run.seed, 5])`` over client ids "0".."N-1" (an iid partition keeps all
    N); the jobs' client stores are checked afterwards all the same.
    """
    ids = [str(i) for i in range(num_clients)]
    rng = np.random.default_rng([SEED, 5])
    seen: set[str] = set()
    for r in range(1, limit + 1):
        seen.update(sampling_plan(ids, 1, fraction, min_clients, rng)[0])
        if len(seen) == num_clients:
            return r
    raise SystemExit(f"sampling does not cover {num_clients} clients within {limit} rounds")


def overrides(args, rounds: int) -> tuple[list[str], dict[int, list[str]]]:
    common = [
        f"run.name={RUN_NAME}",
        f"run.seed={SEED}",
        "run.progress=false",
        "run.baselines=[]",
        "federated.strategy=scaffold",
        f"federated.rounds={rounds}",
        f"lora.r={args.rank}",
        f"lora.alpha={2 * args.rank}",
        f"train.local_steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        "data.pooled_test_size=10",
        "partition.method=iid",
        "partition.min_partition_size=0",
        "partition.max_local_test=2",
    ]
    variants = {
        args.per_round: [f"partition.num_clients={args.per_round}", "federated.fraction=1.0"],
        args.clients: [f"partition.num_clients={args.clients}", f"federated.fraction={args.per_round / args.clients}"],
    }
    return common, variants


def check_run(run_dir: Path, num_clients: int) -> dict:
    """Every client has its c_i on disk; return the sizes measured from the run."""
    stored = sorted(
        d.name for d in (run_dir / "clients").iterdir() if any(d.glob(f"{STATE_NAME}.round_*.safetensors"))
    )
    if len(stored) != num_clients:
        raise SystemExit(f"{run_dir}: only {len(stored)} of {num_clients} clients have {STATE_NAME} on disk")
    one = sorted((run_dir / "clients" / stored[0]).glob(f"{STATE_NAME}.round_*.safetensors"))[-1]
    state_mb = sum(a.nbytes for a in load_file(str(one)).values()) / 2**20
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = records[-1]
    # SCAFFOLD's upload is the trained adapter y plus dc = c_i+ - c_i: two adapter-sized messages.
    up_mb = last["bytes_up"] / len(last["clients"]) / 2**20
    return {"state_mb": state_mb, "up_mb_per_client": up_mb, "stored": len(stored)}


def run_once(num_clients: int, common: list[str], extra: list[str], threads: int, leak: bool):
    """Run one simulator job in a child; return (peak RSS in MB, wall seconds, sizes)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    entry = ["-c", LEAK_WRAPPER] if leak else ["-m", "fedvlm.cli"]
    with tempfile.TemporaryDirectory(prefix=f"fedvlm-mem{num_clients}-") as tmp:
        cmd = [sys.executable, *entry, "run", f"run.output_dir={tmp}", *common, *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.read()  # drain the pipe before waiting, so the child never blocks
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(out.decode(errors="replace")[-3000:])
            raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
        sizes = check_run(Path(tmp) / RUN_NAME, num_clients)
    return usage.ru_maxrss / 1024.0, seconds, sizes  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None,
                    help="alternations, each runs both jobs (default 2; 1 with --self-check)")
    ap.add_argument("--self-check", action="store_true",
                    help="run the jobs through a wrapper that keeps every client's saved state in "
                         "memory; the benchmark must then report FAIL")
    ap.add_argument("--clients", type=int, default=100, help="clients of the large job (100)")
    ap.add_argument("--per-round", type=int, default=10,
                    help="clients trained per round in both jobs = clients of the small job (10)")
    ap.add_argument("--rank", type=int, default=128, help="lora.r (128; lora.alpha = 2r)")
    ap.add_argument("--steps", type=int, default=1, help="train.local_steps (1)")
    ap.add_argument("--batch-size", type=int, default=4, help="train.batch_size (4)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads in the children (default 1: on the shared 2-core "
                         "machine 2 threads made every step ~25x slower; 0 leaves the env alone)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.self_check else 2)
    small, large = args.per_round, args.clients
    if not 0 < small < large:
        ap.error("need 0 < --per-round < --clients")

    rounds = rounds_to_cover(large, small / large)
    common, variants = overrides(args, rounds)
    mode = "SELF-CHECK (every client's saved state also kept in memory)" if args.self_check else "normal"
    print(f"mode: {mode}")
    print(f"python {sys.version.split()[0]}  cpu count {os.cpu_count()}  child threads: "
          f"{args.threads or 'default'}  load average {os.getloadavg()[0]:.1f}")
    print(f"rounds: {rounds} (the first round by which sampling {small} of {large} per round "
          f"has drawn every client)")
    print("common overrides:", " ".join(common))
    for n, extra in variants.items():
        print(f"  {n:>3} clients:", " ".join(extra))
    peaks = {n: [] for n in variants}
    sizes = {}
    for r in range(repeats):
        order = (small, large) if r % 2 == 0 else (large, small)
        for n in order:
            mb, sec, sizes[n] = run_once(n, common, variants[n], args.threads, args.self_check)
            peaks[n].append(mb)
            print(f"alternation {r + 1}: {n:>3} clients  peak RSS {mb:8.1f} MB  ({sec:.0f}s; "
                  f"{sizes[n]['stored']} clients with {STATE_NAME} on disk)", flush=True)

    med = {n: statistics.median(v) for n, v in peaks.items()}
    ratio = med[large] / med[small]
    allowance = (TARGET - 1) * med[small]
    state_mb = sizes[large]["state_mb"]
    copies = (large - small) * state_mb
    print(f"per-client state: {STATE_NAME} = {state_mb:.2f} MB (sum of array nbytes); upload per "
          f"client {sizes[large]['up_mb_per_client']:.2f} MB (metrics bytes_up / clients = y + dc)")
    print(f"allowance: ({TARGET} - 1) x {med[small]:.1f} MB (median peak, {small} clients) = "
          f"{allowance:.1f} MB")
    print(f"a per-client copy would add {large} clients x {state_mb:.2f} MB = {large * state_mb:.1f} MB "
          f"to the {large}-client job, ({large} - {small}) x {state_mb:.2f} MB = {copies:.1f} MB more than "
          f"to the {small}-client job = {copies / allowance:.1f} x the allowance")
    if copies < 2 * allowance:
        print("WARNING: a per-client copy would stay within twice the allowance; this configuration "
              "cannot reliably catch one (use more --clients or a larger --rank)")
    passed = ratio <= TARGET
    print(f"median peak RSS: {small} clients {med[small]:.1f} MB  {large} clients {med[large]:.1f} MB  "
          f"ratio {ratio:.3f}  ({med[large] - med[small]:+.1f} MB)  "
          f"(target <= {TARGET}: {'PASS' if passed else 'FAIL'})")
    if args.self_check:
        verdict = "PASS: the benchmark did NOT catch the leak" if passed else "FAIL, as it must be"
        print(f"self-check: the leaking run was reported {verdict}")
        return 1 if passed else 0
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
