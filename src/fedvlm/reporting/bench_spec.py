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

BENCH_KEYS = ("base", "algorithms", "partitions", "seeds")
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
