"""The run directory: resolved config, metrics log, adapters, checkpoint.

Layout::

    RUN_DIR/config.yaml              the resolved config (resume overrides recorded in it)
    RUN_DIR/metrics.jsonl            one JSON object per round (round 0 = zero-shot eval)
    RUN_DIR/baselines.json           centralized / local-only reference results
    RUN_DIR/adapters/round_NNNN      the global adapter after round N (the last few kept)
    RUN_DIR/adapters/final           the global adapter after the last round
    RUN_DIR/adapters/personalized/ID personalized adapters (FedSA-LoRA, FedALT: algorithms/fedalt/export.py)
    RUN_DIR/checkpoint/round_NNNN/   server state + RNG states after the last completed round
    RUN_DIR/clients/ID/              each client's persistent state (stateful algorithms)
    RUN_DIR/node-state-key           where nodes of a deployment keep this run's state
    RUN_DIR/report.md, plots/        the report

Every file that a later step reads back is replaced atomically (written beside, then
renamed), so a process killed at any moment leaves either the old or the new version.
fedvlm deletes or replaces only inside a directory that holds nothing but these entries.
"""

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fedvlm.core.types import AdapterState, ServerState
from fedvlm.errors import ConfigError, DataError
from fedvlm.fileio import write_atomic
from fedvlm.engine.records import METRICS_FILE

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"
STOPPED_FILE = "stopped.txt"  # why a ServerApp stopped the run early (its one line)
# Everything a run directory may hold (older versions also wrote checkpoint.tmp / .old).
RUN_DIR_ENTRIES = {
    CONFIG_FILE, METRICS_FILE, "baselines.json", "adapters", CHECKPOINT_DIR, "checkpoint.tmp",
    "checkpoint.old", "clients", "report.md", "report.html", "plots", "flower-superlink.log", "node-state-key", STOPPED_FILE,
    "tensorboard", "mlflow.db", "mlartifacts", "wandb",  # run.report_to (engine/trackers.py)
}


# ------------------------------------------------------------------------ the directory


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a directory fedvlm made: it has a ``config.yaml`` and holds
    nothing but the entries a run writes."""
    if not (path / CONFIG_FILE).is_file():
        return False
    return {p.name for p in path.iterdir()} <= RUN_DIR_ENTRIES


def check_new_run_dir(path: Path, overwrite: bool) -> bool:
    """Check, touching nothing, that a new run may go to ``path``; return whether an
    existing run there is to be replaced (``overwrite``). Raises ``ConfigError`` naming
    the directory if it exists and is not an empty directory or (with overwrite) a run."""
    _check_writable(path.parent)
    if not path.exists():
        return False
    if not path.is_dir():
        raise ConfigError(f"run directory {path} exists and is not a directory")
    if not any(path.iterdir()):
        return False
    if not is_run_dir(path):
        raise ConfigError(
            f"run directory {path} exists and is not a fedvlm run (it holds "
            f"{', '.join(sorted(p.name for p in path.iterdir())[:4])}); fedvlm never replaces it: choose another run.name"
        )
    if not overwrite:
        raise ConfigError(
            f"run directory {path} already exists; continue it with --resume {path}, "
            "or choose another run.name, or pass run.overwrite=true to replace it"
        )
    return True


def _check_writable(folder: Path) -> None:
    """``folder`` (the output directory) exists or can be made, and can be written."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config key 'run.output_dir': {folder} is not writable (at {existing})")


def make_run_dir(path: Path, replace: bool) -> Path:
    """Create ``path`` (after every input was checked); with ``replace``, first delete the
    fedvlm run there (`check_new_run_dir` said it is one)."""
    if replace:
        if not is_run_dir(path):  # checked before; never delete anything else
            raise ConfigError(f"run directory {path} is not a fedvlm run; not replacing it")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"config key 'run.output_dir': cannot create {path} ({e.strerror})") from None
    return path


def clear_run_outputs(path: Path) -> None:
    """Remove what a run wrote into ``path`` except its ``config.yaml``: a run that never
    completed a round starts again from the beginning."""
    if not is_run_dir(path):
        raise ConfigError(f"run directory {path} is not a fedvlm run; not clearing it")
    for entry in path.iterdir():
        if entry.name == CONFIG_FILE:
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


