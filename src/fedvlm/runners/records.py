"""A run's records: reading ``metrics.jsonl`` and ``baselines.json``, and queries over them.

Each record is one JSON object (see `fedvlm.runners.report` for the layout). The queries
tolerate partial records: missing, non-numeric or non-finite values count as absent.
Shared by the report (`fedvlm.runners.report`) and its plots (`fedvlm.runners.plots`).
"""

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


def client_sort_key(client_id: str) -> tuple:
    """Sort client ids numerically when they are numbers ("2" before "10")."""
    return (0, int(client_id), "") if client_id.isdigit() else (1, 0, client_id)


def mean_client_loss(record: dict) -> float | None:
    """Unweighted mean training loss over the clients that took part in this round."""
    losses = [
        number(stats.get("loss"))
        for stats in (record.get("clients") or {}).values()
        if isinstance(stats, dict)
    ]
    losses = [v for v in losses if v is not None]
    return sum(losses) / len(losses) if losses else None


def global_accuracy(record: dict) -> float | None:
    """Pooled-test accuracy of the global model recorded in this round, if any."""
    return number((record.get("eval") or {}).get("accuracy"))


def centralized_accuracy(baselines: dict | None) -> float | None:
    """Pooled-test accuracy of the centralized baseline, if recorded."""
    return number(((baselines or {}).get("centralized") or {}).get("accuracy"))


def local_pooled_accuracy(baselines: dict | None) -> float | None:
    """Local-only baseline: mean over clients of the pooled-test accuracy, if recorded."""
    return number(((baselines or {}).get("local") or {}).get("mean_pooled"))


def question_types(metrics: list[dict], baselines: dict | None = None) -> list[str]:
    """Sorted union of question types seen in any round's ``eval.by_type`` (and the centralized baseline)."""
    seen: set[str] = set()
    for record in metrics:
        seen.update((record.get("eval") or {}).get("by_type") or {})
    seen.update(((baselines or {}).get("centralized") or {}).get("by_type") or {})
    return sorted(seen)


def client_ids(metrics: list[dict], section: str) -> list[str]:
    """Sorted ids of all clients seen under ``section`` ("clients" or "eval.clients")."""
    seen: set[str] = set()
    for record in metrics:
        seen.update(client_section(record, section))
    return sorted(seen, key=client_sort_key)


def client_section(record: dict, section: str) -> dict:
    """``record["clients"]`` or ``record["eval"]["clients"]`` as a dict (``{}`` when absent)."""
    if section == "clients":
        node = record.get("clients")
    else:
        node = (record.get("eval") or {}).get("clients")
    return node if isinstance(node, dict) else {}


def final_round(metrics: list[dict]) -> tuple[int, float] | None:
    """(round, accuracy) of the last record that has a pooled accuracy, or None."""
    for record in reversed(metrics):
        acc = global_accuracy(record)
        if acc is not None:
            return record["round"], acc
    return None


def personalized_summary(clients: dict) -> dict | None:
    """Each client's own model on its own local test split (``eval.clients``) summarized:
    the mean and population std (ddof=0) across clients of their accuracies, unweighted
    (every client counts once, as FedALT and FedSA-LoRA report it), and how many clients."""
    values = [number(m.get("accuracy")) for m in clients.values() if isinstance(m, dict)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "clients": len(values)}


def personalized_accuracy(record: dict) -> tuple[float, float] | None:
    """(mean, std) of ``record["eval"]["personalized"]``, if recorded."""
    p = (record.get("eval") or {}).get("personalized") or {}
    mean = number(p.get("mean"))
    return None if mean is None else (mean, number(p.get("std")) or 0.0)


def final_personalized(metrics: list[dict]) -> tuple[float, float] | None:
    """`personalized_accuracy` of the round `final_round` names, if recorded."""
    final = final_round(metrics)
    if final is None:
        return None
    return personalized_accuracy(next(r for r in reversed(metrics) if r["round"] == final[0]))


def local_personalized(baselines: dict | None) -> tuple[float, float] | None:
    """Local-only's clients, each on its own local test: (mean, std across clients)."""
    local = (baselines or {}).get("local") or {}
    mean = number(local.get("mean_local"))
    return None if mean is None else (mean, number(local.get("std_local")) or 0.0)


def centralized_personalized(baselines: dict | None) -> tuple[float, float] | None:
    """The centralized model on every client's local test: (mean, std across clients)."""
    summary = personalized_summary(((baselines or {}).get("centralized") or {}).get("clients") or {})
    return None if summary is None else (summary["mean"], summary["std"])
