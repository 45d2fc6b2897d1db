"""benchmarks/bench_details.py: per-seed finals, the mean of the last three rounds and the
per-type accuracies of a bench, from hand-written run directories (unfinished runs left out)."""

import json
import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def bench_details(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_details

    yield bench_details
    sys.modules.pop("bench_details", None)


def _run(out: Path, algorithm: str, seed: int, accuracies: list[float], by_type: dict, central: dict | None = None,
         finished: bool = True) -> None:
    d = out / algorithm / "iid" / f"seed{seed}"
    (d / "adapters" / "final").mkdir(parents=True)
    records = [{"round": r, "eval": {"accuracy": a, **({"by_type": by_type} if r == len(accuracies) - 1 else {})}}
               for r, a in enumerate(accuracies)]
    if not finished:
        records = records[:-1]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (d / "baselines.json").write_text(json.dumps({"centralized": central} if central else {}))


def test_rows_per_seed_last_rounds_and_types(tmp_path, bench_details, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "base": {"federated": {"rounds": 4}, "run": {"baselines": []}},
        "partitions": {"iid": {"partition": {"method": "iid"}}},
        "algorithms": {"fedavg": {"run": {"baselines": ["centralized"]}}, "fedprox": {"federated": {"strategy": "fedprox"}}},
        "seeds": [0, 1, 2]}))
    out = tmp_path / "out"
    # zero-shot, then rounds 1-4
    _run(out, "fedavg", 0, [0.0, 0.2, 0.4, 0.5, 0.6], {"color": 0.8, "yes/no": 0.4}, {"accuracy": 0.9, "by_type": {"color": 1.0}})
    _run(out, "fedavg", 1, [0.0, 0.1, 0.2, 0.3, 0.4], {"color": 0.6, "yes/no": 0.2}, {"accuracy": 0.7, "by_type": {"color": 0.8}})
    _run(out, "fedprox", 0, [0.0, 0.5, 0.5, 0.5, 0.5], {"color": 0.5, "shape": 0.5})
    _run(out, "fedprox", 2, [0.0, 0.9, 0.9, 0.9, 0.9], {"color": 0.9}, finished=False)  # stopped after round 3

    assert bench_details.main([str(out), "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| algorithm | final % per seed | mean of last 3 rounds % | color | shape | yes/no |"
    # fedavg: finals 60 and 40; last three rounds (40+50+60)/3 = 50 and (20+30+40)/3 = 30, mean 40;
    # colour (80+60)/2, yes/no (40+20)/2, no shape question
    assert lines[2] == "| fedavg | 60.0 / 40.0 | 40.0 | 70.0 |  | 30.0 |"
    assert lines[3] == "| fedprox | 50.0 | 50.0 | 50.0 | 50.0 |  |"
    assert lines[4] == "| centralized | 90.0 / 70.0 |  | 90.0 |  |  |"
    assert len(lines) == 5


def test_no_finished_run_is_one_line(tmp_path, bench_details, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"partitions": {"iid": {}}, "algorithms": {"fedavg": {}}, "seeds": [0]}))
    assert bench_details.main([str(tmp_path / "out"), "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'out'}: no finished run of partition 'iid'"
