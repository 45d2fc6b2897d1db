"""The command line: one-line errors with exit code 2, and run directories never clobbered."""

import json
import subprocess
import sys

import pytest

from tiny import TINY_RUN


def fedvlm(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fedvlm.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "args,names",
    [
        (["run", "train.lrr=1"], "train.lrr"),
        (["run", "partition.method=bogus"], "partition.method"),
        (["run", "missing.yaml"], "missing.yaml"),
        (["run", "data.source=nowhere/data.jsonl"], "nowhere/data.jsonl"),
        (["run", "--resume", "no_such_run"], "no_such_run"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, names):
    # in this process (`main` as ``python -m fedvlm.cli`` calls it); the exit status of a real
    # process: tests/algorithms/test_a_new_algorithm.py (2) and test_run_end_to_end_... (0)
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    code = main([*args, "run.progress=false"] if "--resume" not in args else args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedvlm: error:"), err
    assert names in lines[0]
    assert "Traceback" not in err


def test_missing_image_names_the_file(tmp_path, monkeypatch, capsys):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps({"img": "gone.png", "q": "what?", "a": "red"}) + "\n")
    code = main(["run", f"data.source={tmp_path / 'train.jsonl'}", "data.columns={image: img, question: q, answer: a}",
                 "run.progress=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "gone.png" in err and "Traceback" not in err


def test_existing_run_dir_is_not_overwritten(tmp_path, monkeypatch, capsys):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("run: {name: mine}\n")
    (run_dir / "metrics.jsonl").write_text("precious\n")
    assert main(["run", "run.name=mine", "run.output_dir=runs", "run.progress=false"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"


def test_run_end_to_end_with_report_and_centralized_baseline(tmp_path):
    args = [a for a in TINY_RUN if not a.startswith("run.baselines")]
    result = fedvlm("run", *args, "run.baselines=[centralized]", "run.name=e2e", "federated.rounds=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "e2e"
    assert "centralized (same samples)" in result.stdout and "zero-shot" in result.stdout
    baselines = json.loads((run_dir / "baselines.json").read_text())
    # Same total samples: 2 clients x 1 round x 2 steps x 8 examples.
    assert baselines["centralized"]["examples"] == 2 * 1 * 2 * 8
    report = (run_dir / "report.md").read_text()
    assert "plots/accuracy.png" in report and (run_dir / "plots" / "accuracy.png").stat().st_size > 1000


def test_partition_command_prints_table_and_writes_heatmap(tmp_path, monkeypatch, capsys):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["partition", "partition.num_clients=3", "partition.alpha=0.1", "--out", "h.png"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "yes" in out
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_partition_follows_max_train_examples(tmp_path, capsys, monkeypatch):
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["partition", "data.max_train_examples=100", "--out", str(tmp_path / "h.png")]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("total"))
    assert total.split()[1] == "100"
