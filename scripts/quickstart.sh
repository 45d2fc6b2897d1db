#!/usr/bin/env bash
# Set up fedvlm in ./.venv (idempotent) and then either run the embedded default job or the tests.
#
#   scripts/quickstart.sh run  [CONFIG] [section.key=value ...]   # fedvlm run ...
#   scripts/quickstart.sh test [pytest args ...]                 # the test suite, offline
#
# FEDVLM_TORCHVISION=1 sets up ./.venv-torchvision instead, with torch 2.14.1 and
# torchvision 0.29.1 (a 5.5 GB build), which the Qwen2-VL and SmolVLM processors need;
# the tests of those two families run only there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The job needs the package alone; the tests also need pytest and bitsandbytes.
extras=$([ "${1:-}" = test ] && echo test || echo "")
if [ "${FEDVLM_TORCHVISION:-0}" = 1 ]; then
  venv="${FEDVLM_VENV:-.venv-torchvision}"; torch_pin="torch==2.14.1 torchvision==0.29.1"; extras="${extras:+$extras,}torchvision"
else
  venv="${FEDVLM_VENV:-.venv}"; torch_pin="torch==2.13.0"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"

# pyproject keeps torch as a range (GPU users want their CUDA build). Where no torch is
# installed yet, pin the CPU build first so the range resolves to it instead of pulling
# several GB of CUDA wheels onto a CPU machine.
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install --quiet --disable-pip-version-check $torch_pin
fi
"$py" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case "${1:-}" in
  run) shift; exec "$venv/bin/fedvlm" run "$@" ;;
  # pytest-xdist workers: one more than the cores (at most 5), since the Flower tests spend much
  # of their time waiting on processes that start (3 workers on 2 cores: 15m21s against
  # about 17 min with 2); `-n 0` after it runs them in this process
  test) shift; exec "$py" -m pytest -n "$(( $(nproc) < 4 ? $(nproc) + 1 : 5 ))" --dist worksteal "$@" ;;
  *) echo "usage: $0 run [CONFIG] [key=value ...] | test [pytest args ...]" >&2; exit 2 ;;
esac
