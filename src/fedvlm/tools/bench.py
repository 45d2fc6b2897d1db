"""``fedvlm bench``: a grid of ordinary runs (algorithms x partitions x seeds), resumable.

A bench file is YAML with four top-level keys::

    base:          # config sections applied to every run (the shape of a config file)
      federated: {rounds: 5}
    partitions:    # name -> config sections
      alpha0.1: {partition: {method: dirichlet, alpha: 0.1}}
    algorithms:    # name -> config sections; applied last, so they win over the partition
      fedprox: {federated: {strategy: fedprox, mu: 0.01}}
    seeds: [0, 1]

Each run's config is ``base + partition + algorithm`` plus ``run.seed``,
``run.output_dir=OUT/ALGORITHM/PARTITION`` and ``run.name=seedSEED``, so it lives in the
ordinary run directory ``OUT/ALGORITHM/PARTITION/seedSEED`` (``fedvlm report`` and
``fedvlm run --resume`` work on it). ``run.progress`` is forced off: the bench prints one
line per run. The bench sets ``run.name``, ``run.output_dir``, ``run.seed`` and decides
itself what to do with an existing directory, so setting those or ``run.overwrite`` in the
file is an error.

Every config is built and validated before anything runs. Runs go seed by seed (all
partitions and algorithms of the first seed, then the next seed), so an interrupted bench
already compares every algorithm. Rerunning the same command continues: finished runs are
skipped, runs with a checkpoint are resumed, a directory without a checkpoint (it never
completed a round) is replaced.

A ``tune`` section tunes one key per algorithm (e.g. a server optimizer's
``federated.server_lr``) on a validation split before that algorithm's runs::

    tune:
      runs: {data: {validation_size: 300}}          # added to every tuning run
      grid: {fedadam: {federated.server_lr: [0.001, 0.01, 0.1]}}

Per partition, one run per value (the bench's first seed) evaluates on ``data.validation_size``
rows held out of the training split, never on the test split; the value with the best final
validation score (the first on a tie) is written to ``OUT/ALGORITHM/PARTITION/tune/chosen.json``
and the algorithm's runs of that partition use it (the tables print it beside the row).

The bench file is read by `fedvlm.reporting.bench_spec`; the tables and plots over the runs
are written by `fedvlm.reporting.bench_report`.
"""

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from fedvlm.config import Config, load_config
from fedvlm.errors import ConfigError
from fedvlm.engine import rundir
from fedvlm.reporting.bench_spec import (  # noqa: F401 - the command's API
    Bench, BenchRun, bench_runs, load_bench, run_keys, tuning_runs, yaml_value,
)
from fedvlm.fileio import write_atomic
from fedvlm.reporting.records import final_round
from fedvlm.reporting.report import read_baselines, read_config, read_metrics

_STATUS_LABELS = {"finished": "finished", "resume": "to resume", "incomplete": "to redo", "new": "new"}
# Differences that do not change what a run computes.
_IGNORED_CHANGES = {"run.output_dir", "run.name", "run.progress", "run.overwrite"}


def is_finished(run: BenchRun) -> bool:
    """The last round is logged, the final adapter saved and every configured baseline run."""
    d = run.run_dir
    rounds = {r["round"] for r in read_metrics(d)}
    return (
        run.cfg.federated.rounds in rounds
        and (d / "adapters" / "final").is_dir()
        and all(b in read_baselines(d) for b in run.cfg.run.baselines)
    )


def _changed_keys(saved: dict, cfg: Config) -> list[str]:
    """Keys whose value in a run directory's ``config.yaml`` differs from ``cfg``."""
    current = cfg.to_dict()
    changed = []
    for section, keys in saved.items():
        for key, value in (keys.items() if isinstance(keys, dict) else ()):
            name = f"{section}.{key}"
            if name not in _IGNORED_CHANGES and key in current.get(section, {}) and current[section][key] != value:
                changed.append(f"{name}: {value!r} -> {current[section][key]!r}")
    return changed


def run_status(run: BenchRun) -> str:
    """``new``, ``finished``, ``resume`` (has a checkpoint) or ``incomplete`` (files but no
    completed round). A directory made with different settings, or holding files a run
    does not write, is a ConfigError: the bench never mixes results or deletes foreign files."""
    d = run.run_dir
    if not d.is_dir() or not any(d.iterdir()):
        return "new"
    if rundir.latest_round(d) is not None or is_finished(run):
        changed = _changed_keys(read_config(d), run.cfg)
        if changed:
            raise ConfigError(
                f"run directory {d} was made with other settings ({'; '.join(changed)}); "
                "remove it, or bench into another --out"
            )
        return "finished" if is_finished(run) else "resume"
    strays = sorted({p.name for p in d.iterdir()} - rundir.RUN_DIR_ENTRIES)
    if strays:
        raise ConfigError(f"{d} is not a fedvlm run directory (it holds {', '.join(strays)}); remove it")
    return "incomplete"


def _execute(run: BenchRun, status: str) -> None:
    from fedvlm.engine.baselines import run_baselines
    from fedvlm.reporting.report import write_report
    from fedvlm.engine.simulate import run_simulation

    d = run.run_dir
    if status == "incomplete":
        shutil.rmtree(d)
    if status != "resume":
        rundir.make_run_dir(d, replace=False)
    fed = run_simulation(run.cfg, d, resume=status == "resume")
    missing = [b for b in run.cfg.run.baselines if b not in read_baselines(d)]
    if missing:
        run_baselines(run.cfg, fed, d, missing)
    write_report(d)


