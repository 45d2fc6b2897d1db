"""Local VQA data files: find a split's files, read them, check image files.

A source directory holds ``<split>.parquet``, ``<split>.jsonl`` or ``<split>-*.parquet``
shards, directly or under ``data/`` (the Hugging Face Hub layout). `data_files` finds them,
`read_files` reads them into a `datasets.Dataset` (parquet memory-mapped, JSONL in memory),
and `resolve_image_paths` resolves image file paths and checks that the files exist. Used
by `fedvlm.data.vqa`; every error is a one-line `DataError`.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import datasets
import pyarrow as pa

from fedvlm.errors import ConfigError, DataError

DATA_SUFFIXES = (".parquet", ".jsonl")

_SHARD_STEM = re.compile(r"^(?P<split>.+?)-\d+-of-\d+$")


def data_files(path: Path, split: str) -> list[Path]:
    """The data file(s) of `split` under `path` (a data file or a split directory)."""
    if path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise DataError(
                f"unsupported data file {path}; expected a .parquet or .jsonl file, or a "
                f"directory holding <split>.parquet / <split>.jsonl"
            )
        return [path]

    groups = []
    for folder in (path, path / "data"):
        for pattern in (f"{split}.jsonl", f"{split}.parquet", f"{split}-*.parquet"):
            found = sorted(p for p in folder.glob(pattern) if p.is_file())
            if found:
                groups.append(found)
    if not groups:
        available = _available_splits(path)
        raise DataError(
            f"unknown split {split!r} in {path}: no {split}.parquet, {split}.jsonl or "
            f"{split}-*.parquet there; available splits: {', '.join(available) or 'none'}"
        )
    if len(groups) > 1:
        names = ", ".join(str(g[0]) for g in groups)
        raise DataError(
            f"split {split!r} in {path} is ambiguous: found {names}; keep exactly one "
            f"of <split>.parquet, <split>.jsonl or <split>-*.parquet"
        )
    return groups[0]


def _available_splits(path: Path) -> list[str]:
    """Split names deducible from the data files in a split directory."""
    names = set()
    for folder in (path, path / "data"):
        for file in folder.glob("*"):
            if file.suffix in DATA_SUFFIXES and file.is_file():
                match = _SHARD_STEM.match(file.stem)
                names.add(match.group("split") if match else file.stem)
    return sorted(names)


def read_files(files: list[Path]) -> datasets.Dataset:
    """Read parquet files (memory-mapped via the datasets cache) or one JSONL file."""
    if files[0].suffix == ".jsonl":
        return _read_jsonl(files[0])
    try:
        return datasets.Dataset.from_parquet([str(f) for f in files])
    except Exception as err:  # pyarrow raises many types for a corrupt file
        raise DataError(f"could not read parquet {files[0]}: {first_line(err)}") from err


def _read_jsonl(path: Path) -> datasets.Dataset:
    """Read a JSON-lines file (one JSON object per non-empty line) into memory."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {line_number}: invalid JSON ({err})") from err
            if not isinstance(row, dict):
                raise DataError(
                    f"{path} line {line_number}: expected a JSON object, got "
                    f"{type(row).__name__}"
                )
            rows.append(row)
    if not rows:
        raise DataError(f"{path} has no rows; expected one JSON object per line")
    names = list(dict.fromkeys(key for row in rows for key in row))
    table = {name: _jsonl_column([row.get(name) for row in rows], name, path) for name in names}
    return datasets.Dataset(pa.table(table))


def _jsonl_column(values: list, name: str, path: Path) -> pa.Array:
    """One JSONL field as an arrow array; mixed scalars (e.g. 2 and "two") become text."""
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    present = [v for v in values if v is not None]
    if all(isinstance(v, list) for v in present) and any(isinstance(i, dict) for v in present for i in v):
        # lists of objects arrow cannot type alike (chat turns whose content is text in one
        # turn and a list of parts in another) stay JSON text, which the chat loaders parse
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())

    def text(value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            return json.dumps(value)
        if isinstance(value, list):
            return [text(item) for item in value]
        raise DataError(
            f"{path}: field {name!r} mixes JSON objects with other values; expected "
            f"scalars or lists of scalars"
        )

    try:
        return pa.array([text(v) for v in values])
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise DataError(
            f"{path}: field {name!r} mixes lists and single values; expected the same "
            f"kind on every line ({first_line(err)})"
        ) from err


def resolve_image_paths(
    paths: list[str | None],
    needs_file: list[bool],
    image_dir: str | None,
    src_name: str,
    origin: str,
    verify: bool = True,
) -> tuple[list[str | None], bool]:
    """Join relative paths of rows that need a file to `image_dir`; check the files exist
    (and, with `verify`, that each is a readable image: `check_image`).

    Returns the paths (resolved where needed) and whether any path changed.
    """
    resolved = list(paths)
    exists: dict[str, bool] = {}
    missing: list[tuple[int, str]] = []
    changed = False
    for row, (path, needed) in enumerate(zip(paths, needs_file)):
        if not needed:
            continue
        if path is None:
            raise DataError(
                f"row {row} of {origin} has no image: column {src_name!r} holds neither "
                f"bytes nor a file path"
            )
        if image_dir is not None and not os.path.isabs(path):
            path = os.path.join(image_dir, path)
            resolved[row] = path
            changed = True
        if path not in exists:
            exists[path] = os.path.isfile(path)
            if exists[path] and verify:
                check_image(path, f"row {row}, column {src_name!r} of {origin}")
        if not exists[path]:
            missing.append((row, path))
    if missing:
        row, path = missing[0]
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DataError(
            f"image file not found: {path} (row {row}, column {src_name!r} of {origin}){more}"
        )
    return resolved, changed


def check_image(source: str | bytes, where: str) -> None:
    """Raise a one-line ``DataError`` unless ``source`` (a file path or encoded bytes) is
    an image PIL can read: its header parses and its data is whole (``Image.verify``:
    checksums and structure, without decoding the pixels)."""
    from PIL import Image, UnidentifiedImageError

    what = source if isinstance(source, str) else "embedded image bytes"
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{what} ({where}) is not a readable image: {first_line(err)[:120]}") from None


def first_line(err: BaseException) -> str:
    """The first line of an exception message (our errors must stay one line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_column_mapping(columns: dict[str, str], canonical: tuple[str, ...]) -> None:
    """A ``data.columns`` mapping names only canonical columns, each with a column name."""
    for key, value in columns.items():
        if key not in canonical:
            raise ConfigError(
                f"unknown key {key!r} in the columns mapping; expected any of: {', '.join(canonical)}"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"columns mapping for {key!r} must be a dataset column name (str), got {value!r}")


def check_distinct_sources(mapping: dict[str, str], origin: str) -> None:
    """Each dataset column fills at most one canonical column."""
    used: dict[str, str] = {}
    for name, src in mapping.items():
        if src in used:
            raise ConfigError(
                f"columns mapping uses column {src!r} of {origin} for both {used[src]!r} "
                f"and {name!r}; each column can fill one canonical name"
            )
        used[src] = name
