"""benchmarks/gpu_summary.py: issue 19's acceptance lines, read from a GPU session's folder
(figures made up here, verdicts worked out by hand)."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def summary(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_summary

    yield gpu_summary
    for name in ("gpu_summary", "gpu", "overhead"):
        sys.modules.pop(name, None)


def _job(run_dir: Path, accuracies: list[float], finished: bool = True) -> None:
    run_dir.mkdir(parents=True)
    records = [{"round": 0, "eval": {"accuracy": 0.3}}]
    for r, acc in enumerate(accuracies, 1):
        clients = {"0": {"seconds": 4.0, "data_seconds": 0.1}, "1": {"seconds": 6.0, "data_seconds": 0.3}}
        records.append({"round": r, "seconds": 5.0 + r, "clients": clients, "eval": {"accuracy": acc},
                        "eval_speed": {"questions_per_second": 400.0 + r}})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in records) + "\n")
    if finished:
        (run_dir / "adapters" / "final").mkdir(parents=True)


def _row(shape, mode, **figures):
    row = {"shape": shape, "mode": mode, "batch": 4, "tokens_per_step": 2368.0, "step_ms": 300.0,
           "tokens_per_s": 7893.0, "tflops": 300.0, "mfu": 0.38, "data_wait": 0.01, "data_wait_inline": 0.2,
           "peak_gib": 20.0, "round_ratio": 1.01}
    return {**row, **figures}


def _gpu(path: Path, device: str, rows: list[dict]) -> None:
    path.write_text(json.dumps({"device": device, "peak_flops": 7.9e14, "rows": rows}))


def test_each_target_is_judged_from_the_session_files(tmp_path, summary, capsys):
    _job(tmp_path / "fp32", [0.60, 0.845])
    _job(tmp_path / "bf16", [0.61, 0.838])
    (tmp_path / "fp32" / "baselines.json").write_text(json.dumps({"centralized": {"accuracy": 0.846}}))
    _gpu(tmp_path / "gpu_embedded.json", "NVIDIA H200",
         [_row("embedded", "fp32", batch=32, data_wait=0.031, data_wait_inline=0.38, data_wait_workers=0.052)])
    _gpu(tmp_path / "gpu_7b.json", "NVIDIA H200", [_row("llava-7b", "bf16", mfu=0.352, round_ratio=1.021),
                                                   _row("llava-7b", "qlora-gc", mfu=0.2, peak_gib=7.33)])
    _gpu(tmp_path / "gpu_7b_batch16.json", "NVIDIA H200",
         [_row("llava-7b", "bf16", batch=16, mfu=0.392, round_ratio=1.2)])
    assert summary.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "device: NVIDIA H200" in text and "CPU rehearsal" not in text
    # 83.8 - 84.5 = -0.7 points: within 1
    assert "| default job: bf16 - float32 accuracy (points) | -0.7 (83.8 vs 84.5) | within 1 | PASS |" in text
    assert "| embedded model: data wait, batches made ahead in a thread (% of step) | 3.1 (inline 38.0) | <= 5 | PASS |" in text
    assert "| embedded model: data wait, batches made by worker processes (% of step) | 5.2 | <= 5 | FAIL |" in text
    # the best batch's MFU; the round ratio is batch 4's
    assert "| 7B bf16 LoRA: MFU (%) | 39.2 (batch 16) | >= 40 | FAIL |" in text
    assert "| 7B QLoRA + checkpointing, batch 4: peak GiB | 7.33 (batch 4) | <= 11 | PASS |" in text
    assert "| 7B simulator round / bare peft loop | 1.021 | <= 1.03 | PASS |" in text
    # rounds of 6 and 7 s; the loop waited (0.1 + 0.3) of (4 + 6) s each round: 4.0%
    assert "default job float32: 84.5% after 2 rounds, 6.5 s a round, data wait 4.0%, 402 questions/s" in text
    assert "centralized (float32): 84.6%" in text
    assert "| llava-7b | bf16 | 4 x 592 | 300 | 7893 | 300.0 | 35.2% | 1.0% (20.0%) | - | 20.00 | 1.021 |" in text


def test_a_cpu_rehearsal_and_missing_steps_are_said(tmp_path, summary, capsys):
    _job(tmp_path / "fp32", [0.845])
    _job(tmp_path / "bf16", [0.845], finished=False)  # cut by its time limit after a round
    _gpu(tmp_path / "gpu_7b.json", "CPU", [_row("llava-7b", "qlora-gc", peak_gib=None)])  # no CUDA, no peak
    assert summary.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "CPU rehearsal at toy sizes" in text
    assert "| default job: bf16 - float32 accuracy (points) | - | within 1 | MISSING |" in text
    assert "| 7B QLoRA + checkpointing, batch 4: peak GiB | - | <= 11 | MISSING |" in text
    assert "| embedded model: data wait, batches made ahead in a thread (% of step) | - | <= 5 | MISSING |" in text


def test_a_folder_that_is_not_there_is_one_line(tmp_path, summary, capsys):
    assert summary.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
