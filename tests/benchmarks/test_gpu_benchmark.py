"""benchmarks/gpu.py --tiny: the GPU benchmark's code (models built from configs, loaded by
fedvlm by path, every mode, FLOP counting, data wait, the simulator's round against the bare
loop) runs at toy shapes on the CPU."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture
def gpu_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu

    yield gpu
    sys.modules.pop("gpu", None)
    sys.modules.pop("overhead", None)


def test_the_gpu_benchmark_runs_every_mode_at_toy_shapes(tmp_path, gpu_benchmark, capsys):
    out = tmp_path / "rows.json"
    assert gpu_benchmark.main(["--tiny", "--cache-dir", str(tmp_path), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    shapes, modes = ("qwen2-2b", "phi3v-4b", "llava-7b"), ("bf16", "bf16-gc", "qlora-gc")
    assert [(r["shape"], r["mode"]) for r in rows] == [(s, m) for s in shapes for m in modes]
    for r in rows:
        assert r["step_ms"] > 0 and r["tokens_per_s"] > 0 and 0 < r["mfu"] and 0 <= r["data_wait"] < 1
        assert 0 <= r["data_wait_workers"] < 1  # batches made by worker processes (--workers 2)
        assert r["round_ratio"] > 0 and r["trainable_params"] > 0
    text = capsys.readouterr().out
    assert "| llava-7b | qlora-gc |" in text and "measured matmul peak" in text


def test_the_config_of_a_real_shape_has_its_published_size(gpu_benchmark):
    """The 7B shape is LLaVA-1.5-7B: 6.8-7.1B parameters with 576 image tokens, built on
    the meta device (no memory)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    text, vision = gpu_benchmark.SHAPES["llava-7b"]
    config = LlavaConfig(text_config=dict(text), vision_config=dict(vision, model_type="clip_vision_model"))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert 6.8e9 < params < 7.1e9
    assert (vision["image_size"] // vision["patch_size"]) ** 2 == 576
