"""`python -m build` makes a wheel (the embedded model inside) and an sdist; the wheel
installed into a fresh virtual environment runs `fedvlm run` offline, importing fedvlm from
the wheel, not from this checkout."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("tree")  # a copy: building writes build/ and egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools) from this environment, offline
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                   check=True, capture_output=True, text=True)
    return out


def test_the_wheel_holds_the_package_the_embedded_model_and_the_extras(built):
    (wheel,) = built.glob("fedvlm-*.whl")
    (sdist,) = built.glob("fedvlm-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fedvlm/assets/tiny-llava/model.safetensors" in names and "fedvlm/cli.py" in names
    assert not any(n.startswith("tests/") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for extra, package in (("quant", "bitsandbytes"), ("flower", "flwr[simulation]"), ("privacy", "dp-accounting"),
                           ("privacy", "opacus"), ("torchvision", "torchvision"), ("tracking", "tensorboard"),
                           ("tracking", "mlflow-skinny"), ("tracking", "wandb"), ("tracking", "trackio")):
        assert any(line.startswith(f"Requires-Dist: {package}") and f'extra == "{extra}"' in line
                   for line in meta.splitlines()), (extra, package)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "fedvlm = fedvlm.cli:main" in entry_points
    assert 5_000_000 < wheel.stat().st_size < 50_000_000 and sdist.stat().st_size > 5_000_000


def test_the_wheel_runs_a_job_in_a_fresh_environment(built, tmp_path):
    (wheel,) = built.glob("fedvlm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, transformers...) from this environment, as a plain path: its
    # .pth files (this checkout's editable install among them) are not read from there
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True)
    where = subprocess.run([str(python), "-c", "import fedvlm; print(fedvlm.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(site)), where  # the wheel's copy, not this checkout
    run = subprocess.run([str(venv / "bin" / "fedvlm"), "run", *TINY_RUN, "federated.rounds=1",
                          f"run.output_dir={tmp_path / 'runs'}", "run.name=from-wheel"],
                         cwd=tmp_path, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "runs" / "from-wheel" / "report.md").is_file()
    assert (tmp_path / "runs" / "from-wheel" / "adapters" / "final" / "adapter_model.safetensors").is_file()
