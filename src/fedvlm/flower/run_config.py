"""A fedvlm run as Flower run config (``[tool.flwr.app.config]``, snake_case keys):

- ``config``: a fedvlm YAML path (empty: the embedded default job);
- ``overrides``: a JSON list of ``section.key=value`` strings (empty: none), so a value
  with spaces (``data.system_prompt=You are a radiologist.``) stays one override;
- ``run_dir``: where the ServerApp writes the run (simulated nodes keep their state under it);
- ``resume``: continue the run in ``run_dir``.

Flower's run config holds scalars only, hence the JSON list. fedvlm's own engines pass
these as a TOML file (`write_run_config`) instead of a quoted command-line string.
"""

import json
from pathlib import Path

from fedvlm.config import Config, load_config
from fedvlm.errors import ConfigError

KEYS = ("config", "overrides", "run_dir", "resume")


def config_from_run_config(run_config: dict) -> Config:
    path = str(run_config.get("config", "")) or None
    return load_config(path, overrides_of(run_config))


def overrides_of(run_config: dict) -> list[str]:
    """The run config's ``overrides``: a JSON list of strings, or one line saying what it got."""
    text = str(run_config.get("overrides", "")).strip()
    if not text:
        return []
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"run config 'overrides': expected a JSON list of \"section.key=value\" strings, got {text[:80]!r}")
    return overrides


def run_dir_of(run_config: dict) -> Path:
    if not str(run_config.get("run_dir", "")):
        raise ConfigError("run config 'run_dir': expected the directory the run is written to")
    return Path(str(run_config["run_dir"]))


def write_run_config(path: Path, *, config: str = "", overrides: list[str] = (), run_dir: Path, resume: bool = False) -> Path:
    """The TOML file ``flwr run --run-config`` reads: the values as they are, no quoting by hand."""

    def toml(value) -> str:  # TOML's basic strings take JSON's escapes
        return ("true" if value else "false") if isinstance(value, bool) else json.dumps(str(value))

    values = {"config": config, "overrides": json.dumps(list(overrides)) if overrides else "",
              "run_dir": str(run_dir), "resume": resume}
    path.write_text("".join(f"{k} = {toml(v)}\n" for k, v in values.items()))
    return path
