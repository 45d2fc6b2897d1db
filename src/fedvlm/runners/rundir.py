"""The run directory: resolved config, metrics log, adapters, checkpoint.

Layout::

    RUN_DIR/config.yaml          the resolved config
    RUN_DIR/metrics.jsonl        one JSON object per round (round 0 = zero-shot eval)
    RUN_DIR/baselines.json       centralized / local-only reference results
    RUN_DIR/adapters/round_NNNN  the global adapter after round N (the last few kept)
    RUN_DIR/adapters/best        the global adapter with the best pooled accuracy
    RUN_DIR/adapters/final       the global adapter after the last round
    RUN_DIR/checkpoint/          server state + RNG states after the last completed round
    RUN_DIR/clients/ID/          each client's persistent state (stateful algorithms)
    RUN_DIR/report.md, plots/    the report
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedvlm.core.types import AdapterState, ServerState
from fedvlm.errors import ConfigError


def create_run_dir(path: Path, overwrite: bool) -> Path:
    """Make a new run directory; an existing non-empty one is an error unless ``overwrite``."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"run directory {path} already exists; continue it with --resume {path}, "
                "or choose another run.name, or pass run.overwrite=true to replace it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(run_dir: Path, last_round: int) -> None:
    """Drop metric lines of rounds after ``last_round`` (written before a crash)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["round"] <= last_round]
    path.write_text("".join(ln + "\n" for ln in kept))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap ``tmp`` into ``final`` so a crash leaves either the old or the new directory."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(run_dir: Path, state: ServerState, rng: np.random.Generator, extra: dict) -> None:
    """Atomically write the server state and the server RNG after a completed round."""
    final = run_dir / "checkpoint"
    tmp = run_dir / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
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
    (tmp / "state.json").write_text(json.dumps(meta))
    _replace_dir(tmp, final)


def load_checkpoint(run_dir: Path) -> tuple[ServerState, dict, dict]:
    """Return (server state, server RNG state, extra) from ``run_dir/checkpoint``."""
    ckpt = run_dir / "checkpoint"
    if not (ckpt / "state.json").exists():
        raise ConfigError(f"--resume {run_dir}: no checkpoint found (no completed round)")
    meta = json.loads((ckpt / "state.json").read_text())
    state = ServerState(
        round=meta.pop("round"),
        global_state=load_file(str(ckpt / "global.safetensors")),
        buffers={b: load_file(str(ckpt / f"buffer.{b}.safetensors")) for b in meta.pop("buffers")},
        scalars=meta.pop("scalars"),
    )
    return state, meta.pop("rng"), meta


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
        return load_file(str(versions[-1])) if versions else None

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
