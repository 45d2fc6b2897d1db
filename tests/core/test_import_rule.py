"""core/ is the engine-agnostic algorithm layer: it must not import torch, transformers,
peft or flwr (DESIGN.md). Checked statically on every file and by importing it fresh."""

import ast
import subprocess
import sys
from pathlib import Path

import fedvlm

CORE = Path(fedvlm.__file__).parent / "core"
FORBIDDEN = {"torch", "transformers", "peft", "flwr"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_files_import_no_ml_framework():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 5
    offenders = {str(f.relative_to(CORE)): _imported_roots(f) & FORBIDDEN for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_importing_core_loads_no_ml_framework():
    code = (
        "import sys, importlib, pkgutil, fedvlm.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'fedvlm.core.'): importlib.import_module(m.name)\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fedvlm_imports(path: Path) -> set[str]:
    """The fedvlm modules ``path`` imports, as ``fedvlm.<package>`` (``fedvlm.config``...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {".".join(n.split(".")[:2]) for n in names if n.startswith("fedvlm.")}
    return found


def test_the_client_unit_reads_no_run_config_and_no_runner():
    """The client gets everything in its message and its node context (DESIGN.md, "The
    client is a unit"): it never imports the run's config or the engines."""
    client = CORE.parent / "client"
    files = sorted(client.rglob("*.py"))
    assert len(files) >= 3
    offenders = {str(f.relative_to(client)): _fedvlm_imports(f) & {"fedvlm.config", "fedvlm.runners"} for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}
