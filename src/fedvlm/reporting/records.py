"""Queries over a run's records (``metrics.jsonl`` and ``baselines.json``, written and read
by `fedvlm.engine.records`).

Each record is one JSON object (see `fedvlm.reporting.report` for the layout). The queries
tolerate partial records: missing, non-numeric or non-finite values count as absent.
Shared by the report (`fedvlm.reporting.report`) and its plots (`fedvlm.reporting.plots`).
"""

from fedvlm.engine.records import (  # noqa: F401 - the reports read records through here
    BASELINES_FILE,
    METRICS_FILE,
    MetricsFileError,
    number,
    personalized_summary,
    read_baselines,
    read_metrics,
)


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
