"""Which architectures of transformers' mappings fedvlm runs out of the box, measured.

For every model type of ``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``,
``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` and ``MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES``
it builds a tiny random instance of the mapped class (the config class's defaults, shrunk:
2 layers, width 32, the tests' shared byte-level BPE tokenizer; image-text models with their
processor and a chat template, ``tests/families/tiny_image_text.py``), saves it to a
directory and runs a 1-round, 2-client federated job on it through ``fedvlm run``'s own code
with no ``model.family`` and no ``lora.target_modules`` (easy-VQA for image-text models; the
built-in CrowdFlower tweets: generated labels for causal LMs, a classifier head for sequence
classifiers). It records for each architecture:

- runs: fedvlm loads it, attaches LoRA and runs the job;
- trains: every trained array (LoRA, a classifier head) changed and no base weight did;
- evaluates: round 0 and round 1 were scored on the pooled test set;
- saves + peft: the final adapter, loaded into a fresh base with stock ``peft``, gives
  fedvlm's logits (exactly, or within 1e-5, the difference shown);

and for an architecture that fails, the stage and the first line of the error, never a
traceback. The table goes to ``docs/models.md`` (``--out``).

    HF_HUB_OFFLINE=1 .venv-torchvision/bin/python scripts/models_coverage.py     # about 20 min
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/models_coverage.py --only gpt2 gemma3 --out /tmp/m.md

Run it in the torchvision setup: processors with a video processor need torchvision.
"""

import argparse
import json
import multiprocessing
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny tokenizer builders

from families import tiny_image_text, tiny_vision_a, tiny_vision_b  # noqa: E402
from families.tiny_text import _byte_level_bpe, _special_ids, _wrap  # noqa: E402

from fedvlm.config import load_config  # noqa: E402
from fedvlm.errors import ModelError  # noqa: E402
from fedvlm.models.families import detect_family  # noqa: E402
from fedvlm.models.adapter import set_adapter_state  # noqa: E402
from fedvlm.models.load import load_base  # noqa: E402
from fedvlm.engine.simulate import run_simulation  # noqa: E402

# Smaller values for whichever of these a config class has (its other defaults stay).
SHRINK = {
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "dim": 32, "embed_dim": 32, "word_embed_proj_dim": 32,
    "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2, "num_decoder_layers": 2,
    "num_attention_heads": 2, "n_head": 2, "n_heads": 2, "num_heads": 2, "num_key_value_heads": 2,
    "decoder_attention_heads": 2, "decoder_layers": 2, "encoder_layers": 2, "encoder_attention_heads": 2,
    "intermediate_size": 64, "ffn_dim": 64, "hidden_dim": 64, "n_inner": 64, "d_ff": 64,
    "decoder_ffn_dim": 64, "encoder_ffn_dim": 64, "head_dim": 16, "embedding_size": 32,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 16, "qk_nope_head_dim": 16, "v_head_dim": 16,
}
FAMILY_BUILDERS = {"fuyu": tiny_vision_b.build_fuyu, "paligemma": tiny_vision_a.build_paligemma}
POSITIONS = ("max_position_embeddings", "n_positions", "max_seq_len")
JOB = [
    "run.progress=false", "run.baselines=[]", "data.source=crowdflower", "data.max_train_examples=200",
    "data.pooled_test_size=16", "data.max_length=32", "partition.num_clients=2", "partition.min_partition_size=5",
    "partition.max_local_test=4", "federated.rounds=1", "train.local_steps=2", "train.batch_size=4",
    "train.warmup_steps=0", "eval.batch_size=16", "eval.max_new_tokens=2", "lora.r=4", "lora.alpha=8",
]
IMAGE_TEXT_JOB = [*(o for o in JOB if not o.startswith("data.")), "data.source=easyvqa", "data.max_train_examples=200",
                  "data.pooled_test_size=16"]


KINDS = {"image-text": "Image-text-to-text", "causal-lm": "Causal LMs", "classifier": "Sequence classifiers"}


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout("took over the time limit")


def tiny_config(model_type: str, tokenizer, num_labels: int | None):
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    default = cls()
    kwargs = {k: v for k, v in SHRINK.items() if hasattr(default, k)}
    for key in POSITIONS:
        if hasattr(default, key):
            kwargs[key] = 1024  # generation prompts are not cut to data.max_length
    kwargs.update(vocab_size=len(tokenizer), **_special_ids(tokenizer))
    if num_labels:
        kwargs["num_labels"] = num_labels
    return cls(**kwargs)


