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


def _server_sides() -> list[Path]:
    return sorted((CORE.parent / "algorithms").glob("*/server.py"))


def test_every_algorithm_server_side_is_numpy_only():
    """An algorithm's server side is like core/ (DESIGN.md, "an algorithm is a folder"):
    no ML framework, checked statically and by importing each fresh."""
    files = _server_sides()
    assert len(files) >= 10
    offenders = {str(f.relative_to(CORE.parent)): _imported_roots(f) & FORBIDDEN for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}
    modules = [f"fedvlm.algorithms.{f.parent.name}.server" for f in files]
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_client_unit_reads_no_run_config_and_no_runner():
    """The client gets everything in its message and its node context (DESIGN.md, "The
    client is a unit"): it never imports the run's config or the engines."""
    client = CORE.parent / "client"
    files = sorted(client.rglob("*.py"))
    assert len(files) >= 3
    runners = {"fedvlm.config", "fedvlm.engine", "fedvlm.flower", "fedvlm.reporting", "fedvlm.tools", "fedvlm.cli"}
    offenders = {str(f.relative_to(client)): _fedvlm_imports(f) & runners for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# The layers of DESIGN.md, top down: a package may import those below it, never above.
LAYERS = ["fedvlm.cli", "fedvlm.tools", "fedvlm.flower", "fedvlm.reporting", "fedvlm.engine", "fedvlm.client",
          "fedvlm.algorithms", "fedvlm.train", "fedvlm.models", "fedvlm.data", "fedvlm.core"]


def test_imports_point_down_the_layers():
    """The engine writes records and reporting reads them: nothing in the engine (or below)
    imports reporting, the Flower transport or the commands' tools; each layer imports only
    the layers below it."""
    package = CORE.parent
    offenders = {}
    for layer_index, layer in enumerate(LAYERS):
        path = package / layer.split(".")[1]
        files = [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else sorted(path.rglob("*.py"))
        above = set(LAYERS[:layer_index])
        for f in files:
            bad = _fedvlm_imports(f) & above
            if bad:
                offenders[str(f.relative_to(package))] = sorted(bad)
    assert offenders == {}


def test_a_layer_violation_is_caught(tmp_path):
    """The rule's own check: an engine file importing reporting is reported."""
    bad = tmp_path / "simulate.py"
    bad.write_text("from fedvlm.reporting.report import write_report\nimport fedvlm.flower.worker\n")
    assert _fedvlm_imports(bad) & set(LAYERS[:LAYERS.index("fedvlm.engine")]) == {"fedvlm.reporting", "fedvlm.flower"}


def test_no_library_file_is_over_400_lines():
    """Small files named for what they hold (STYLE.md: past ~450 lines is a smell)."""
    package = CORE.parent
    long = {str(f.relative_to(package)): n for f in package.rglob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}
