"""``fedvlm bench``: a real 2-algorithm x 1-partition x 1-seed grid through the CLI, its
summary checked against the runs' own metrics, skipping and resuming on a rerun, and the
up-front validation of bench files (including the shipped one)."""

import re
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedvlm.cli import main
from fedvlm.config import parse_override
from fedvlm.errors import ConfigError
from fedvlm.tools.bench import bench_runs, load_bench
from fedvlm.reporting.bench_report import mean_std
from fedvlm.reporting.report import format_pct, read_metrics
from tiny import TINY_RUN

REPO = Path(__file__).resolve().parents[2]
ALGORITHMS = {
    "fedavg": {"federated": {"strategy": "fedavg"}},
    "fedavg-int8": {"federated": {"compression": "int8"}},
}
IID = {"iid": {"partition": {"method": "iid"}}}


def _nested(overrides: list[str]) -> dict:
    """``["train.lr=0.1"]`` -> ``{"train": {"lr": 0.1}}``."""
    sections: dict = {}
    for text in overrides:
        (section, key), value = parse_override(text)
        sections.setdefault(section, {})[key] = value
    return sections


def _write_bench(path: Path, algorithms: dict, changes: dict | None = None) -> Path:
    base = _nested(TINY_RUN)
    base["federated"]["rounds"] = 1
    bench = {"base": base, "algorithms": algorithms, "partitions": IID, "seeds": [0], **(changes or {})}
    path.write_text(yaml.safe_dump(bench))
    return path


def _fedvlm(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    bench_file = _write_bench(tmp / "tiny.yaml", ALGORITHMS)
    out = tmp / "out"
    # Left by a crash before the first round completed: no checkpoint, so it is replaced.
    stale = out / "fedavg" / "iid" / "seed0"
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text(json.dumps({"round": 0, "eval": {"accuracy": -1.0}}) + "\n")
    code, stdout, stderr = _fedvlm("bench", bench_file, "--out", out)
    assert code == 0, stderr[-2000:]
    return bench_file, out, stdout


def _expected_row(run_dir: Path) -> dict:
    metrics = read_metrics(run_dir)
    trained = [r for r in metrics if r["round"] >= 1]
    local = [c["accuracy"] for c in metrics[-1]["eval"]["clients"].values()]
    return {
        "final": metrics[-1]["eval"]["accuracy"],
        "personalized": float(np.mean(local)),
        "client_std": float(np.std(local)),
        "up_mb": sum(r["bytes_up"] for r in trained) / 1e6,
        "down_mb": sum(r["bytes_down"] for r in trained) / 1e6,
        "seconds": sum(r["seconds"] for r in trained),
    }


def test_bench_tables_match_the_runs_metrics(bench):
    bench_file, out, stdout = bench
    assert "removing" in stdout and "never completed a round" in stdout
    assert "[1/2] fedavg/iid/seed0: final accuracy" in stdout
    assert "[2/2] fedavg-int8/iid/seed0: final accuracy" in stdout
    with open(out / "results.csv", newline="") as f:
        rows = {r["algorithm"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(ALGORITHMS)
    markdown = (out / "results.md").read_text()
    assert "## Partition `iid`" in markdown
    for algorithm, row in rows.items():
        run_dir = out / algorithm / "iid" / "seed0"
        assert [r["round"] for r in read_metrics(run_dir)] == [0, 1]
        assert (run_dir / "adapters" / "final").is_dir() and (run_dir / "report.md").is_file()
        expected = _expected_row(run_dir)
        assert row["partition"] == "iid" and row["seeds"] == "1"
        assert float(row["final_accuracy_mean"]) == pytest.approx(expected["final"], abs=1e-6)
        assert float(row["final_accuracy_std"]) == 0.0  # one seed
        assert "best_accuracy_mean" not in row  # no round picked on the test set
        # each client's model on its own local test: mean over clients, std across them
        assert float(row["personalized_mean"]) == pytest.approx(expected["personalized"], abs=1e-6)
        assert float(row["client_std"]) == pytest.approx(expected["client_std"], abs=1e-6)
        assert float(row["uplink_mb"]) == pytest.approx(expected["up_mb"], abs=1e-6)
        assert float(row["downlink_mb"]) == pytest.approx(expected["down_mb"], abs=1e-6)
        assert float(row["wall_seconds"]) == pytest.approx(expected["seconds"], abs=1e-6)
        line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {algorithm} "))
        assert f"{format_pct(expected['final'])} ± 0.0" in line and f"{expected['up_mb']:.2f}" in line
    # int8 shrinks only the uplink.
    assert float(rows["fedavg-int8"]["uplink_mb"]) < float(rows["fedavg"]["uplink_mb"]) / 3
    assert rows["fedavg-int8"]["downlink_mb"] == rows["fedavg"]["downlink_mb"]
    for name in ("accuracy_iid.png", "accuracy_vs_uplink.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in markdown


def test_summary_adds_the_baselines_a_run_recorded(bench, tmp_path):
    bench_file, out, _ = bench
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "fedavg" / "iid" / "seed0" / "baselines.json").write_text(
        json.dumps({"centralized": {"accuracy": 0.8125}, "local": {"mean_pooled": 0.25, "mean_local": 0.5, "std_local": 0.125}})
    )
    code, _, stderr = _fedvlm("bench", bench_file, "--out", copy, "--summarize-only")
    assert code == 0, stderr
    markdown = (copy / "results.md").read_text()
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]]
             for ln in markdown.splitlines() if ln.startswith("| ")}
    assert cells["centralized (same steps)"][:2] == ["81.2 ± 0.0", "-"]  # 0.8125; no clients of its own
    # local-only: pooled 25%; each client on its own test 50%, spread 12.5 points
    assert cells["local-only (mean over clients)"] == ["25.0 ± 0.0", "50.0 ± 0.0", "12.5"]


