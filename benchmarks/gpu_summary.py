"""Issue 19's acceptance, read from what ``benchmarks/gpu_session.sh`` left in its folder.

Prints one line per target with the measured figure, the target and PASS / FAIL / MISSING
(a step that did not run or did not finish), then the speed tables of ``benchmarks/gpu.py``.

    python benchmarks/gpu_summary.py runs/gpu-session
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def final_job(run_dir: Path) -> dict | None:
    """The last evaluated round of a finished ``fedvlm run`` (None for a run cut short)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file() or not (run_dir / "adapters" / "final").is_dir():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    trained = [r for r in records if r.get("round", 0) > 0]
    evaluated = [r for r in records if "eval" in r]
    if not trained or not evaluated:
        return None
    seconds = sum(c["seconds"] for r in trained for c in r["clients"].values())
    waited = sum(c.get("data_seconds", 0.0) for r in trained for c in r["clients"].values())
    return {
        "rounds": trained[-1]["round"],
        "accuracy": evaluated[-1]["eval"]["accuracy"],
        "round_seconds": sum(r["seconds"] for r in trained) / len(trained),
        "data_wait": waited / seconds if seconds else None,
        "questions_per_second": evaluated[-1].get("eval_speed", {}).get("questions_per_second"),
    }


def rows_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def pick(rows: list[dict], shape: str, mode: str) -> dict | None:
    return next((r for r in rows if r["shape"] == shape and r["mode"] == mode), None)


def check(label: str, value, target: str, ok) -> str:
    verdict = "MISSING" if value is None else ("PASS" if ok else "FAIL")
    return f"| {label} | {'-' if value is None else value} | {target} | {verdict} |"


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["runs/gpu-session"])[0])
    if not out.is_dir():
        print(f"gpu_summary: {out} is not a folder; give the one benchmarks/gpu_session.sh wrote", file=sys.stderr)
        return 2
    fp32, bf16 = final_job(out / "fp32"), final_job(out / "bf16")
    centralized = None
    if (out / "fp32" / "baselines.json").is_file():
        centralized = json.loads((out / "fp32" / "baselines.json").read_text()).get("centralized", {}).get("accuracy")
    embedded = rows_of(out / "gpu_embedded.json")
    big, wide = rows_of(out / "gpu_7b.json"), rows_of(out / "gpu_7b_batch16.json")
    shape_7b = "llava-7b"
    lora, qlora = pick(big, shape_7b, "bf16"), pick(big, shape_7b, "qlora-gc")
    # MFU: the best bf16 batch measured (the round against the bare loop is batch 4's)
    fastest = max((r for r in big + wide if r["shape"] == shape_7b and r["mode"] == "bf16" and r["mfu"] is not None),
                  key=lambda r: r["mfu"], default=None)
    emb = pick(embedded, "embedded", "fp32")

    devices = {json.loads(p.read_text())["device"] for p in out.glob("gpu_*.json")}
    print(f"device: {', '.join(sorted(devices)) or 'unknown (no benchmarks/gpu.py output)'}")
    if "CPU" in devices:
        print("a CPU rehearsal at toy sizes: the verdicts below say nothing about the targets")
    lines = ["| target | measured | wanted | verdict |", "|---|---|---|---|"]
    gap = None if fp32 is None or bf16 is None else 100 * (bf16["accuracy"] - fp32["accuracy"])
    lines.append(check("default job: bf16 - float32 accuracy (points)",
                       None if gap is None else f"{gap:+.1f} ({100 * bf16['accuracy']:.1f} vs {100 * fp32['accuracy']:.1f})",
                       "within 1", gap is not None and abs(gap) <= 1.0))
    wait = None if emb is None else 100 * emb["data_wait"]
    workers = None if emb is None or emb.get("data_wait_workers") is None else 100 * emb["data_wait_workers"]
    lines.append(check("embedded model: data wait, batches made ahead in a thread (% of step)",
                       None if wait is None else f"{wait:.1f} (inline {100 * emb['data_wait_inline']:.1f})",
                       "<= 5", wait is not None and wait <= 5.0))
    lines.append(check("embedded model: data wait, batches made by worker processes (% of step)",
                       None if workers is None else f"{workers:.1f}", "<= 5", workers is not None and workers <= 5.0))
    mfu = None if fastest is None else 100 * fastest["mfu"]
    lines.append(check("7B bf16 LoRA: MFU (%)", None if mfu is None else f"{mfu:.1f} (batch {fastest['batch']})",
                       ">= 40", mfu is not None and mfu >= 40.0))
    peak = None if qlora is None else qlora["peak_gib"]
    lines.append(check("7B QLoRA + checkpointing, batch 4: peak GiB",
                       None if peak is None else f"{peak:.2f} (batch {qlora['batch']})",
                       "<= 11", peak is not None and peak <= 11.0 and qlora["batch"] >= 4))
    ratio = None if lora is None else lora["round_ratio"]
    lines.append(check("7B simulator round / bare peft loop", None if ratio is None else f"{ratio:.3f}",
                       "<= 1.03", ratio is not None and ratio <= 1.03))
    print("\n".join(lines))
    for name, job in (("float32", fp32), ("bf16", bf16)):
        if job:
            print(f"default job {name}: {100 * job['accuracy']:.1f}% after {job['rounds']} rounds, "
                  f"{job['round_seconds']:.1f} s a round, data wait {100 * (job['data_wait'] or 0):.1f}%, "
                  f"{job['questions_per_second'] or 0:.0f} questions/s")
    if centralized is not None:
        print(f"centralized (float32): {100 * centralized:.1f}%")
    rows = embedded + big + wide + rows_of(out / "gpu_more.json")
    if rows:
        from gpu import table

        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
