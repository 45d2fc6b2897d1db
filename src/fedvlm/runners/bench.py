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

The tables and plots over the runs are written by `fedvlm.runners.bench_report`.
"""

import functools
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from fedvlm.config import Config, load_config
from fedvlm.errors import ConfigError
from fedvlm.runners import rundir
from fedvlm.runners.records import final_round
from fedvlm.runners.report import read_baselines, read_config, read_metrics

BENCH_KEYS = ("base", "algorithms", "partitions", "seeds")
# Set by the bench for every run; a bench file that sets them would be silently ignored.
SET_BY_BENCH = {"run.name", "run.output_dir", "run.seed", "run.overwrite"}
# Algorithm and partition names become directory names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
_STATUS_LABELS = {"finished": "finished", "resume": "to resume", "incomplete": "to redo", "new": "new"}
# Differences that do not change what a run computes.
_IGNORED_CHANGES = {"run.output_dir", "run.name", "run.progress", "run.overwrite"}


@dataclass
class Bench:
    """A loaded bench file: override strings (``section.key=value``) per part of the grid."""

    path: Path
    base: list[str]
    algorithms: dict[str, list[str]]
    partitions: dict[str, list[str]]
    seeds: list[int]


@dataclass
class BenchRun:
    """One cell of the grid with its validated config."""

    algorithm: str
    partition: str
    seed: int
    cfg: Config

    @property
    def name(self) -> str:
        return f"{self.algorithm}/{self.partition}/seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        # The same directory `fedvlm run` uses for a named run.
        return Path(self.cfg.run.output_dir) / self.cfg.run.name


# ---------------------------------------------------------------------------- loading


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style): ``[a, b]``, ``{a: b}``, ``0.01``, ``null``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return text.strip().removesuffix("\n...").strip()


def flatten_overrides(sections: Any, where: str) -> list[str]:
    """A nested mapping ``{section: {key: value}}`` as ``section.key=value`` override strings.

    ``where`` names the entry in error messages (e.g. ``bench file b.yaml: algorithms.fedprox``).
    Values stay whole (a dict value such as ``data.columns`` becomes ``{a: b}``).
    """
    if sections is None:
        return []
    if not isinstance(sections, dict):
        raise ConfigError(f"{where}: expected a mapping of config sections, got {sections!r}")
    overrides = []
    for section, keys in sections.items():
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}.{section}: expected a mapping of config keys, got {keys!r}")
        for key, value in keys.items():
            name = f"{section}.{key}"
            if name in SET_BY_BENCH:
                raise ConfigError(f"{where}: '{name}' is set by the bench for every run (remove it)")
            overrides.append(f"{name}={yaml_value(value)}")
    return overrides


def _named_entries(data: dict, key: str, where: str) -> dict[str, list[str]]:
    entries = data.get(key)
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: '{key}' must be a non-empty mapping of name -> config sections")
    result = {}
    for name, sections in entries.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{where}: {key} name {name!r} must be letters, digits, '_', '.', '+' or '-' "
                "(it becomes a directory name)"
            )
        result[name] = flatten_overrides(sections, f"{where}: {key}.{name}")
    return result


def load_bench(path: str | Path) -> Bench:
    """Read and check a bench file (structure only; `bench_runs` validates the configs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"bench file {path} is not valid YAML: {str(e).splitlines()[0]}")
    where = f"bench file {path}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(BENCH_KEYS)}")
    for key in data:
        if key not in BENCH_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}' (valid: {', '.join(BENCH_KEYS)})")
    seeds = data.get("seeds")
    if (
        not isinstance(seeds, list) or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of distinct integers, got {seeds!r}")
    return Bench(
        path=path,
        base=flatten_overrides(data.get("base"), f"{where}: base"),
        algorithms=_named_entries(data, "algorithms", where),
        partitions=_named_entries(data, "partitions", where),
        seeds=seeds,
    )


def bench_runs(bench: Bench, out_dir: str | Path) -> list[BenchRun]:
    """Build and validate the config of every run, in running order (seed, partition,
    algorithm). Raises ConfigError naming the bench file, the run and the key. Touches no file."""
    runs = []
    for seed in bench.seeds:
        for partition, partition_overrides in bench.partitions.items():
            for algorithm, algorithm_overrides in bench.algorithms.items():
                name = f"{algorithm}/{partition}/seed{seed}"
                overrides = [
                    *bench.base, *partition_overrides, *algorithm_overrides,
                    f"run.seed={seed}",
                    f"run.output_dir={yaml_value(str(Path(out_dir) / algorithm / partition))}",
                    f"run.name=seed{seed}",
                    "run.progress=false",
                ]
                try:
                    cfg = load_config(None, overrides)
                except ConfigError as e:
                    raise ConfigError(
                        f"bench file {bench.path}: run {name} "
                        f"(base + partitions.{partition} + algorithms.{algorithm}): {e}"
                    ) from None
                runs.append(BenchRun(algorithm, partition, seed, cfg))
    return runs


# ---------------------------------------------------------------------------- running


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
    from fedvlm.runners.baselines import run_baselines
    from fedvlm.runners.report import write_report
    from fedvlm.runners.simulate import run_simulation

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


def run_bench(
    bench: Bench, out_dir: str | Path, log: Callable[[str], None] = functools.partial(print, flush=True)
) -> list[BenchRun]:
    """Run (or continue) every run of ``bench`` under ``out_dir``; one ``log`` line per run.

    All configs and existing run directories are checked before the first run starts.
    """
    runs = bench_runs(bench, out_dir)
    statuses = [run_status(run) for run in runs]
    counts = {label: statuses.count(s) for s, label in _STATUS_LABELS.items()}
    log(f"bench {bench.path}: {len(runs)} runs in {out_dir} ("
        + ", ".join(f"{n} {label}" for label, n in counts.items() if n) + ")")
    width = len(str(len(runs)))
    for i, (run, status) in enumerate(zip(runs, statuses), start=1):
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