def test_rerun_skips_finished_runs_and_resumes_an_unfinished_one(bench):
    bench_file, out, _ = bench
    done = out / "fedavg" / "iid" / "seed0"
    files = [done / "metrics.jsonl", done / "adapters" / "final" / "adapter_model.safetensors"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    # Killed after the last checkpoint but before the final adapter was written.
    unfinished = out / "fedavg-int8" / "iid" / "seed0"
    metrics_before = (unfinished / "metrics.jsonl").read_text()
    shutil.rmtree(unfinished / "adapters" / "final")

    code, stdout, stderr = _fedvlm("bench", bench_file, "--out", out)
    assert code == 0, stderr[-2000:]
    assert "2 runs in" in stdout and "(1 finished, 1 to resume)" in stdout
    assert "[1/2] fedavg/iid/seed0: skipped (finished)" in stdout
    assert "[2/2] fedavg-int8/iid/seed0: final accuracy" in stdout and "resumed after round 1" in stdout
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert (unfinished / "adapters" / "final" / "adapter_model.safetensors").is_file()
    assert (unfinished / "metrics.jsonl").read_text() == metrics_before


def test_summarize_only_rebuilds_the_tables_without_running(bench):
    bench_file, out, _ = bench
    (out / "results.csv").unlink()
    (out / "plots" / "accuracy_iid.png").unlink()
    code, stdout, stderr = _fedvlm("bench", bench_file, "--out", out, "--summarize-only")
    assert code == 0, stderr
    assert "[1/2]" not in stdout and "results:" in stdout
    assert (out / "results.csv").is_file() and (out / "plots" / "accuracy_iid.png").is_file()
    # the results as one HTML page too, its plots inline
    page = (out / "results.html").read_text()
    separators = [line for line in (out / "results.md").read_text().splitlines() if re.match(r"^\|[\s|:-]+\|$", line)]
    assert page.count("<table>") == len(separators) >= 1
    assert 'src="data:image/png;base64,' in page and 'src="plots/' not in page


def test_changed_settings_are_not_mixed_into_existing_runs(bench, tmp_path):
    _, out, _ = bench
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    changed = _write_bench(tmp_path / "changed.yaml", ALGORITHMS)
    text = yaml.safe_load(changed.read_text())
    text["base"]["train"]["lr"] = 0.5
    changed.write_text(yaml.safe_dump(text))
    code, _, stderr = _fedvlm("bench", changed, "--out", out)
    assert code == 2 and "train.lr" in stderr and "other settings" in stderr
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == before


def test_bad_key_fails_up_front_and_runs_nothing(tmp_path):
    bench_file = _write_bench(tmp_path / "typo.yaml", {**ALGORITHMS, "typo": {"federated": {"bogus": 1}}})
    code, stdout, stderr = _fedvlm("bench", bench_file, "--out", tmp_path / "out")
    assert code == 2
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedvlm: error:")
    assert "federated.bogus" in lines[0] and str(bench_file) in lines[0] and "typo/iid/seed0" in lines[0]
    assert not (tmp_path / "out").exists() and stdout == ""


@pytest.mark.parametrize(
    "changes,names",
    [
        ({"seed": [0]}, "'seed'"),
        ({"seeds": [0, "one"]}, "'seeds'"),
        ({"algorithms": {"fedavg": [1, 2]}}, "algorithms.fedavg"),
        ({"algorithms": {"fedavg": {"federated": "fedavg"}}}, "algorithms.fedavg.federated"),
        ({"algorithms": {"a/b": {}}}, "'a/b'"),
        ({"partitions": {"iid": {"run": {"seed": 3}}}}, "run.seed"),
    ],
)
def test_malformed_bench_file_names_the_key(tmp_path, changes, names):
    bench_file = _write_bench(tmp_path / "bad.yaml", ALGORITHMS, changes)
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        bench_runs(load_bench(bench_file), tmp_path / "out")
    assert names in str(err.value)


def test_summarize_only_needs_an_existing_bench_dir(tmp_path):
    bench_file = _write_bench(tmp_path / "b.yaml", ALGORITHMS)
    code, _, stderr = _fedvlm("bench", bench_file, "--out", tmp_path / "nothing", "--summarize-only")
    assert code == 2 and "nothing" in stderr


def test_std_over_seeds_is_the_population_std():
    assert mean_std([0.4, 0.6]) == pytest.approx((0.5, 0.1))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert mean_std([]) is None


def test_shipped_benches_build_every_config(tmp_path):
    bench = load_bench(REPO / "configs" / "bench" / "easyvqa.yaml")
    runs = bench_runs(bench, tmp_path / "out")
    # 14 algorithms (7 strategies, 5 LoRA variants, 2 compressions) x 1 partition x 5 seeds,
    # at the default job's horizon.
    assert len(runs) == 70 and len({r.name for r in runs}) == 70
    variants = {(r.cfg.federated.strategy, r.cfg.federated.aggregation, r.cfg.federated.compression) for r in runs}
    assert len(variants) == 14
    assert {r.cfg.partition.alpha for r in runs} == {0.1}
    assert {r.seed for r in runs} == {0, 1, 2, 3, 4}
    assert {(r.cfg.federated.rounds, r.cfg.train.local_steps) for r in runs} == {(8, 20)}
    assert all(r.cfg.partition.method == "dirichlet" and r.cfg.partition.label_column == "answer" for r in runs)
    assert {r.cfg.federated.options["mu"] for r in runs if r.algorithm == "fedprox"} == {0.01}
    assert {tuple(r.cfg.run.baselines) for r in runs if r.algorithm == "fedavg"} == {("centralized", "local")}
    assert all(r.run_dir == tmp_path / "out" / r.algorithm / r.partition / f"seed{r.seed}" for r in runs)
    sweep = bench_runs(load_bench(REPO / "configs" / "bench" / "server_opt_sweep.yaml"), tmp_path / "out")
    assert len(sweep) == 48 and {r.cfg.partition.method for r in sweep} == {"iid"}
    multitask = bench_runs(load_bench(REPO / "configs" / "bench" / "multitask.yaml"), tmp_path / "out")
    assert len(multitask) == 25 and {r.seed for r in multitask} == {0, 1, 2, 3, 4}
    assert {(r.cfg.data.source, r.cfg.partition.method, r.cfg.partition.num_clients) for r in multitask} == {
        ("multitask", "natural", 7)}
    assert not (tmp_path / "out").exists()


def test_tuning_picks_the_best_value_on_held_out_training_rows_and_the_runs_use_it(tmp_path):
    """A tuned algorithm: one run per value evaluated on ``data.validation_size`` rows held
    out of the training split (the test split unread), the best final validation score
    chosen, the algorithm's runs made with it and the table saying so."""
    algorithms = {"fedavgm": {"federated": {"strategy": "fedavgm", "momentum": 0.0}}}
    tune = {"tune": {"runs": {"data": {"validation_size": 40}},
                     "grid": {"fedavgm": {"federated.server_lr": [0.0, 1.0]}}}}
    bench_file = _write_bench(tmp_path / "tuned.yaml", algorithms, tune)
    out = tmp_path / "out"
    code, stdout, stderr = _fedvlm("bench", bench_file, "--out", out)
    assert code == 0, stderr[-2000:]
    tuned = out / "fedavgm" / "iid" / "tune"
    scores = {}
    for value in ("0.0", "1.0"):
        run_dir = tuned / f"server_lr={value}"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["data"]["validation_size"] == 40 and config["federated"]["server_lr"] == float(value)
        records = read_metrics(run_dir)
        assert records[-1]["eval"]["num_examples"] == 24  # min(pooled_test_size, 40 held-out rows)
        scores[float(value)] = records[-1]["eval"]["accuracy"]
        assert "validation rows held out of the training split" in (run_dir / "report.md").read_text()
    chosen = json.loads((tuned / "chosen.json").read_text())
    best = max(scores, key=lambda v: (scores[v], -v))  # the first value on a tie
    assert chosen["key"] == "federated.server_lr" and chosen["value"] == best
    assert dict((v, s) for v, s in chosen["scores"]) == scores
    main_run = yaml.safe_load((out / "fedavgm" / "iid" / "seed0" / "config.yaml").read_text())
    assert main_run["federated"]["server_lr"] == best and main_run["data"]["validation_size"] is None
    assert f"| fedavgm (server_lr={best})" in (out / "results.md").read_text()
    assert f"tuned fedavgm/iid: federated.server_lr={best}" in stdout
    # a rerun reads the choice and skips everything
    code, stdout, _ = _fedvlm("bench", bench_file, "--out", out)
    assert code == 0 and "skipped (finished)" in stdout and "tuning fedavgm" not in stdout


@pytest.mark.parametrize("tune, says", [
    ({"grid": {"fedavg": {"federated.server_lr": [0.1]}}}, "must set data.validation_size"),
    ({"runs": {"data": {"validation_size": 40}}, "grid": {"nope": {"federated.server_lr": [0.1]}}}, "'nope' is not one of"),
    ({"runs": {"data": {"validation_size": 40}}, "grid": {"fedavg": {"federated.server_lr": []}}}, "non-empty list"),
])
def test_a_bad_tune_section_is_one_line(tmp_path, tune, says):
    bench_file = _write_bench(tmp_path / "bad.yaml", ALGORITHMS, {"tune": tune})
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_bench(bench_file)


def test_shards_split_the_grid_by_algorithm_and_partition(tmp_path):
    from fedvlm.tools.bench import parse_shard, shard_runs

    runs = bench_runs(load_bench(REPO / "configs" / "bench" / "easyvqa.yaml"), tmp_path / "out")
    shards = [shard_runs(runs, (k, 3)) for k in range(3)]
    names = [r.name for shard in shards for r in shard]
    assert sorted(names) == sorted(r.name for r in runs) and len(set(names)) == len(runs)  # each run once
    owner = {(r.algorithm, r.partition): k for k, shard in enumerate(shards) for r in shard}
    assert all(owner[(r.algorithm, r.partition)] == k for k, shard in enumerate(shards) for r in shard)
    pairs = list(dict.fromkeys((r.algorithm, r.partition) for r in runs))  # the bench's own order
    assert [owner[p] for p in pairs[:4]] == [0, 1, 2, 0]
    assert shard_runs(runs, None) == runs and parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "-1/2", "a/b"):
        with pytest.raises(ConfigError, match=r"--shard .*expected K/N with 0 <= K < N"):
            parse_shard(bad)