def check(model_type: str, kind: str, work: Path) -> dict:
    """One architecture through the whole path; the stages it passed, or where it stopped."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    stage, row = "config", {"type": model_type, "kind": kind}
    try:
        model_dir = work / model_type / kind
        if kind == "image-text":
            row["torchvision"] = needs_torchvision(model_type)
            stage = "build"
            # the families' own test checkpoints where the generic builder cannot make one
            FAMILY_BUILDERS.get(model_type, lambda out: tiny_image_text.build(model_type, out))(model_dir)
            config = AutoConfig.from_pretrained(model_dir)
            row["class"] = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
        else:
            specials = ["<unk>", "<s>", "</s>", "<pad>"]
            tokenizer = _wrap(_byte_level_bpe(specials, unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
            config = tiny_config(model_type, tokenizer, 3 if kind == "classifier" else None)
            stage = "build"
            auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
            torch.manual_seed(0)
            model = auto.from_config(config).float().eval()
            row["class"] = type(model).__name__
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
            del model
        stage = "runs"  # loading, LoRA, the federated job
        # Where fedvlm would take the type for the other kind (BERT as a classifier, LLaMA
        # as a generator), the job names the generic family and the table says so.
        want = "generate" if kind in ("causal-lm", "image-text") else "classify"
        try:
            detected = detect_family(config)
        except ModelError:
            detected = None
        row["named"] = detected is None or detected.task != want
        named = [f"model.family={'causal-lm' if want == 'generate' else 'sequence-classifier'}"] if row["named"] else []
        if kind == "image-text":
            row["named"], named = detected is None, []
        run_dir = work / model_type / f"{kind}-run"
        run_dir.mkdir()
        job = IMAGE_TEXT_JOB if kind == "image-text" else JOB
        cfg = load_config(None, [*job, f"model.path={model_dir}", *named])
        fed = run_simulation(cfg, run_dir)
        row["family"] = fed.family.name
        if fed.family.task != want and kind != "image-text":
            raise AssertionError(f"family {fed.family.name} does not {want}")
        stage = "trains"
        final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
        trained = set(fed.plan.trained(final, 1))
        changed = {k for k in final if not np.array_equal(final[k], fed.initial_adapter[k])}
        if not trained or changed != trained:
            raise AssertionError(f"{len(trained - changed)} trained arrays unchanged, {len(changed - trained)} changed untrained")
        fresh, _, _ = load_base(str(model_dir), family=cfg.model.family, labels=getattr(fed.task, "label_names", None),
                                seed=cfg.run.seed)
        fresh_params = dict(fresh.named_parameters())
        for name, p in fed.model.get_base_model().named_parameters():
            if "lora_" not in name and "modules_to_save" not in name:
                key = name.replace(".base_layer", "").replace(".original_module", "")
                if not torch.equal(p, fresh_params[key]):
                    raise AssertionError(f"base weight {key} changed")
        stage = "evaluates"
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if [r["round"] for r in records] != [0, 1] or any(r["eval"]["num_examples"] != 16 for r in records):
            raise AssertionError("rounds not all evaluated")
        stage = "peft"
        set_adapter_state(fed.model, final)
        fed.model.eval()
        batch = fed.task.training_batch(fed.test_ds[fed.pooled_test[:2]])
        stock = PeftModel.from_pretrained(fresh, str(run_dir / "adapters" / "final")).eval()
        with torch.no_grad():
            ours, theirs = fed.model(**batch).logits, stock(**batch).logits
        diff = (ours - theirs).abs().max().item()
        if diff > 1e-5:
            raise AssertionError(f"stock peft logits differ by {diff:.2e}")
        row["ok"], row["diff"] = True, diff
    except Exception as e:  # noqa: BLE001 - every failure becomes one line of the table
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        row.update(ok=False, stage=stage, why=f"{type(e).__name__}: {lines[0] if lines else ''}"[:160])
    finally:  # a few hundred checkpoints and runs would fill the disk
        for leftover in (work / model_type / kind, work / model_type / f"{kind}-run"):
            shutil.rmtree(leftover, ignore_errors=True)
    return row


def needs_torchvision(model_type: str) -> bool:
    """Whether the type's processor cannot be built without torchvision: a video processor,
    or an image processor with no PIL implementation."""
    import inspect

    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    processor = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)
    video = processor is not None and "video_processor" in inspect.signature(processor.__init__).parameters
    return video or "pil" not in (IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {})


def _check_one(task) -> dict:
    model_type, kind, tmp, timeout = task
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    start = time.perf_counter()
    try:
        return {**check(model_type, kind, Path(tmp)), "seconds": time.perf_counter() - start}
    except Timeout as e:
        return {"type": model_type, "kind": kind, "ok": False, "stage": "time", "why": str(e)}
    finally:
        signal.alarm(0)


def architectures(only: list[str] | None) -> list[tuple[str, str]]:
    from transformers.models.auto import modeling_auto as auto

    image_text = set(auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    pairs = [(t, "image-text") for t in sorted(image_text)]
    pairs += [(t, "causal-lm") for t in sorted(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) if t not in image_text]
    pairs += [(t, "classifier") for t in sorted(auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
              if t not in image_text]
    return [(t, k) for t, k in pairs if not only or t in only]


def write_table(rows: list[dict], out: Path, seconds: float) -> None:
    import transformers

    lines = [
        "# Architectures fedvlm runs out of the box",
        "",
        f"Measured by `scripts/models_coverage.py` with transformers {transformers.__version__} on CPU "
        f"({seconds / 60:.0f} min of checks per process, timeouts not counted): a tiny random instance of every "
        "class in transformers'",
        "image-text-to-text, causal-LM and sequence-classification mappings, and a 1-round 2-client job",
        "on it with no `lora.target_modules` and no `model.family` (easy-VQA for image-text models,",
        "CrowdFlower tweets for text models), except where fedvlm would take a text type for the other",
        "kind (BERT as a classifier, LLaMA as a generator): there the job names the generic family and",
        "the family column says \"named\". ✓ means it loaded, trained (every trained array changed, no",
        "base weight did), was evaluated every round, and the saved adapter gave fedvlm's logits in",
        "stock `peft` (exactly, or within the difference shown, at most 1e-5). A failure names the",
        "stage and the first line of the error. `build` failures are the script's own limit: it makes",
        "each tiny checkpoint from the config class's defaults (shrunk) and, for image-text models, a",
        "processor around the tests' tokenizer with a generic chat template",
        "(`tests/families/tiny_image_text.py`); a hub checkpoint brings its own. \"tv\" marks a processor",
        "that cannot be built without torchvision (a video processor or no PIL image processor): those",
        "run in the torchvision setup (`FEDVLM_TORCHVISION=1 scripts/quickstart.sh`).",
        "Regenerate: `HF_HUB_OFFLINE=1 .venv-torchvision/bin/python scripts/models_coverage.py`.",
        "",
    ]
    for kind, title in KINDS.items():
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        ok = sum(r["ok"] for r in group)
        auto = sum(r["ok"] and not r.get("named") for r in group)
        lines += [f"## {title}: {ok} of {len(group)} work ({auto} with no family named)", "",
                  "| model_type | class | family | result |", "|---|---|---|---|"]
        for r in group:
            if r["ok"]:
                result = "✓" if r["diff"] == 0 else f"✓ (peft logits within {r['diff']:.0e})"
            else:
                result = f"✗ {r['stage']}: {r['why']}".replace("|", "\\|")
            family = r.get("family", "") + (" (named)" if r.get("named") and r.get("family") else "")
            tv = " (tv)" if r.get("torchvision") else ""
            lines.append(f"| `{r['type']}`{tv} | {r.get('class', '')} | {family} | {result} |")
        lines.append("")
    out.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="model types to check (default: all)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS),
                        help="mappings to check; rows not re-checked are kept from --out's .json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "models.md")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per architecture")
    parser.add_argument("--jobs", type=int, default=2, help="processes side by side, one thread each")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedvlm-coverage-") as tmp:
        tasks = [(t, k, tmp, args.timeout) for t, k in architectures(args.only) if k in args.kinds]
        # one thread per process, a fresh process every few architectures (no leaks between
        # them); an architecture that kills its process (a crash in native code) is a row too
        with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=8) as pool:
            pending = [(task, pool.apply_async(_check_one, (task,))) for task in tasks]
            rows = []
            for (model_type, kind, *_), result in pending:
                try:
                    row = result.get(timeout=args.timeout + 60)
                except multiprocessing.TimeoutError:
                    row = {"type": model_type, "kind": kind, "ok": False, "stage": "crash",
                           "why": "its process died or hung past the time limit"}
                rows.append(row)
                print(f"{row['kind']:10} {row['type']:28} {'ok' if row['ok'] else row['stage'] + ': ' + row['why']}",
                      flush=True)
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
    saved = args.out.with_suffix(".json")  # every row, so that one kind can be re-run alone
    kept = json.loads(saved.read_text()) if saved.exists() else []
    done = {(r["type"], r["kind"]) for r in rows}
    rows = sorted([r for r in kept if (r["type"], r["kind"]) not in done] + rows,
                  key=lambda r: (list(KINDS).index(r["kind"]), r["type"]))
    saved.write_text(json.dumps(rows, indent=1))
    # the wall time of the whole table with --jobs processes, from each row's own time
    write_table(rows, args.out, sum(r.get("seconds", 0) for r in rows) / args.jobs)
    for kind in args.kinds:
        group = [r for r in rows if r["kind"] == kind]
        auto = sum(r["ok"] and not r.get("named") for r in group)
        print(f"{kind}: {sum(r['ok'] for r in group)} of {len(group)} work, {auto} with no family named")
    return 0


if __name__ == "__main__":
    sys.exit(main())
