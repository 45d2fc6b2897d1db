"""Load text classification and instruction data into one canonical schema.

`load_text` accepts the built-in CrowdFlower tweet sentiment corpus, GLUE tasks by name
(``"glue/sst2"``, from the Hugging Face Hub, so only when online), a local GLUE-format
``.tsv`` / ``.csv`` / ``.jsonl`` / ``.parquet`` file, a local directory holding one such
file per split, or another Hugging Face dataset name, and returns a `datasets.Dataset`
with the columns

- ``text``: str,
- ``text_pair``: str, only for sentence-pair tasks (RTE, MNLI, ...),
- ``answer``: str, the label name for classification, the response for instruction data,
- ``label``: `datasets.ClassLabel` (int index into the label names), only for
  classification, so the names travel with the dataset,
- ``question_type``: str, ``"all"`` when the source has none;

and for instruction and conversation data (alpaca, ``messages``, ShareGPT
``conversations``: `fedvlm.data.chat`) ``messages`` (the turns), ``text`` (the last user
turn) and ``answer`` (the last assistant turn).

A source is classification data if it has (or maps) a ``label`` column and instruction
data if it has (or maps) an ``answer`` column instead. Label names: a `ClassLabel` column
(Hub datasets, parquet written by `datasets`) keeps its names; integer labels (also "0",
"1" in a TSV) keep their values, named "0", "1", ...; other labels become sorted names.
In a split directory the names come from the labels of every split file, so that train
and test always agree on the label indices.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from fedvlm.data.chat import CHAT_COLUMNS, chat_format, to_canonical_chat
from fedvlm.data.crowdflower import CROWDFLOWER_LABELS, load_crowdflower
from fedvlm.data.hub_text import load_glue, load_hub
from fedvlm.data.files import check_column_mapping, check_distinct_sources, first_line, read_files
from fedvlm.errors import ConfigError, DataError

CANONICAL_COLUMNS = ("text", "text_pair", "answer", "label", "question_type")
DEFAULT_QUESTION_TYPE = "all"
TEXT_SUFFIXES = (".tsv", ".csv", ".jsonl", ".parquet")
SPLIT_ALIASES = {"validation": ("validation", "dev"), "dev": ("dev", "validation")}

# (text, text_pair) columns tried in this order when `text` is not mapped: GLUE's names.
DEFAULT_TEXT_COLUMNS = (
    ("text", "text_pair"),
    ("text", None),
    ("sentence1", "sentence2"),  # mrpc, rte, wnli
    ("question1", "question2"),  # qqp
    ("premise", "hypothesis"),  # mnli, ax
    ("question", "sentence"),  # qnli
    ("sentence", None),  # sst2, cola
)
_INTEGER = re.compile(r"^-?\d+$")


def load_text(source: str, split: str, columns: dict[str, str] | None = None) -> datasets.Dataset:
    """Load one split of a text dataset in the canonical fedvlm schema (see module doc).

    Args:
        source: ``"crowdflower"`` (see `fedvlm.data.crowdflower`); ``"glue/<task>"`` for a GLUE
            task from the Hub (``nyu-mll/glue``; stsb is regression and not supported);
            a path to a ``.tsv`` / ``.csv`` / ``.jsonl`` / ``.parquet`` file (loaded whole,
            whatever `split` says); a path to a directory holding ``<split>.<suffix>``
            (``dev`` and ``validation`` name the same split); any other name is loaded
            with ``datasets.load_dataset(source, split=split)``.
        split: the split to load, e.g. ``"train"``.
        columns: maps canonical column names (text, text_pair, answer, label,
            question_type) to the source's column names, e.g. ``{"text": "instruction",
            "answer": "output"}``; unmapped names are looked up under their own name, and
            `text` / `text_pair` also under GLUE's names (sentence, sentence1/sentence2,
            question1/question2, premise/hypothesis, question/sentence).

    Raises:
        DataError: missing file or column, unknown split or label, empty split, bad values.
        ConfigError: malformed `columns` mapping.
    """
    if source == "crowdflower":
        return to_canonical_text(
            load_crowdflower(split), columns, f"crowdflower {split}", CROWDFLOWER_LABELS
        )
    if source.startswith("glue/"):
        dataset, defaults = load_glue(source, split)
        return to_canonical_text(dataset, {**defaults, **(columns or {})}, f"{source} {split}")

    path = Path(source).expanduser().absolute()
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise DataError(
                f"unsupported data file {path}; expected one of {', '.join(TEXT_SUFFIXES)} "
                f"or a directory holding <split>.tsv / .csv / .jsonl / .parquet"
            )
        return to_canonical_text(_read_table(path), columns, str(path))
    if path.is_dir():
        return _load_directory(path, split, columns)
    if source.endswith((*TEXT_SUFFIXES, ".json", ".txt")) or source.startswith(("/", ".", "~")):
        raise DataError(f"data file not found: {path} (source {source!r} does not exist)")
    return to_canonical_text(load_hub(source, split), columns, f"{source} split {split!r}")


def to_canonical_text(
    dataset: datasets.Dataset,
    columns: dict[str, str] | None,
    origin: str,
    label_names: list[str] | tuple[str, ...] | None = None,
) -> datasets.Dataset:
    """Rename, check and encode `dataset` to the canonical text schema.

    Args:
        dataset: any dataset with a text column and a label or answer column.
        columns: canonical name -> dataset column name (see `load_text`).
        origin: where the data came from, used in error messages (e.g. a file path).
        label_names: the label names to encode non-`ClassLabel` labels with (default:
            derived from this split's labels, see the module doc).
    """
    fmt = chat_format(dataset.column_names, dict(columns or {}))
    if fmt is not None:  # instruction or conversation data: turns
        check_column_mapping(dict(columns or {}), (*CANONICAL_COLUMNS, *CHAT_COLUMNS))
        if dataset.num_rows == 0:
            raise DataError(f"{origin} has no rows; expected at least one conversation")
        return to_canonical_chat(dataset, fmt, dict(columns or {}), origin)
    mapping = _resolve_mapping(columns, dataset.column_names, origin)
    if dataset.num_rows == 0:
        raise DataError(f"{origin} has no rows; expected at least one text example")
    arrays: dict[str, pa.Array] = {}
    features: dict[str, datasets.features.features.FeatureType] = {}
    for name in ("text", "text_pair"):
        if name in mapping:
            arrays[name] = _string_column(dataset, name, mapping[name], origin)
            features[name] = datasets.Value("string")
    if "label" in mapping:
        labels, names = _encode_labels(dataset, mapping["label"], origin, label_names)
        arrays["answer"] = pc.take(pa.array(names, pa.string()), labels)
        arrays["label"] = labels
        features["answer"] = datasets.Value("string")
        features["label"] = datasets.ClassLabel(names=list(names))
    else:
        arrays["answer"] = _string_column(dataset, "answer", mapping["answer"], origin)
        features["answer"] = datasets.Value("string")
    if "question_type" in mapping:
        arrays["question_type"] = _string_column(
            dataset, "question_type", mapping["question_type"], origin
        )
    else:
        arrays["question_type"] = pa.array([DEFAULT_QUESTION_TYPE] * dataset.num_rows)
    features["question_type"] = datasets.Value("string")
    info = datasets.DatasetInfo(features=datasets.Features(features))
    return datasets.Dataset(pa.table(arrays), info=info)


def _resolve_mapping(
    columns: dict[str, str] | None, available: list[str], origin: str
) -> dict[str, str]:
    """Return {canonical name: dataset column} for the canonical columns to use."""
    columns = dict(columns or {})
    check_column_mapping(columns, CANONICAL_COLUMNS)
    if "label" in columns and "answer" in columns:
        raise ConfigError(
            "columns mapping names both 'label' (classification) and 'answer' (instruction "
            "data); map one: for classification the answer is the label name"
        )
    for key, src in columns.items():
        if src not in available:
            raise DataError(
                f"column {src!r} (for {key!r}) not found in {origin}; available columns: "
                f"{', '.join(available)}"
            )

    mapping = {"text": columns["text"]} if "text" in columns else _default_text(available)
    if not mapping:
        raise DataError(
            f"no text column in {origin}: expected 'text', 'sentence', 'sentence1' + "
            f"'sentence2' (or another GLUE pair), or map one with columns={{'text': ...}}; "
            f"available columns: {', '.join(available)}"
        )
    if "text_pair" in columns:
        mapping["text_pair"] = columns["text_pair"]
    elif "text" in columns and "text_pair" in available:
        mapping["text_pair"] = "text_pair"

    if "answer" in columns or ("label" not in columns and "label" not in available):
        target = columns.get("answer", "answer")
        if target not in available:
            raise DataError(
                f"no label or answer column in {origin}: map one with columns={{'label': "
                f"...}} (classification) or {{'answer': ...}} (instruction data); "
                f"available columns: {', '.join(available)}"
            )
        mapping["answer"] = target
    else:
        mapping["label"] = columns.get("label", "label")
    qtype = columns.get("question_type", "question_type")
    if qtype in available:
        mapping["question_type"] = qtype

    check_distinct_sources(mapping, origin)
    return mapping


def _default_text(available: list[str]) -> dict[str, str]:
    """The first GLUE-style (text, text_pair) pair of columns that `available` has."""
    for text, pair in DEFAULT_TEXT_COLUMNS:
        if text in available and (pair is None or pair in available):
            return {"text": text} if pair is None else {"text": text, "text_pair": pair}
    return {}


def _encode_labels(
    dataset: datasets.Dataset,
    src: str,
    origin: str,
    label_names: list[str] | tuple[str, ...] | None,
) -> tuple[pa.Array, list[str]]:
    """Label indices (int64) and label names of column `src` (see the module doc)."""
    column = _arrow_column(dataset, src)
    _check_no_nulls(column, src, "label", origin)
    feature = dataset.features[src]
    if isinstance(feature, datasets.ClassLabel):
        names, keys = list(feature.names), column.to_pylist()
        index = {i: i for i in range(len(names))}
    else:
        keys = _label_keys(column, src, origin)
        names = list(label_names) if label_names is not None else label_names_of(keys)
        index = {name: i for i, name in enumerate(names)}
    codes = [index.get(key) for key in keys]
    if None in codes:
        row = codes.index(None)
        if isinstance(feature, datasets.ClassLabel):
            expected = f"one of 0..{len(names) - 1} ({', '.join(names)})"
        else:
            expected = f"one of {', '.join(names)}" if names else "a class index >= 0"
        hint = "; GLUE test splits hide their labels as -1" if str(keys[row]) == "-1" else ""
        raise DataError(
            f"unknown label {keys[row]!r} in row {row} (column {src!r}) of {origin}; "
            f"expected {expected}{hint}"
        )
    return pa.array(codes, pa.int64()), names


def _label_keys(column: pa.Array, src: str, origin: str) -> list[str]:
    """Label values as name keys: integers (also "3" in a TSV) as "3", other text as is."""
    kind = column.type
    if pa.types.is_floating(kind):
        if not pc.all(pc.equal(pc.floor(column), column)).as_py():
            raise DataError(
                f"column {src!r} (label) in {origin} holds non-integer numbers; expected "
                f"class labels (regression targets are not supported)"
            )
        column = column.cast(pa.int64())
    if pa.types.is_integer(column.type):
        return [str(value) for value in column.to_pylist()]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = column.cast(pa.string())
    values = column.to_pylist()
    if all(_INTEGER.match(value) for value in values):
        return [str(int(value)) for value in values]
    return values


def label_names_of(keys: list[str]) -> list[str]:
    """Label names for label keys: "0".."max" if all are integers, else sorted names."""
    unique = set(keys)
    if unique and all(_INTEGER.match(key) for key in unique):
        return [str(i) for i in range(max(int(key) for key in unique) + 1)]
    return sorted(unique)


def _string_column(dataset: datasets.Dataset, name: str, src: str, origin: str) -> pa.Array:
    """Column `src` as a string array with a value on every row."""
    column = _arrow_column(dataset, src)
    _check_no_nulls(column, src, name, origin)
    kind = column.type
    if pa.types.is_string(kind):
        return column
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_large_string(kind)
    ):
        raise DataError(f"column {src!r} ({name}) in {origin} has type {kind}; expected text")
    return column.cast(pa.string())


def _check_no_nulls(column: pa.Array, src: str, name: str, origin: str) -> None:
    if column.null_count:
        first = pc.index(column.is_null(), True).as_py()
        raise DataError(
            f"column {src!r} ({name}) in {origin} has {column.null_count} missing values, "
            f"first at row {first}; expected a value on every row"
        )


def _arrow_column(dataset: datasets.Dataset, name: str) -> pa.Array:
    """One column as a single pyarrow array."""
    column = dataset.select_columns([name]).with_format("arrow")[name]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column


def _load_directory(path: Path, split: str, columns: dict[str, str] | None) -> datasets.Dataset:
    """One split file of a split directory; label names from the labels of all splits."""
    files = _split_files(path)
    wanted = [name for name in SPLIT_ALIASES.get(split, (split,)) if name in files]
    if not wanted:
        raise DataError(
            f"unknown split {split!r} in {path}: no {split}.tsv, .csv, .jsonl or .parquet "
            f"there; available splits: {', '.join(sorted(files)) or 'none'}"
        )
    if len(wanted) > 1 or len(files[wanted[0]]) > 1:
        found = ", ".join(str(f) for name in wanted for f in files[name])
        raise DataError(
            f"split {split!r} in {path} is ambiguous: found {found}; keep exactly one file "
            f"per split"
        )
    target = files[wanted[0]][0]
    dataset = _read_table(target)
    if chat_format(dataset.column_names, dict(columns or {})) is not None:
        return to_canonical_text(dataset, columns, str(target))
    mapping = _resolve_mapping(columns, dataset.column_names, str(target))
    label_src = mapping.get("label")
    if label_src is None or isinstance(dataset.features[label_src], datasets.ClassLabel):
        return to_canonical_text(dataset, columns, str(target))
    keys = set()
    for paths in files.values():
        other = dataset if paths[0] == target else _read_table(paths[0])
        if label_src in other.column_names and other.num_rows:
            column = _arrow_column(other, label_src).drop_null()
            keys.update(_label_keys(column, label_src, str(paths[0])))
    return to_canonical_text(dataset, columns, str(target), label_names_of(sorted(keys)))


def _split_files(path: Path) -> dict[str, list[Path]]:
    """{split name: data files} of a split directory."""
    files: dict[str, list[Path]] = {}
    for file in sorted(path.iterdir()):
        if file.suffix in TEXT_SUFFIXES and file.is_file():
            files.setdefault(file.stem, []).append(file)
    return files


def _read_table(path: Path) -> datasets.Dataset:
    """Read a .tsv / .csv file (header row, UTF-8) or a .jsonl / .parquet file."""
    if path.suffix in (".jsonl", ".parquet"):
        return read_files([path])
    tsv = path.suffix == ".tsv"
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            # GLUE's TSV files are unquoted: a '"' inside a sentence is just a character
            reader = csv.reader(
                handle,
                delimiter="\t" if tsv else ",",
                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
            )
            header = next(reader, None)
            rows = [row for row in _delimited_rows(reader, header, path) if row]
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); expected UTF-8"
        ) from err
    except csv.Error as err:
        raise DataError(f"could not parse {path}: {first_line(err)}") from err
    table = {name: pa.array([r[i] for r in rows], pa.string()) for i, name in enumerate(header)}
    return datasets.Dataset(pa.table(table))


def _delimited_rows(reader, header: list[str] | None, path: Path):
    """Yield the data rows of a csv reader, checking each against the header."""
    if not header:
        raise DataError(f"{path} is empty; expected a header row naming the columns")
    if len(set(header)) != len(header):
        raise DataError(f"{path} has duplicate column names in its header: {header}")
    for row in reader:
        if row and len(row) != len(header):
            raise DataError(
                f"{path} line {reader.line_num}: {len(row)} fields, expected {len(header)} "
                f"as in the header ({', '.join(header)})"
            )
        yield row
