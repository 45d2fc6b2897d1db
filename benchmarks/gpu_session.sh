#!/usr/bin/env bash
# Issue 19's GPU checks as one script, for a lent GPU machine (no network, a few minutes).
#
# Here, first:   .venv/bin/python benchmarks/gpu_bundle.py      # wheels into .gpu-wheels/
# There:         bash benchmarks/gpu_session.sh [OUT]            # default OUT: runs/gpu-session
# Rehearsal:     GPU_SESSION_REHEARSE=1 PYTHON=/path/python bash benchmarks/gpu_session.sh
#                (on a CPU: the same steps at toy sizes, to prove the bundle and steps work)
#
# Installs the wheels with pip --no-index --no-deps --target, then runs the steps in order of
# what the issue's acceptance needs, each under its own timeout and all under
# GPU_SESSION_BUDGET seconds (default 720: the lent machine's 15 minutes less its start-up).
# Each step's output goes to OUT/NAME.log; its last lines and a status line go to stdout, and
# benchmarks/gpu_summary.py prints the acceptance table at the end, so what the machine
# prints is the whole report even if no file comes back. A step that fails or times out does
# not stop the ones after it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu-session}"
py="${PYTHON:-python3}"
budget="${GPU_SESSION_BUDGET:-720}"
rehearse="${GPU_SESSION_REHEARSE:-0}"
start=$SECONDS
if ! ls .gpu-wheels/*.whl > /dev/null 2>&1; then
  echo "gpu_session: no wheels in .gpu-wheels/: run benchmarks/gpu_bundle.py on a machine with the registries first" >&2
  exit 2
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)

step() {  # step NAME TIMEOUT CMD...: run CMD under min(TIMEOUT, what is left of the budget)
  local name=$1 limit=$2; shift 2
  local left=$(( budget - (SECONDS - start) ))
  if (( left < 30 )); then echo "== $name: skipped (budget spent)"; return; fi
  (( limit > left )) && limit=$left
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log" | grep -v "^WARNING: Location"
  case $rc in
    0) echo "== $name: ok in $(( SECONDS - t0 )) s" ;;
    124|130) echo "== $name: TIMEOUT after $limit s" ;;
    *) echo "== $name: FAILED (exit $rc) after $(( SECONDS - t0 )) s" ;;
  esac
}

deps="${GPU_SESSION_DEPS:-${TMPDIR:-/tmp}/fedvlm-gpu-deps}"
export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# Without our own wheel in the bundle, the tree's source is the package.
ls .gpu-wheels/fedvlm-*.whl > /dev/null 2>&1 || export PYTHONPATH="$PYTHONPATH:$PWD/src"

# The random-weight models (13.5 GB at the 7B shape) go where there is more room.
tmp="${TMPDIR:-/tmp}"
models="$tmp/fedvlm-gpu-models"
(( $(df --output=avail -k "$out" | tail -1) > $(df --output=avail -k "$tmp" | tail -1) )) && models="$out/models"

step machine 60 bash -c "df -h '$tmp' '$out'; nvidia-smi || true; '$py' -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no CUDA\")'"
# pip picks, by name, the wheel of each package that fits this Python (the bundle carries several)
names=$(ls .gpu-wheels/*.whl | sed -E 's#.*/([^-]+)-.*#\1#' | sort -u | tr '\n' ' ')
step install 180 "$py" -m pip install --no-index --no-deps --disable-pip-version-check --upgrade --target "$deps" \
  --find-links .gpu-wheels $names
step imports 120 "$py" -c "
import datasets, flwr_datasets, easy_vqa, nltk, rouge_score, fedvlm.cli, fedvlm.engine.simulate
print('fedvlm from', fedvlm.cli.__file__)
try:
    import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)
except Exception as e:
    print('bitsandbytes: not importable (4-bit steps will fail):', e)"

if [ "$rehearse" = 1 ]; then
  small=(federated.rounds=1 train.local_steps=2 train.local_epochs=null data.pooled_test_size=20
         partition.local_test_fraction=0.0 eval.batch_size=20)
  embedded=(--tiny --shapes embedded)
  big=(--tiny --shapes llava-7b --modes bf16,qlora-gc)
  wide=(--tiny --shapes llava-7b --modes bf16 --steps 1 --round-steps 1)
  rest=(--tiny --shapes qwen2-2b --modes bf16-gc)
  over=(--clients 2 --steps 2 --batch-size 4 --repeats 1)
else
  small=(); embedded=(--shapes embedded --steps 100); over=(--clients 4 --steps 10 --batch-size 32 --repeats 3 --threads 0)
  big=(--shapes llava-7b --modes bf16,qlora-gc --batch-size 4)
  wide=(--shapes llava-7b --modes bf16 --batch-size 16 --steps 5 --round-steps 3)
  rest=(--shapes qwen2-2b,phi3v-4b --modes bf16,bf16-gc,qlora-gc --batch-size 4)
fi

# 1. The default job in float32 and in bf16, side by side on the one GPU (accuracy, not speed).
step default_jobs 420 bash -c "
  '$py' -m fedvlm.cli run run.output_dir='$out' run.name=fp32 run.overwrite=true run.progress=false ${small[*]} > '$out/fp32.log' 2>&1 &
  a=\$!
  '$py' -m fedvlm.cli run run.output_dir='$out' run.name=bf16 run.overwrite=true run.progress=false model.dtype=bfloat16 \
    run.baselines=[] ${small[*]} > '$out/bf16.log' 2>&1
  b=\$?; wait \$a; a=\$?; tail -n 4 '$out/fp32.log' '$out/bf16.log'; exit \$(( a || b ))"
# 2. The embedded model's step: data wait with batches made ahead (target <= 5%).
step gpu_embedded 240 "$py" benchmarks/gpu.py "${embedded[@]}" --cache-dir "$models" --json "$out/gpu_embedded.json"
# 3. The 7B shape: bf16 LoRA MFU, QLoRA + checkpointing peak memory at batch 4, round / bare loop.
step gpu_7b 480 "$py" benchmarks/gpu.py "${big[@]}" --cache-dir "$models" --json "$out/gpu_7b.json"
# 4. The simulator against a bare peft loop with the embedded model, on this device.
step overhead 180 "$py" benchmarks/overhead.py "${over[@]}"
# 5. The 7B shape in bf16 at batch 16 (about 90 GiB, from batch 4's 33): MFU where the matmuls are wide.
step gpu_7b_batch16 300 "$py" benchmarks/gpu.py "${wide[@]}" --cache-dir "$models" --json "$out/gpu_7b_batch16.json"
# 6. The half-precision tests (bf16 under every strategy and variant, fp16 with loss scaling,
#    resume, merge) with the model on the GPU: CUDA's own paths (pinned copies, fused AdamW,
#    autocast and GradScaler on CUDA) that CI on a CPU cannot reach. Not BERT: its tokenizer
#    ships in an 83 MB package, over the bundle's budget.
step half_precision_tests 240 "$py" -m pytest -p no:cacheprovider -k "not bert" \
  tests/runners/test_half_precision_runs.py tests/families/test_half_precision.py
# 7. With what is left: the 2B and 4B shapes, and checkpointing without 4-bit.
step gpu_more 600 "$py" benchmarks/gpu.py "${rest[@]}" --cache-dir "$models" --json "$out/gpu_more.json"

"$py" benchmarks/gpu_summary.py "$out"
echo "== session: $(( SECONDS - start )) s of a $budget s budget"
