"""File writes that survive a crash: a reader finds the old or the new file, never half of one."""

import os
from pathlib import Path


def is_one_directory_name(name: str) -> bool:
    """``name`` names one directory inside another: not empty, ``.``, ``..``, absolute, with
    a separator or surrounding spaces, so joining it cannot reach outside."""
    return bool(name.strip()) and name not in (".", "..") and name == name.strip() and not any(
        c in name for c in ("/", "\\", "\0"))


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: write a hidden file beside it, flush it to disk, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
