#!/usr/bin/env bash
# Set up fedvlm in ./.venv (idempotent) and then either run the embedded default job or the tests.
#
#   scripts/quickstart.sh run  [CONFIG] [section.key=value ...]   # fedvlm run ...
#   scripts/quickstart.sh test [pytest args ...]                 # the test suite, offline
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FEDVLM_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"

# pyproject keeps torch as a range (GPU users want their CUDA build). Where no torch is
# installed yet, pin the CPU build first so the range resolves to it instead of pulling
# several GB of CUDA wheels onto a CPU machine.
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
"$py" -m pip install --quiet --disable-pip-version-check -e ".[test]"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case "${1:-}" in
  run) shift; exec "$venv/bin/fedvlm" run "$@" ;;
  test) shift; exec "$py" -m pytest "$@" ;;
  *) echo "usage: $0 run [CONFIG] [key=value ...] | test [pytest args ...]" >&2; exit 2 ;;
esac
