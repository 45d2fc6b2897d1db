"""A bench file (``fedvlm bench``, `fedvlm.tools.bench`) loaded and checked: its grid of
algorithms x partitions x seeds as override lists, and where each run's directory is. What
the bench command runs and what the bench tables (`fedvlm.reporting.bench_report`) read."""

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedvlm.config import Config, load_config
from fedvlm.errors import ConfigError

BENCH_KEYS = ("base", "algorithms", "partitions", "seeds", "tune")
# Set by the bench for every run; a bench file that sets them would be silently ignored.
SET_BY_BENCH = {"run.name", "run.output_dir", "run.seed", "run.overwrite"}
# Algorithm and partition names become directory names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


@dataclass
class Bench:
    """A loaded bench file: override strings (``section.key=value``) per part of the grid."""

    path: Path
    base: list[str]
    algorithms: dict[str, list[str]]
    partitions: dict[str, list[str]]
    seeds: list[int]
    # algorithm -> (config key, candidate values) it is tuned on, per partition, before its runs
    tune: dict[str, tuple[str, list[Any]]] = None
    tune_runs: list[str] = None  # what every tuning run adds (it must set data.validation_size)

    def __post_init__(self):
        self.tune = self.tune or {}
        self.tune_runs = self.tune_runs or []


@dataclass
class BenchRun:
    """One cell of the grid with its validated config."""

    algorithm: str
    partition: str
    seed: int
    cfg: Config
    overrides: list[str] = None  # base + partition + algorithm (a tuned run's value is added to these)

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
    algorithms = _named_entries(data, "algorithms", where)
    tune, tune_runs = _tune(data.get("tune"), algorithms, where)
    return Bench(
        path=path,
        base=flatten_overrides(data.get("base"), f"{where}: base"),
        algorithms=algorithms,
        partitions=_named_entries(data, "partitions", where),
        seeds=seeds,
        tune=tune,
        tune_runs=tune_runs,
    )


def _tune(section: Any, algorithms: dict, where: str) -> tuple[dict[str, tuple[str, list[Any]]], list[str]]:
    """The ``tune`` section: ``runs`` (config sections every tuning run adds; they must hold
    out a validation set, ``data.validation_size``) and ``grid`` (algorithm -> {one config
    key: [candidate values]})."""
    if section is None:
        return {}, []
    where = f"{where}: tune"
    if not isinstance(section, dict) or set(section) - {"runs", "grid"} or not isinstance(section.get("grid"), dict):
        raise ConfigError(f"{where}: expected {{runs: config sections, grid: {{algorithm: {{section.key: [values]}}}}}}")
    runs = flatten_overrides(section.get("runs"), f"{where}.runs")
    if not any(o.startswith("data.validation_size=") and not o.endswith("=null") for o in runs):
        raise ConfigError(f"{where}.runs: must set data.validation_size (tuning selects on held-out training rows, "
                          "never on the reported test split)")
    grid = {}
    for algorithm, choice in section["grid"].items():
        if algorithm not in algorithms:
            raise ConfigError(f"{where}.grid: {algorithm!r} is not one of the bench's algorithms ({', '.join(algorithms)})")
        if not isinstance(choice, dict) or len(choice) != 1:
            raise ConfigError(f"{where}.grid.{algorithm}: expected one {{section.key: [values]}}, got {choice!r}")
        [(key, values)] = choice.items()
        if not isinstance(key, str) or key.count(".") != 1 or not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.grid.{algorithm}: expected a config key section.key and a non-empty list of "
                              f"values, got {key!r}: {values!r}")
        grid[algorithm] = (key, values)
    return grid, runs


def bench_runs(bench: Bench, out_dir: str | Path) -> list[BenchRun]:
    """Build and validate the config of every run, in running order (seed, partition,
    algorithm). Raises ConfigError naming the bench file, the run and the key. Touches no file."""
    runs = []
    for seed in bench.seeds:
        for partition, partition_overrides in bench.partitions.items():
            for algorithm, algorithm_overrides in bench.algorithms.items():
                name = f"{algorithm}/{partition}/seed{seed}"
                grid = [*bench.base, *partition_overrides, *algorithm_overrides]
                where = run_keys(seed, Path(out_dir) / algorithm / partition, f"seed{seed}")
                cfg = _checked(bench, name, f"base + partitions.{partition} + algorithms.{algorithm}", [*grid, *where])
                if algorithm in bench.tune:  # each candidate must make a valid run too
                    key, values = bench.tune[algorithm]
                    for value in values:
                        chosen = f"{key}={yaml_value(value)}"
                        _checked(bench, name, f"tune.grid.{algorithm}", [*grid, chosen, *where])
                        _checked(bench, name, "tune.runs", [*grid, *bench.tune_runs, chosen, *where])
                runs.append(BenchRun(algorithm, partition, seed, cfg, grid))
    return runs


def run_keys(seed: int, output_dir: Path, name: str) -> list[str]:
    """What the bench sets on every run it makes: seed, directory, no progress bars."""
    return [f"run.seed={seed}", f"run.output_dir={yaml_value(str(output_dir))}", f"run.name={yaml_value(name)}",
            "run.progress=false"]


def _checked(bench: Bench, name: str, parts: str, overrides: list[str]) -> Config:
    try:
        return load_config(None, overrides)
    except ConfigError as e:
        raise ConfigError(f"bench file {bench.path}: run {name} ({parts}): {e}") from None


def tuning_runs(bench: Bench, run: BenchRun) -> list[tuple[Any, Path, Config]]:
    """The tuning runs of ``run``'s algorithm and partition: (candidate value, run
    directory, config) each, seeded with the bench's first seed, evaluated on the held-out
    validation rows (``tune.runs``), in ``OUT/ALGORITHM/PARTITION/tune/<key>=<value>``."""
    key, values = bench.tune[run.algorithm]
    out = run.run_dir.parent / "tune"
    grid = []
    for value in values:
        name = f"{key.split('.')[1]}={yaml_value(value)}"
        overrides = [*run.overrides, *bench.tune_runs, f"{key}={yaml_value(value)}", *run_keys(bench.seeds[0], out, name)]
        grid.append((value, out / name, load_config(None, overrides)))
    return grid


# ---------------------------------------------------------------------------- running
