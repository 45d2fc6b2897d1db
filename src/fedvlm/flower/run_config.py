"""A fedvlm run as Flower run config: ``config`` (a fedvlm YAML path; empty for the embedded
default), ``overrides`` (``key=value`` pairs separated by spaces), ``run-dir`` (where the
ServerApp writes the run; simulated nodes keep their state under it too)."""

from pathlib import Path

from fedvlm.config import Config, load_config


def config_from_run_config(run_config: dict) -> Config:
    path = str(run_config.get("config", "")) or None
    return load_config(path, str(run_config.get("overrides", "")).split())


def run_dir_of(run_config: dict) -> Path:
    return Path(str(run_config["run-dir"]))
