"""fedvlm's training at real model shapes: speed, FLOP utilisation, data wait and memory.

Models are random-initialised from configs alone (no download) and saved once to
``--cache-dir``; fedvlm then loads them by path through its own loading code, with the
embedded model's tokenizer and chat template and a CLIP image processor at the tower's
resolution, on easy-VQA (images upscaled). Shapes:

- ``llava-7b``: LLaVA-1.5-7B (Llama-2-7B text 4096 x 32 layers, CLIP ViT-L/14-336, 576 image tokens)
- ``qwen2-2b``: a 2B-class LLaVA (Qwen2-1.5B text 1536 x 28 layers, GQA 12/2, CLIP ViT-L/14-336)
- ``phi3v-4b``: Phi-3-vision's shape (Phi-3-mini text 3072 x 32 layers + CLIP ViT-L/14-336)
- ``embedded``: the shipped 2.5M-parameter model at batch 32 (the default job's step), in
  float32 (the default job) and bf16

Modes: ``bf16`` (bf16 base, float32 LoRA r=8 on every language-model linear + the
projector in full), ``bf16-gc`` (+ gradient checkpointing), ``qlora-gc`` (4-bit NF4 base,
bf16 compute, + gradient checkpointing). For each: a client's local training through
``fedvlm.client.train`` (the simulator's own call) gives the step time, tokens/s, the
share of the step spent waiting for data (collated ahead in a thread, the default; inside
the step, for comparison; and by ``--workers`` worker processes) and peak device memory; then one federated round
(``--clients`` x ``--round-steps``) through the simulator's ``train_round`` against a bare
peft loop on the same batches (``benchmarks/overhead.py``), both collating inside the step so
the ratio is the simulator's own cost.

FLOPs: torch's ``FlopCounterMode`` over one forward + backward of a batch in ``bf16`` mode
(no recomputation): the work the step really does, which for LoRA is about 4 x parameters x
tokens (the frozen weights get no weight gradient, unlike the 6 x N x T of full training).
Checkpointed modes divide the same model FLOPs by their own step time (MFU, not hardware
utilisation). Peak: the device's own bf16 matmul rate, measured here (8192^3 products on a
GPU; float32 on a CPU).

    python benchmarks/gpu.py                        # every shape and mode on a CUDA GPU
    python benchmarks/gpu.py --shapes llava-7b --modes bf16,qlora-gc --batch-size 4
    python benchmarks/gpu.py --tiny                 # the same code at toy shapes on the CPU (CI)
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from overhead import bare_round, simulator_round  # noqa: E402

from fedvlm.client import RoundConfig, train  # noqa: E402
from fedvlm.config import load_config  # noqa: E402
from fedvlm.core.types import Instruction  # noqa: E402
from fedvlm.models.load import embedded_model_path  # noqa: E402
from fedvlm.engine.client import node_of, round_config  # noqa: E402
from fedvlm.engine.federation import build_federation  # noqa: E402
from fedvlm.engine.rundir import ClientStore  # noqa: E402
from fedvlm.seeds import Stream, seed_for  # noqa: E402
from fedvlm.train.batches import iter_steps  # noqa: E402
from fedvlm.train.collate import to_device  # noqa: E402
from fedvlm.train.prefetch import Loading  # noqa: E402

CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
SHAPES = {
    "llava-7b": (dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000), CLIP_L_336),
    "qwen2-2b": (dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                      num_attention_heads=12, num_key_value_heads=2, vocab_size=151936), CLIP_L_336),
    "phi3v-4b": (dict(model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32064), CLIP_L_336),
}
MODES = {  # overrides of each mode
    "fp32": [],  # the embedded default job's setting
    "bf16": ["model.dtype=bfloat16"],
    "bf16-gc": ["model.dtype=bfloat16", "model.gradient_checkpointing=true"],
    "qlora-gc": ["model.dtype=bfloat16", "model.quantization=4bit", "model.gradient_checkpointing=true"],
}
GiB = 2**30


def tiny_shape(name: str) -> tuple[dict, dict]:
    """``name``'s architecture at toy size (same model types, GQA ratio kept)."""
    text, _ = SHAPES[name]
    ratio = text["num_attention_heads"] // text["num_key_value_heads"]
    return (dict(text, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=max(1, 4 // ratio), vocab_size=None),
            dict(CLIP_L_336, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 image_size=28, projection_dim=32))


def build_model_dir(name: str, tiny: bool, cache: Path, device: str) -> Path:
    """A LLaVA-architecture model of shape ``name`` with random weights, saved in bf16 with
    a processor, once: later runs load it from ``cache``."""
    from transformers import AutoProcessor, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    out = cache / (f"{name}-tiny" if tiny else name)
    if (out / "config.json").is_file():
        return out
    embedded = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    text, vision = tiny_shape(name) if tiny else SHAPES[name]
    text = dict(text, vocab_size=text["vocab_size"] or len(tokenizer), max_position_embeddings=4096,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    image_tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    config = LlavaConfig(
        text_config=text, vision_config=dict(vision, model_type="clip_vision_model"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=image_tokens,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    partial = out.with_name(out.name + ".partial")  # renamed when whole: a cut save is not a cached model
    model.save_pretrained(partial)
    del model
    processor = AutoProcessor.from_pretrained(embedded)
    side = vision["image_size"]
    processor.image_processor.size = {"shortest_edge": side}
    processor.image_processor.crop_size = {"height": side, "width": side}
    processor.patch_size = vision["patch_size"]
    processor.save_pretrained(partial)
    partial.rename(out)
    return out


def matmul_peak(device: torch.device, tiny: bool) -> float:
    """The device's own matmul rate in FLOP/s: bf16 8192^3 products on a GPU, float32 on a CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (256 if tiny else 2048, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 20 if device.type == "cuda" else 3
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(fed, rows) -> float:
    """FLOPs of one forward + backward of ``rows`` (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = fed.model
    batch = to_device(fed.task.training_batch(fed.train_ds[rows]), model.device, model.dtype)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return float(counter.get_total_flops())


def local_training(cfg, fed, steps: int, loading: Loading, store: ClientStore) -> dict:
    """Client 0 trains ``steps`` steps through the client unit, batches made as ``loading`` says."""
    fed.loading = loading
    instruction = Instruction(fed.initial_adapter, {"rounds_done": 0, "schedule_rounds": 1})
    config = replace(round_config(cfg, instruction, 1, "0"), local_steps=steps, local_epochs=0.0)
    config = RoundConfig.from_record(config.to_record())
    device = fed.model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    update = train(fed.initial_adapter, {}, config, node_of(fed, "0", store))
    m = update.metrics
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    return {"seconds": m["seconds"], "data_seconds": m["data_seconds"], "steps": m["steps"], "peak_gib": peak}


def tokens_per_step(cfg, fed, steps: int) -> float:
    """Mean real (unpadded) tokens in a step of client 0's first ``steps`` steps."""
    t = cfg.train
    batches = iter_steps(fed.task, fed.train_ds, fed.clients["0"].train, num_steps=steps, batch_size=t.batch_size,
                         grad_accum=t.grad_accum, first_step=0, seed=seed_for(cfg.run.seed, Stream.BATCHES, 0))
    return float(np.mean([sum(int(b["attention_mask"].sum()) for b in step) for step in batches]))


def measure(shape: str, mode: str, model_dir: Path, args, flops_of: dict, peak: float) -> dict:
    batch = args.batch_size if shape != "embedded" else 32
    overrides = [
        f"model.path={model_dir}", *MODES[mode], "run.progress=false", "run.baselines=[]",
        f"partition.num_clients={args.clients}", "partition.method=iid", f"train.batch_size={batch}",
        f"train.local_steps={args.round_steps}", "train.local_epochs=null", "train.warmup_steps=1",
        f"data.max_train_examples={args.clients * batch * max(args.steps, args.round_steps) * 2}",
        "data.pooled_test_size=8", "partition.local_test_fraction=0.0", "eval.max_new_tokens=2",
    ]
    if shape == "embedded":
        overrides = [o for o in overrides if not o.startswith(("model.gradient", "model.quantization"))]
    cfg = load_config(None, overrides)
    fed = build_federation(cfg)
    store = ClientStore(Path(tempfile.mkdtemp(prefix="fedvlm-gpu-")))
    tokens = tokens_per_step(cfg, fed, args.steps)
    key = (shape, batch)
    if key not in flops_of and mode in ("bf16", "fp32"):
        flops_of[key] = step_flops(fed, fed.clients["0"].train[:batch])
    local_training(cfg, fed, 2, Loading(), store)  # warm-up: kernels, allocator, autotuning
    ahead = local_training(cfg, fed, args.steps, Loading(), store)
    inline = local_training(cfg, fed, args.steps, Loading(prefetch_factor=0), store)
    workers = local_training(cfg, fed, args.steps, Loading(num_workers=args.workers), store) if args.workers else None
    step = ahead["seconds"] / ahead["steps"]
    flops = flops_of.get(key)
    fed.loading = Loading(prefetch_factor=0)
    sim_s, g_sim, _ = simulator_round(cfg, fed, store)
    bare_s, g_bare, _ = bare_round(cfg, fed, list(fed.clients))
    sim_s2, _, _ = simulator_round(cfg, fed, store)  # alternate, take the lower of two
    row = {
        "shape": shape, "mode": mode, "batch": batch, "tokens_per_step": tokens,
        "trainable_params": sum(p.numel() for p in fed.model.parameters() if p.requires_grad),
        "step_ms": 1000 * step, "tokens_per_s": tokens / step,
        "tflops": None if flops is None else flops / step / 1e12,
        "mfu": None if flops is None else flops / step / peak,
        "data_wait": ahead["data_seconds"] / ahead["seconds"],
        "data_wait_inline": inline["data_seconds"] / inline["seconds"],
        "data_wait_workers": None if workers is None else workers["data_seconds"] / workers["seconds"],
        "peak_gib": ahead["peak_gib"],
        "round_s": min(sim_s, sim_s2), "bare_s": bare_s, "round_ratio": min(sim_s, sim_s2) / bare_s,
        "round_max_diff": max(float(np.max(np.abs(g_sim[k] - g_bare[k]))) for k in g_sim),
    }
    del fed
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def _cell(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _percent(share) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def table(rows: list[dict]) -> str:
    head = ("| shape | mode | batch x tokens | step ms | tokens/s | TFLOP/s | MFU | data wait (inline) "
            "| data wait, workers | peak GiB | round / bare |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['mode']} | {r['batch']} x {r['tokens_per_step'] / r['batch']:.0f} | "
            f"{r['step_ms']:.0f} | {r['tokens_per_s']:.0f} | {_cell(r['tflops'], '.1f')} | "
            f"{_percent(r['mfu'])} | {_percent(r['data_wait'])} ({_percent(r['data_wait_inline'])}) | "
            f"{_percent(r.get('data_wait_workers'))} | {_cell(r['peak_gib'], '.2f')} | {r['round_ratio']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="toy shapes on the CPU (what CI runs)")
    ap.add_argument("--shapes", help="default: embedded,qwen2-2b,phi3v-4b,llava-7b (--tiny: the last three)")
    ap.add_argument("--modes", default="bf16,bf16-gc,qlora-gc")
    ap.add_argument("--batch-size", type=int, default=4, help="rows per step at the real shapes")
    ap.add_argument("--steps", type=int, default=10, help="timed local steps per measurement")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--round-steps", type=int, default=10, help="local steps per client in the round")
    ap.add_argument("--workers", type=int, default=2,
                    help="also time the local training with batches made by this many worker processes (0: skip)")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "fedvlm-gpu-models"))
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    args.shapes = args.shapes or ("qwen2-2b,phi3v-4b,llava-7b" if args.tiny else "embedded,qwen2-2b,phi3v-4b,llava-7b")
    if args.tiny:
        args.steps, args.clients, args.round_steps, args.batch_size = min(args.steps, 2), 2, min(args.round_steps, 2), 2
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        print("no CUDA device: run with --tiny for the toy shapes on the CPU", file=sys.stderr)
        return 2
    peak = matmul_peak(device, args.tiny)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: measured matmul peak {peak / 1e12:.1f} TFLOP/s; torch {torch.__version__}", flush=True)
    cache = Path(args.cache_dir)
    rows, flops_of = [], {}
    for shape in args.shapes.split(","):
        model_dir = "embedded" if shape == "embedded" else build_model_dir(shape, args.tiny, cache, device.type)
        modes = ["fp32", "bf16"] if shape == "embedded" else [m for m in args.modes.split(",") if m != "fp32"]
        if "bf16" not in modes:  # the model FLOPs come from the bf16 step
            modes = ["bf16", *modes]
        for mode in modes:
            row = measure(shape, mode, model_dir, args, flops_of, peak)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # after each row: a run cut short by a time limit keeps what it measured
                Path(args.json).write_text(json.dumps({"device": name, "peak_flops": peak, "rows": rows}, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