# --------------------------------------------------------------------------- metrics


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def kept_metric_lines(run_dir: Path, last_round: int) -> list[str]:
    """The lines of ``metrics.jsonl`` up to ``last_round``, checked: a damaged line is a
    one-line error naming it, except a last line cut short by a kill while it was appended
    (dropped)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # unterminated: an interrupted append
                continue
            raise DataError(f"{path}: line {number} is not valid JSON; the run's metrics are damaged") from None
        if not isinstance(record, dict) or not isinstance(record.get("round"), int):
            raise DataError(f"{path}: line {number}: expected a JSON object with an integer 'round'")
        if record["round"] <= last_round:
            kept.append(line)
    return kept


def truncate_metrics(run_dir: Path, last_round: int) -> None:
    """Drop metric lines of rounds after ``last_round`` (written before a crash)."""
    kept = kept_metric_lines(run_dir, last_round)
    if (run_dir / METRICS_FILE).exists():
        write_atomic(run_dir / METRICS_FILE, "".join(line + "\n" for line in kept))


# ------------------------------------------------------------------------ checkpoint


def save_checkpoint(run_dir: Path, state: ServerState, rng: np.random.Generator, extra: dict) -> None:
    """Write the server state and the server RNG after a completed round.

    It goes to ``checkpoint/round_NNNN/`` through a ``.tmp`` directory renamed into place
    once every file is written (``state.json`` last), and only then are older checkpoints
    removed: whenever the process dies, one complete checkpoint exists.
    """
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(exist_ok=True)
    final = root / f"round_{state.round:04d}"
    tmp = root / f"round_{state.round:04d}.tmp"
    for leftover in (tmp, final):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir()
    save_file(state.global_state, str(tmp / "global.safetensors"))
    for name, arrays in state.buffers.items():
        save_file(arrays, str(tmp / f"buffer.{name}.safetensors"))
    meta = {
        "round": state.round,
        "scalars": state.scalars,
        "buffers": sorted(state.buffers),
        "rng": rng.bit_generator.state,
        **extra,
    }
    write_atomic(tmp / "state.json", json.dumps(meta))
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for legacy in ("checkpoint.tmp", "checkpoint.old"):
        if (run_dir / legacy).is_dir():
            shutil.rmtree(run_dir / legacy)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Directories that may hold a complete checkpoint, newest layout first: the
    ``checkpoint/round_NNNN`` ones, then an older version's ``checkpoint``,
    ``checkpoint.old`` and ``checkpoint.tmp`` (its swap left one of them complete)."""
    root = run_dir / CHECKPOINT_DIR
    found = sorted((p for p in root.glob("round_*") if p.is_dir() and not p.name.endswith(".tmp")), reverse=True)
    return found + [run_dir / name for name in (CHECKPOINT_DIR, "checkpoint.old", "checkpoint.tmp")]


def node_state_key(run_dir: Path, resume: bool) -> str:
    """The subdirectory of its ``state-dir`` where a deployed node keeps this run's state:
    new for every fresh run, the same when the run resumes, so a node serving several runs
    (or a run started over under the same name) never reads another run's state."""
    path = run_dir / "node-state-key"
    if resume and path.is_file():
        return path.read_text().strip()
    key = f"{run_dir.name}-{secrets.token_hex(4)}"
    write_atomic(path, key)
    return key


def latest_round(run_dir: Path) -> int | None:
    """The round of the newest complete checkpoint, or None (no round completed)."""
    rounds = [_read_meta(d)["round"] for d in _checkpoint_dirs(run_dir) if (d / "state.json").is_file()]
    return max(rounds) if rounds else None


def _read_meta(folder: Path) -> dict:
    path = folder / "state.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"checkpoint {path} is damaged ({type(e).__name__}); the run cannot resume from it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("round"), int):
        raise DataError(f"checkpoint {path} is damaged (no round); the run cannot resume from it")
    return meta


def _load_arrays(path: Path) -> AdapterState:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DataError(f"checkpoint file {path} is damaged or missing ({str(e)[:80]})") from None


def load_checkpoint(run_dir: Path) -> tuple[ServerState, dict, dict]:
    """Return (server state, server RNG state, extra) of the newest complete checkpoint.

    A checkpoint is complete when its ``state.json`` exists (written last). One whose files
    do not load is an error naming the file, not skipped: resuming from an older round
    than the metrics and client stores record would mix two histories.
    """
    candidates = [d for d in _checkpoint_dirs(run_dir) if (d / "state.json").is_file()]
    if not candidates:
        raise ConfigError(f"--resume {run_dir}: no checkpoint found (no completed round)")
    metas = [(_read_meta(d), d) for d in candidates]
    meta, folder = max(metas, key=lambda m: m[0]["round"])
    meta = dict(meta)
    try:
        state = ServerState(
            round=meta.pop("round"),
            global_state=_load_arrays(folder / "global.safetensors"),
            buffers={b: _load_arrays(folder / f"buffer.{b}.safetensors") for b in meta.pop("buffers")},
            scalars=meta.pop("scalars"),
        )
        rng = meta.pop("rng")
    except (KeyError, TypeError) as e:
        raise DataError(f"checkpoint {folder / 'state.json'} is damaged (missing {e})") from None
    return state, rng, meta


# ------------------------------------------------------------------- client stores


class ClientStore:
    """Each client's persistent state (SCAFFOLD's c_i, FedALT's own LoRA, a personal head),
    one directory per client id under ``root``: never held on the server's side.

    Files are versioned by round, and a client reads the newest version written before
    the current round. A run killed mid-round therefore resumes from exactly the client
    states of the last completed round, even if some clients had already saved.
    """

    def __init__(self, root: Path):
        self.root = root

    def load(self, client_id: str, name: str, before_round: int) -> AdapterState | None:
        versions = sorted((self.root / client_id).glob(f"{name}.round_*.safetensors"))
        versions = [v for v in versions if int(v.name.split(".round_")[1][:4]) < before_round]
        if not versions:
            return None
        try:
            return load_file(str(versions[-1]))
        except (OSError, SafetensorError) as e:
            raise DataError(f"client {client_id}: state file {versions[-1]} is damaged ({str(e)[:80]})") from None

    def save(self, client_id: str, name: str, state: AdapterState, round_num: int) -> None:
        folder = self.root / client_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.round_{round_num:04d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(state, str(tmp))
        os.replace(tmp, path)
        # Keep this round's and the previous version: resume needs at most those two.
        for old in sorted(folder.glob(f"{name}.round_*.safetensors"))[:-2]:
            old.unlink()


def rotate_round_adapters(adapters_dir: Path, keep_last: int) -> None:
    rounds = sorted(adapters_dir.glob("round_*"))
    for old in rounds[:-keep_last] if keep_last > 0 else rounds:
        shutil.rmtree(old)
