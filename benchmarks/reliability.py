"""Kill a small job with SIGKILL at 10 moments, resume each, compare with an uninterrupted run.

One reference run goes straight through. Then the same job (same config and seed) is
started 10 times and killed once each:

- at the start of the zero-shot evaluation, before round 1 completes;
- inside the checkpoint write of round 2, after its arrays are written and before its
  ``state.json`` (the old swap window);
- right after round 2's checkpoint is renamed into place, before round 1's is removed;
- at one moment while it loads its data and model (seeded);
- at 6 moments drawn uniformly from the part of the reference run after its directory
  appeared: rounds, checkpoints, baselines, report (seeded).

A run killed before its inputs (config, data, model) were checked has written nothing, not
even its directory; its recovery is to start the same command again, which the benchmark
does and says so. The targeted kills come from a wrapper (``--child``) that patches one function of the
run to SIGKILL its own process at that point; the product code has no test hook. Each
killed run is continued with ``fedvlm run --resume DIR`` and must end bit-identical to
the reference: the final adapter's bytes, ``metrics.jsonl`` and ``baselines.json`` without
their wall-clock fields. Prints k/10; the target is 10/10.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reliability.py [--seed 0] [--keep DIR]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = [
    "run.progress=false",
    "run.baselines=[centralized]",
    "data.max_train_examples=400",
    "data.pooled_test_size=24",
    "partition.num_clients=3",
    "partition.min_partition_size=5",
    "partition.max_local_test=8",
    "federated.rounds=4",
    "federated.strategy=scaffold",  # stateful on both sides: server c, each client's c_i
    "federated.fraction=0.67",  # 2 of 3 clients a round: participation counts must survive
    "train.local_steps=3",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "eval.batch_size=24",
]
TIMING = {"seconds", "train_seconds"}


def child(point: str, argv: list[str]) -> int:
    """Run ``fedvlm`` with ``argv``, SIGKILLing this process at ``point``."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # as the CLI does before its imports
    from fedvlm import cli
    from fedvlm.engine import rundir, simulate

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "zero-shot":
        real_eval = simulate.evaluate_global
        simulate.evaluate_global = lambda *a, **k: die() or real_eval(*a, **k)
    elif point == "checkpoint-arrays-written":
        real_write = rundir.write_atomic

        def write(path, text):
            if path.parent.name == "round_0002.tmp":
                die()
            return real_write(path, text)

        rundir.write_atomic = write
    elif point == "checkpoint-renamed":
        real_fsync = rundir._fsync_dir

        def fsync(path):
            real_fsync(path)
            if (path / "round_0002").is_dir():
                die()

        rundir._fsync_dir = fsync
    return cli.main(argv)


def fedvlm(
    args: list[str], point: str | None = None, kill_after: float | None = None, watch: Path | None = None
) -> tuple[int, float, float | None]:
    """Run fedvlm in a child; return (exit code, seconds, seconds until ``watch`` appeared).

    With ``kill_after``, SIGKILL the child that many seconds after ``watch`` (a run
    directory) appears, or after the start when ``watch`` is None."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", point or "none", "--", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    appeared = None
    while watch is not None and appeared is None and proc.poll() is None:
        if watch.is_dir():
            appeared = time.perf_counter() - start
        time.sleep(0.01)
    if kill_after is not None:
        try:
            proc.wait(timeout=max(0.0, kill_after - (time.perf_counter() - start - (appeared or 0.0))))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1]
    if proc.returncode not in (0, -signal.SIGKILL):
        sys.stderr.write(err[-2000:])
    return proc.returncode, time.perf_counter() - start, appeared


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def outcome(run_dir: Path) -> dict:
    """What must match: the final adapter's bytes and the metrics and baselines, timing removed."""
    final = run_dir / "adapters" / "final" / "adapter_model.safetensors"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    baselines = json.loads((run_dir / "baselines.json").read_text()) if (run_dir / "baselines.json").exists() else None
    return {
        "adapter": final.read_bytes() if final.exists() else None,
        "metrics": _strip(metrics),
        "baselines": _strip(baselines),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seeds the random kill times")
    ap.add_argument("--keep", help="keep the run directories here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="fedvlm-reliability-"))
    root.mkdir(parents=True, exist_ok=True)
    job = [*JOB, f"run.output_dir={root}"]

    code, reference_seconds, created = fedvlm(["run", *job, "run.name=reference"], watch=root / "reference")
    if code != 0 or created is None:
        raise SystemExit("the reference run failed")
    reference = outcome(root / "reference")
    print(f"reference run: {reference_seconds:.1f} s ({created:.1f} s loading before its directory appears), "
          f"{len(reference['metrics']) - 1} rounds")

    rng = random.Random(args.seed)
    kills = [("zero-shot", None, False), ("checkpoint-arrays-written", None, False), ("checkpoint-renamed", None, False)]
    kills.append((None, rng.uniform(0.2, 0.95) * created, False))  # while loading: nothing written yet
    # the rest uniformly over the part that writes (rounds, checkpoints, baselines, report)
    kills += [(None, rng.uniform(0.0, 0.95) * (reference_seconds - created), True) for _ in range(6)]
    identical = 0
    for i, (point, after, in_run) in enumerate(kills, start=1):
        name = f"killed{i:02d}"
        watch = root / name if in_run else None
        code, seconds, _ = fedvlm(["run", *job, f"run.name={name}"], point=point, kill_after=after, watch=watch)
        killed = code == -signal.SIGKILL
        from fedvlm.engine.rundir import latest_round

        started = (root / name).is_dir()
        done = latest_round(root / name) if started else None
        where = point or (f"{after:.1f} s into the run" if in_run else f"{after:.1f} s from the start")
        # The recovery a user follows: --resume the run directory; a run killed before its
        # inputs were checked has none (it wrote nothing), so it is started again as it was.
        recover = ["run", "--resume", str(root / name)] if started else ["run", *job, f"run.name={name}"]
        resume_code, resume_seconds, _ = fedvlm(recover)
        same = resume_code == 0 and outcome(root / name) == reference
        identical += same
        print(
            f"[{i:>2}/10] kill {where:<26} {'killed' if killed else 'finished first'} "
            f"(completed rounds: {done if done is not None else 'none'}"
            f"{'' if started else ', no run directory yet: rerun'}); resume exit {resume_code} in "
            f"{resume_seconds:.1f} s: {'bit-identical' if same else 'DIFFERENT'}",
            flush=True,
        )
    print(f"{identical}/10 resumed runs bit-identical to the uninterrupted one (target 10/10)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if identical == 10 else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        point, argv = sys.argv[2], sys.argv[4:]
        sys.exit(child(point, argv))
    sys.exit(main())
