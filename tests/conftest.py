import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs on one pytest-xdist worker more than cores (scripts/quickstart.sh test):
    # one torch thread per worker, and per process it starts (Flower nodes, CLI runs), so
    # that workers do not fight over the cores. Results do not depend on it (test_golden).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
