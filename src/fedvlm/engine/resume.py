"""What ``fedvlm run --resume RUN_DIR [overrides]`` may continue, checked before anything is written.

A resumed run must compute what the interrupted one would have, so an override may change
only what does not touch the trained model or its math: how many rounds to run (to extend
a run or stop it sooner) and options of progress display, evaluation batching, adapter
rotation and baselines. The changes are recorded at the top of ``config.yaml``.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from fedvlm.config import Config, load_config, save_config
from fedvlm.errors import ConfigError
from fedvlm.engine import rundir

SAFE_ON_RESUME = ("federated.rounds", "run.progress", "run.baselines", "eval.batch_size", "eval.keep_last")


@dataclass
class Resume:
    cfg: Config
    run_dir: Path
    completed: int | None  # the last completed round; None: start again from the beginning
    changes: list[str]  # "key: old -> new" of the overrides that changed something


def changed_keys(old: Config, new: Config) -> dict[str, tuple]:
    """``{"section.key": (old, new)}`` for every value that differs."""
    a, b = old.to_dict(), new.to_dict()
    return {
        f"{section}.{key}": (value, b[section][key])
        for section, keys in a.items()
        for key, value in keys.items()
        if b[section][key] != value
    }


def check_resume(run_dir: Path, overrides: list[str]) -> Resume:
    """Check that ``run_dir`` is a fedvlm run that can continue with ``overrides``; touch nothing.

    Raises a one-line error naming the directory or the keys: not a run, a damaged
    checkpoint or metrics file, an override of anything but `SAFE_ON_RESUME`, or fewer
    rounds than already completed.
    """
    if not run_dir.is_dir():
        raise ConfigError(
            f"--resume {run_dir}: no such directory (a run stopped before its inputs were checked writes "
            "nothing: start it again with the same command)"
        )
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a fedvlm run directory)")
    if not rundir.is_run_dir(run_dir):
        raise ConfigError(f"--resume {run_dir}: it holds files a fedvlm run does not write; not a run directory")
    saved = load_config(run_dir / rundir.CONFIG_FILE)
    cfg = load_config(run_dir / rundir.CONFIG_FILE, overrides)
    changes = changed_keys(saved, cfg)
    refused = sorted(k for k in changes if k not in SAFE_ON_RESUME)
    if refused:
        shown = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
        raise ConfigError(
            f"--resume {run_dir}: cannot change {shown} (it changes what the run trains); "
            f"a resumed run may change only {', '.join(SAFE_ON_RESUME)}"
        )
    if "federated.rounds" in changes:  # a target epsilon set the noise for the run's length
        for key in ("federated.dp_target_epsilon", "train.dp_sgd_target_epsilon"):
            section, name = key.split(".")
            value = cfg.federated.options.get(name) if section == "federated" else getattr(cfg.train, name)
            if value is not None and (section != "federated" or cfg.federated.privacy != "none") \
                    and (section != "train" or cfg.train.dp_sgd):
                raise ConfigError(
                    f"--resume {run_dir}: cannot change federated.rounds with {key} set (its noise was calibrated to "
                    f"spend epsilon {value} over {saved.federated.rounds} rounds); extend a private run with a noise "
                    "multiplier instead of a target epsilon")
    completed = rundir.latest_round(run_dir)
    if completed is not None:
        rundir.load_checkpoint(run_dir)  # every file of it loads, or a one-line error
        rundir.kept_metric_lines(run_dir, completed)
        if cfg.federated.rounds < completed:
            raise ConfigError(
                f"config key 'federated.rounds': {run_dir} has completed {completed} rounds; "
                f"expected at least {completed}, got {cfg.federated.rounds}"
            )
    return Resume(cfg, run_dir, completed, [f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()])


def record_resume(resume: Resume) -> None:
    """Rewrite ``config.yaml`` with the resumed values and one comment line saying when,
    after which round and with which changes (earlier such lines kept)."""
    path = resume.run_dir / rundir.CONFIG_FILE
    history = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# resumed")]
    after = "before round 1" if resume.completed is None else f"after round {resume.completed}"
    changes = "; ".join(resume.changes) or "no changes"
    history.append(f"# resumed {time.strftime('%Y-%m-%d %H:%M:%S')} {after}: {changes}")
    save_config(resume.cfg, path, history)
