"""The run's records as the engine writes and reads them back: ``metrics.jsonl`` (one JSON
object per round, `fedvlm.reporting.report` describes the layout) and ``baselines.json``.
The reports read them through `fedvlm.reporting.records`; the engine reads them to resume
and to give baselines the federation's budget."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedvlm.errors import DataError

METRICS_FILE = "metrics.jsonl"
BASELINES_FILE = "baselines.json"


class MetricsFileError(DataError, ValueError):
    """A metrics or baselines file is malformed (a ``ValueError`` and a ``DataError``)."""


def read_metrics(run_dir: Path) -> list[dict]:
    """Read ``run_dir/metrics.jsonl`` into a list of records sorted by round.

    Blank lines are skipped. A line that is not a JSON object with an integer ``round``
    raises ``MetricsFileError`` (a ``ValueError``) naming the file and the 1-based line
    number. If a round appears twice (e.g. a resumed run re-logged it) the later line
    wins. A missing file gives an empty list.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    by_round: dict[int, dict] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsFileError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise MetricsFileError(f"{path}: line {lineno}: expected a JSON object")
            rnd = record.get("round")
            if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0:
                raise MetricsFileError(
                    f"{path}: line {lineno}: expected a non-negative integer 'round', got {rnd!r}"
                )
            by_round[rnd] = record
    return [by_round[r] for r in sorted(by_round)]


def read_baselines(run_dir: Path) -> dict:
    """Read ``run_dir/baselines.json``; ``{}`` when absent. Malformed JSON raises ``MetricsFileError``."""
    path = Path(run_dir) / BASELINES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MetricsFileError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise MetricsFileError(f"{path}: expected a JSON object at the top")
    return data


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, non-numeric, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def personalized_summary(clients: dict) -> dict | None:
    """Each client's own model on its own local test split (``eval.clients``) summarized:
    the mean and population std (ddof=0) across clients of their accuracies, unweighted
    (every client counts once, as FedALT and FedSA-LoRA report it), and how many clients."""
    values = [number(m.get("accuracy")) for m in clients.values() if isinstance(m, dict)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "clients": len(values)}
