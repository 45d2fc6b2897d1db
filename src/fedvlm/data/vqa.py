"""Load any VQA dataset into one canonical schema.

`load_vqa` accepts the built-in easy-VQA, a local parquet / JSONL file, a local directory
holding one file (or parquet shards) per split, or a Hugging Face dataset name, and returns
a `datasets.Dataset` with the columns

- ``image``: `datasets.Image(mode="RGB")` (decoded lazily, on row access),
- ``question``: str,
- ``answer``: str (the training target),
- ``answers``: list[str] of reference answers, only if the source has / maps one,
- ``question_type``: str, ``"all"`` when the source has none;

and for conversations with images (``messages``, LLaVA ``conversations``, the_cauldron's
``texts``: `fedvlm.data.image_chat`) ``images`` (a list) and ``messages`` (the turns)
in place of ``image``, with the last exchange as question and answer.

Other columns are dropped so that every source looks the same to the rest of fedvlm.
Image file paths are resolved and checked for existence up front, so that a missing file
fails at load time with its path and row instead of in the middle of a federated round.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from fedvlm.data.easyvqa import load_easyvqa
from fedvlm.data.files import (
    DATA_SUFFIXES,
    check_column_mapping,
    check_image,
    check_distinct_sources,
    data_files,
    first_line,
    read_files,
    resolve_image_paths,
)
from fedvlm.data.image_chat import IMAGE_CHAT_COLUMNS, image_chat_format, to_canonical_image_chat
from fedvlm.errors import ConfigError, DataError

CANONICAL_COLUMNS = ("image", "question", "answer", "answers", "question_type")
REQUIRED_COLUMNS = ("image", "question", "answer")
DEFAULT_QUESTION_TYPE = "all"


def load_vqa(
    source: str,
    split: str,
    columns: dict[str, str] | None = None,
    image_dir: str | None = None,
    subsets: list[str] | tuple[str, ...] = (),
) -> datasets.Dataset:
    """Load one split of a VQA dataset in the canonical fedvlm schema (see module doc).

    Args:
        source: ``"easyvqa"`` for the built-in easy-VQA; a path to a ``.parquet`` or
            ``.jsonl`` file (loaded whole, whatever `split` says); a path to a directory
            holding ``<split>.parquet``, ``<split>.jsonl`` or ``<split>-*.parquet`` shards
            (directly or under ``data/``, the Hugging Face Hub layout); anything else that
            is not an existing path is loaded with ``datasets.load_dataset(source,
            split=split)``.
        split: the split to load, e.g. ``"train"``.
        columns: maps canonical column names (image, question, answer, answers,
            question_type) to the dataset's own column names; unmapped canonical names
            are looked up under their own name.
        image_dir: directory that relative image paths are relative to; defaults to the
            directory of the data file (for Hub datasets: the working directory).
        subsets: Hub dataset configs (e.g. the_cauldron's ``ai2d``) to load one by one and
            concatenate, each row's ``question_type`` its subset's name.

    Returns:
        The dataset with columns image, question, answer, [answers], question_type.

    Raises:
        DataError: missing data or image file, missing column, unknown split, bad values.
        ConfigError: malformed `columns` mapping.
    """
    if subsets and (source in ("easyvqa", "multitask") or Path(source).expanduser().exists()):
        raise ConfigError(f"data.subsets names configs of a Hub dataset; data.source {source!r} is not one")
    if source == "multitask":  # built in: one task per question type
        from fedvlm.data.multitask import load_multitask

        return load_multitask(split)
    if source == "easyvqa":
        dataset = load_easyvqa(split)  # the package's own images, each found by load_easyvqa
        return to_canonical_vqa(dataset, columns, image_dir, origin=f"easyvqa {split}", verify_images=False)

    path = Path(source).expanduser().absolute()
    if path.exists():
        files = data_files(path, split)
        dataset = read_files(files)
        base_dir = image_dir if image_dir is not None else str(files[0].parent)
        origin = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{split}-*.parquet"
        return to_canonical_vqa(dataset, columns, base_dir, origin=origin)

    if _looks_like_path(source):
        raise DataError(f"data file not found: {path} (source {source!r} does not exist)")

    if subsets:
        parts = []
        for name in subsets:
            part = to_canonical_vqa(_load_hub(source, split, name), columns, image_dir,
                                    origin=f"{source} subset {name!r} split {split!r}")
            parts.append(part.remove_columns("question_type").add_column(
                "question_type", [name] * len(part), feature=datasets.Value("string")))
        return datasets.concatenate_datasets(parts)
    dataset = _load_hub(source, split)
    return to_canonical_vqa(dataset, columns, image_dir, origin=f"{source} split {split!r}")


def to_canonical_vqa(
    dataset: datasets.Dataset,
    columns: dict[str, str] | None,
    image_dir: str | None,
    origin: str,
    verify_images: bool = True,
) -> datasets.Dataset:
    """Rename, check and cast `dataset` to the canonical VQA schema.

    Args:
        dataset: any dataset with an image, a question and an answer column.
        columns: canonical name -> dataset column name (see `load_vqa`).
        image_dir: base directory for relative image paths (None: leave them as they are).
        origin: where the data came from, used in error messages (e.g. a file path).
        verify_images: open each image file once to check it is a readable image (off for
            the images a package ships: their existence is still checked).
    """
    fmt = image_chat_format(dataset.column_names, dict(columns or {}))
    if fmt is not None:  # conversations with images: `fedvlm.data.image_chat`
        check_column_mapping(dict(columns or {}), IMAGE_CHAT_COLUMNS)
        return to_canonical_image_chat(dataset, fmt, dict(columns or {}), image_dir, origin)
    mapping = _resolve_mapping(columns, dataset.column_names, origin)
    dataset = dataset.select_columns(list(mapping.values()))
    dataset = dataset.rename_columns({src: dst for dst, src in mapping.items() if src != dst})
    if dataset.num_rows == 0:
        raise DataError(f"{origin} has no rows; expected at least one VQA example")

    dataset = _prepare_images(dataset, mapping["image"], image_dir, origin, verify_images)
    for name in ("question", "answer", "question_type"):
        if name in mapping:
            dataset = _as_string_column(dataset, name, mapping[name], origin)
    if "question_type" not in mapping:
        dataset = dataset.add_column(
            "question_type",
            [DEFAULT_QUESTION_TYPE] * dataset.num_rows,
            feature=datasets.Value("string"),
        )
    if "answers" in mapping:
        dataset = _as_answers_column(dataset, mapping["answers"], origin)

    order = [name for name in CANONICAL_COLUMNS if name in dataset.column_names]
    return dataset.select_columns(order)


def _resolve_mapping(
    columns: dict[str, str] | None, available: list[str], origin: str
) -> dict[str, str]:
    """Return {canonical name: dataset column} for the canonical columns that exist."""
    columns = dict(columns or {})
    check_column_mapping(columns, CANONICAL_COLUMNS)
    mapping: dict[str, str] = {}
    for name in CANONICAL_COLUMNS:
        src = columns.get(name, name)
        if src in available:
            mapping[name] = src
        elif name in columns or name in REQUIRED_COLUMNS:
            hint = "" if name in columns else f" (map it with columns={{'{name}': ...}})"
            raise DataError(
                f"column {src!r} (for {name!r}) not found in {origin}; available "
                f"columns: {', '.join(available)}{hint}"
            )
    check_distinct_sources(mapping, origin)
    return mapping


def _load_hub(source: str, split: str, name: str | None = None) -> datasets.Dataset:
    """`datasets.load_dataset(source, name, split=split)` with one-line errors."""
    try:
        config = {"name": name} if name else {}
        return datasets.load_dataset(source, split=split, **config)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(
                f"unknown split {split!r} for dataset {source!r}: {first_line(err)}"
            ) from err
        raise DataError(f"could not load dataset {source!r}: {first_line(err)}") from err
    except Exception as err:  # Hub / network / builder errors come in many types
        raise DataError(
            f"{source!r} is not an existing file or directory and loading it as a "
            f"Hugging Face dataset failed: {first_line(err)}"
        ) from err


def _prepare_images(
    dataset: datasets.Dataset, src_name: str, image_dir: str | None, origin: str, verify: bool = True
) -> datasets.Dataset:
    """Resolve and check image paths, then cast `image` to `datasets.Image(mode="RGB")`.

    Accepted storages: file paths (str), encoded bytes, {"bytes", "path"} structs (the
    Hugging Face parquet encoding) and existing `datasets.Image` columns. Rows without
    bytes must have a path to an existing file (relative paths are joined to `image_dir`).
    Works on the (possibly memory-mapped) arrow chunks: image bytes are never copied.
    """
    storage = dataset.select_columns(["image"]).with_format("arrow")["image"]
    kind = storage.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        data, paths = None, storage
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        data, paths = storage, None
    elif pa.types.is_struct(kind) and {"bytes", "path"} & {f.name for f in kind}:
        data = pc.struct_field(storage, "bytes") if kind.get_field_index("bytes") >= 0 else None
        paths = pc.struct_field(storage, "path") if kind.get_field_index("path") >= 0 else None
    else:
        raise DataError(
            f"column {src_name!r} (image) in {origin} has type {kind}; expected image "
            f"file paths (str), image bytes or {{'bytes', 'path'}} structs"
        )

    if data is None:
        needs_file = [True] * len(storage)
    else:
        needs_file = pc.or_(pc.is_null(data), storage.is_null()).to_pylist()
        for row, blob in enumerate(data):  # one image's bytes at a time
            if blob.is_valid:
                check_image(blob.as_py(), f"row {row}, column {src_name!r} of {origin}")
    if not any(needs_file):
        return dataset.cast_column("image", datasets.Image(mode="RGB"))

    path_list = paths.to_pylist() if paths is not None else [None] * len(storage)
    resolved, changed = resolve_image_paths(path_list, needs_file, image_dir, src_name, origin, verify)
    if changed:
        new_paths = pa.array(resolved, type=pa.string())
        if data is None:
            new_storage = new_paths
        else:  # rare: a mix of embedded and file images; this copies the bytes once
            bytes_array = data.combine_chunks().cast(pa.binary())
            new_storage = pa.StructArray.from_arrays([bytes_array, new_paths], ["bytes", "path"])
        dataset = _replace_column(dataset, "image", new_storage, None)
    return dataset.cast_column("image", datasets.Image(mode="RGB"))


def _as_string_column(
    dataset: datasets.Dataset, name: str, src_name: str, origin: str
) -> datasets.Dataset:
    """Check `name` has no missing values and cast it to str."""
    column = _arrow_column(dataset, name)
    if column.null_count:
        first = pc.index(column.is_null(), True).as_py()
        raise DataError(
            f"column {src_name!r} ({name}) in {origin} has {column.null_count} missing "
            f"values, first at row {first}; expected a value on every row"
        )
    if dataset.features[name] == datasets.Value("string"):
        return dataset
    kind = column.type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_large_string(kind)
    ):
        raise DataError(
            f"column {src_name!r} ({name}) in {origin} has type {kind}; expected text"
        )
    return _replace_column(dataset, name, column.cast(pa.string()), datasets.Value("string"))


def _as_answers_column(
    dataset: datasets.Dataset, src_name: str, origin: str
) -> datasets.Dataset:
    """Normalise `answers` to list[str].

    Accepts lists of strings (or numbers) and the VQAv2 style list of
    {"answer": ..., ...} dicts.
    """
    column = _arrow_column(dataset, "answers")
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise DataError(
            f"column {src_name!r} (answers) in {origin} has type {kind}; expected a list "
            f"of reference answers per row"
        )
    target = datasets.List(datasets.Value("string"))
    if dataset.features["answers"] == target:
        return dataset
    item = kind.value_type
    if pa.types.is_struct(item):
        if item.get_field_index("answer") < 0:
            raise DataError(
                f"column {src_name!r} (answers) in {origin} holds {item} items; expected "
                f"strings or dicts with an 'answer' key"
            )
        values = [
            None if row is None else [str(a["answer"]) for a in row]
            for row in column.to_pylist()
        ]
        return _replace_column(dataset, "answers", values, target)
    try:
        array = column.cast(pa.list_(pa.string()))
    except pa.ArrowException as err:
        raise DataError(
            f"column {src_name!r} (answers) in {origin} holds {item} items; expected "
            f"strings ({first_line(err)})"
        ) from err
    return _replace_column(dataset, "answers", array, target)


def _replace_column(
    dataset: datasets.Dataset,
    name: str,
    values: pa.Array | list,
    feature: datasets.Value | datasets.List | None,
) -> datasets.Dataset:
    """Swap a column for new values (in memory; avoids `Dataset.cast`'s full rewrite)."""
    dataset = dataset.remove_columns(name)
    return dataset.add_column(name, values, feature=feature)


def _arrow_column(dataset: datasets.Dataset, name: str) -> pa.Array:
    """One column as a single pyarrow array, without decoding images or building rows."""
    column = dataset.select_columns([name]).with_format("arrow")[name]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column


def _looks_like_path(source: str) -> bool:
    """Whether a non-existing `source` was meant as a local path, not a Hub name."""
    return (
        source.endswith((*DATA_SUFFIXES, ".json"))
        or source.startswith(("/", ".", "~"))
        or "\\" in source
    )
