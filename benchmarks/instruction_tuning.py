"""The OpenFedLLM / FlowerTune instruction-tuning setting on a tiny LlamaForCausalLM, offline.

400 alpaca-format rows (instruction, input, output), 2 clients x 10 local steps, batch 8,
``data.max_length=64``, through ``fedvlm run``'s own code. The real alpaca set is on the
hub, out of reach here: the rows are written by this script, with inputs of 0 to 60 words
so that many prompts must be cut, and a few outputs longer than 64 tokens so that rows are
dropped. It prints the shape of every training batch seen, the round time, and the tokens
per step (real tokens, padding excluded).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/instruction_tuning.py
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from families.tiny_text import build_llama

from fedvlm.config import load_config
from fedvlm.engine.simulate import run_simulation

WORDS = ["the", "a", "model", "data", "client", "server", "round", "update", "adapter", "token", "answer", "prompt"]


def write_alpaca(path: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        a, b = (int(v) for v in torch.randint(0, 50, (2,), generator=g))
        context = " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (int(torch.randint(0, 61, (1,), generator=g)),), generator=g))
        output = str(a + b) if i % 50 else " ".join(["sum"] * 80)  # 1 in 50 cannot fit
        rows.append({"instruction": f"Add {a} and {b}.", "input": context, "output": output})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "alpaca").mkdir()
        write_alpaca(tmp / "alpaca" / "train.jsonl", 400, 0)
        write_alpaca(tmp / "alpaca" / "test.jsonl", 100, 1)
        model = build_llama(tmp / "llama")
        cfg = load_config(None, [
            f"model.path={model}", f"data.source={tmp / 'alpaca'}", "data.max_length=64", "data.max_train_examples=null",
            "data.pooled_test_size=100", "partition.num_clients=2", "train.local_steps=10", "train.batch_size=8",
            f"federated.rounds={args.rounds}", "run.baselines=[]", "run.progress=false", "eval.max_new_tokens=4",
            "eval.metric=rouge_l", "eval.local=false",
        ])
        from fedvlm.train.text_generation import TextGenerationTask

        shapes, tokens = [], []
        original = TextGenerationTask.training_batch

        def recording(self, rows):
            batch = original(self, rows)
            if torch.is_grad_enabled():  # training batches (the held-out loss runs under no_grad)
                shapes.append(tuple(batch["input_ids"].shape))
                tokens.append(int(batch["attention_mask"].sum()))
            return batch

        TextGenerationTask.training_batch = recording
        (tmp / "run").mkdir()
        start = time.perf_counter()
        run_simulation(cfg, tmp / "run")
        total = time.perf_counter() - start
        records = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["round"] >= 1]
    print(f"training batches: {len(shapes)}, shapes seen: {sorted(set(shapes))}")
    print(f"tokens per step (real, padding excluded): mean {sum(tokens) / len(tokens):.0f}, "
          f"max {max(tokens)} of {8 * 64}")
    print(f"round time (training and evaluation): mean {sum(r['seconds'] for r in rounds) / len(rounds):.1f} s; "
          f"whole job {total:.1f} s")
    for r in records:
        ev = r["eval"]
        print(f"round {r['round']}: ROUGE-L {100 * ev['rouge_l']:.1f}  EM {100 * ev['exact_match']:.1f}  "
              f"BLEU {ev['bleu']:.1f}  held-out loss {ev['loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