def _final_accuracy(run_dir: Path) -> str:
    final = final_round(read_metrics(run_dir))
    return "-" if final is None else f"{100 * final[1]:.1f}%"


CHOSEN = "chosen.json"


def chosen_value(run: BenchRun) -> dict | None:
    """What tuning chose for ``run``'s algorithm and partition, if it has: ``{key, value,
    scores}``."""
    path = run.run_dir.parent / "tune" / CHOSEN
    return json.loads(path.read_text()) if path.is_file() else None


def with_chosen(run: BenchRun, chosen: dict) -> BenchRun:
    """``run`` with the tuned value set."""
    overrides = [*run.overrides, f"{chosen['key']}={yaml_value(chosen['value'])}"]
    cfg = load_config(None, [*overrides, *run_keys(run.seed, run.run_dir.parent, run.run_dir.name)])
    return BenchRun(run.algorithm, run.partition, run.seed, cfg, overrides)


def tune(bench: Bench, run: BenchRun, log: Callable[[str], None]) -> dict:
    """Run (or continue) the tuning runs of ``run``'s algorithm and partition and write the
    chosen value: the best final score on the validation rows."""
    key, _ = bench.tune[run.algorithm]
    scores = []
    for value, run_dir, cfg in tuning_runs(bench, run):
        candidate = BenchRun(run.algorithm, run.partition, bench.seeds[0], cfg, [])
        status = run_status(candidate)
        if status != "finished":
            start = time.perf_counter()
            _execute(candidate, status)
            log(f"  tuning {run.algorithm}/{run.partition} {key}={yaml_value(value)}: validation "
                f"{_final_accuracy(run_dir)}, {time.perf_counter() - start:.1f} s")
        final = final_round(read_metrics(run_dir))
        scores.append((value, None if final is None else final[1]))
    best = max(range(len(scores)), key=lambda i: (scores[i][1] is not None, scores[i][1] or 0.0, -i))
    chosen = {"key": key, "value": scores[best][0], "scores": [[v, s] for v, s in scores],
              "selected_on": f"data.validation_size rows of the training split, seed {bench.seeds[0]}"}
    write_atomic(run.run_dir.parent / "tune" / CHOSEN, json.dumps(chosen, indent=1) + "\n")
    log(f"  tuned {run.algorithm}/{run.partition}: {key}={yaml_value(chosen['value'])}")
    return chosen


def shard_runs(runs: list[BenchRun], shard: tuple[int, int] | None) -> list[BenchRun]:
    """The runs shard ``(k, n)`` of a bench runs: those of every n-th (algorithm, partition)
    pair from the k-th, so that one algorithm's tuning and all its seeds of a partition stay
    in one shard. ``None``: all of them."""
    if shard is None:
        return runs
    k, n = shard
    pairs = list(dict.fromkeys((r.algorithm, r.partition) for r in runs))
    mine = set(pairs[k::n])
    return [r for r in runs if (r.algorithm, r.partition) in mine]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 0 <= K < N; a one-line error otherwise."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise ConfigError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/2")
    return int(k), int(n)


def run_bench(
    bench: Bench, out_dir: str | Path, log: Callable[[str], None] = functools.partial(print, flush=True),
    shard: tuple[int, int] | None = None,
) -> list[BenchRun]:
    """Run (or continue) every run of ``bench`` under ``out_dir``; one ``log`` line per run.
    With ``shard=(k, n)`` only `shard_runs`' share: n such processes, one per core, run
    the bench between them (each run directory belongs to exactly one of them).

    All configs and existing run directories are checked before the first run starts.
    """
    runs = shard_runs(bench_runs(bench, out_dir), shard)
    runs = [with_chosen(run, chosen) if run.algorithm in bench.tune and (chosen := chosen_value(run)) else run
            for run in runs]
    statuses = [run_status(run) for run in runs]
    counts = {label: statuses.count(s) for s, label in _STATUS_LABELS.items()}
    share = "" if shard is None else f" (shard {shard[0]}/{shard[1]})"
    log(f"bench {bench.path}{share}: {len(runs)} runs in {out_dir} ("
        + ", ".join(f"{n} {label}" for label, n in counts.items() if n) + ")")
    width = len(str(len(runs)))
    for i, (run, status) in enumerate(zip(runs, statuses), start=1):
        if run.algorithm in bench.tune and chosen_value(run) is None:  # tune first, then run with the value
            run = runs[i - 1] = with_chosen(run, tune(bench, run, log))
            status = run_status(run)
        prefix = f"[{i:>{width}}/{len(runs)}] {run.name}:"
        if status == "finished":
            log(f"{prefix} skipped (finished), final accuracy {_final_accuracy(run.run_dir)}")
            continue
        if status == "incomplete":
            log(f"{prefix} removing {run.run_dir}: it never completed a round")
        note = ""
        if status == "resume":
            done = rundir.latest_round(run.run_dir)
            note = f" (resumed after round {done})"
        start = time.perf_counter()
        try:
            _execute(run, status)
        except KeyboardInterrupt:
            log(f"{prefix} interrupted; rerun the same bench command to continue")
            raise
        log(f"{prefix} final accuracy {_final_accuracy(run.run_dir)}, "
            f"{time.perf_counter() - start:.1f} s{note}")
    return runs

