"""benchmarks/multitask_table.py's paired rows: each method's personalized mean accuracy
against local-only's, seed by seed, with the p-values worked out by hand."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
TASKS = ["caption", "color", "shape"]


@pytest.fixture
def multitask_table(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import multitask_table

    yield multitask_table
    sys.modules.pop("multitask_table", None)


def _row(table: str, start: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_fedalt_against_local_only_seed_by_seed(multitask_table):
    # mean accuracy over colour and shape (captions left out): local-only 50, 60, 55;
    # FedALT 52, 63, 55.5, so the differences are 2, 3 and 0.5
    personalized = {
        "local-only": {"seed0": {"caption": 8.0, "color": 40, "shape": 60},
                       "seed1": {"caption": 7.0, "color": 70, "shape": 50},
                       "seed2": {"caption": 9.0, "color": 55, "shape": 55}},
        "fedalt": {"seed0": {"caption": 8.5, "color": 44, "shape": 60},
                   "seed1": {"caption": 6.0, "color": 70, "shape": 56},
                   "seed2": {"caption": 9.0, "color": 56, "shape": 55},
                   "seed3": {"caption": 1.0, "color": 0, "shape": 0}},  # no local-only seed 3: unpaired
    }
    table = multitask_table.paired(TASKS, personalized)
    # mean 11/6; the differences' sample std sqrt(19/12), t = (11/6) / sqrt(19/36) = 2.5236 with
    # 2 degrees of freedom, whose two-sided p is 1 - t / sqrt(t^2 + 2) = 0.1276; Wilcoxon: 3
    # positive differences, exact p = 2 / 2^3 = 0.25
    assert _row(table, "| fedalt vs local-only | mean acc") == [
        "fedalt vs local-only", "mean acc (points)", "3", "+1.83", "3 / 0", "0.128", "0.250"]
    # CIDEr-D: +0.5, -1.0, 0.0 -> one ahead, one behind, one tie; mean -0.17
    cider = _row(table, "| fedalt vs local-only | caption")
    assert cider[2:5] == ["3", "-0.17", "1 / 1"]
    # a method without the reference's seeds is left out, not compared
    assert "fedavg" not in table


def test_a_seed_missing_a_task_has_no_mean(multitask_table):
    assert multitask_table._mean_accuracy({"caption": 3.0, "color": 50.0}, TASKS) is None
    assert multitask_table._mean_accuracy({"caption": 3.0, "color": 50.0, "shape": 70.0}, TASKS) == 60.0
