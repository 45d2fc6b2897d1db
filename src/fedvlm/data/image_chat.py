"""Conversations with images, in any turn, as one canonical schema.

The multimodal instruction formats VLM fine-tuning uses:

- **messages**: Hugging Face chat turns ``{"role", "content"}`` whose content is text or a
  list of parts (``{"type": "image"}``, ``{"type": "text", "text": ...}``), with the row's
  images in an ``images`` list (or one ``image``);
- **conversations**: LLaVA / ShareGPT turns ``{"from", "value"}`` with ``<image>`` where
  an image goes, and the row's ``image`` (LLaVA-Instruct) or ``images``;
- **the_cauldron** (HuggingFaceM4/the_cauldron): ``images`` and ``texts``, a list of
  ``{"user", "assistant"}`` exchanges; the images precede the first question.

Every row becomes ``images`` (a list of RGB images), ``messages`` (role/content turns whose
content marks each image with `IMAGE`, in order; a row whose text names no place puts
its images at the start of the first user turn), ``question`` (the last user turn without
image marks: what evaluation asks), ``answer`` (the last assistant turn: what it scores)
and ``question_type``. Image entries are paths (relative ones joined to the image
directory), bytes or ``{"bytes", "path"}``; every file is checked when the data loads.
"""

from __future__ import annotations

import json
import os

import datasets

from fedvlm.data.chat import normalize_turns
from fedvlm.data.files import check_image
from fedvlm.errors import DataError

IMAGE = "<image>"
IMAGE_CHAT_COLUMNS = ("messages", "conversations", "texts", "images", "image", "question_type")
_TURN = {"role": datasets.Value("string"), "content": datasets.Value("string")}
FEATURES = datasets.Features({  # the canonical schema (module doc)
    "images": datasets.List(datasets.Image(mode="RGB")), "messages": datasets.List(_TURN),
    "question": datasets.Value("string"), "answer": datasets.Value("string"),
    "question_type": datasets.Value("string"),
})
# (turns column, how its turns are written); a row's images come from `images` or `image`
FORMATS = {"messages": "messages", "conversations": "conversations", "texts": "cauldron"}


def image_chat_format(available: list[str], columns: dict[str, str]) -> str | None:
    """The turns column of a multimodal conversation dataset (``messages``,
    ``conversations`` or ``texts`` after ``data.columns``), or None for VQA data."""
    for name in FORMATS:
        if columns.get(name, name) in available:
            return name
    return None


def parts(content: str) -> list[dict]:
    """``content`` with `IMAGE` marks as chat-template parts: images and stripped text."""
    out = []
    for i, piece in enumerate(content.split(IMAGE)):
        if i:
            out.append({"type": "image"})
        if piece.strip():
            out.append({"type": "text", "text": piece.strip()})
    return out


def _content_text(content, where: str) -> str:
    """A turn's content as text with `IMAGE` marks (a parts list is joined in order)."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}: content must be text or a list of parts, got {type(content).__name__}")
    pieces = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            pieces.append(IMAGE)
        elif kind == "text" and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            raise DataError(f"{where}: expected parts {{'type': 'image'}} or {{'type': 'text', 'text': ...}}, got {part!r}")
    return "\n".join(pieces)


def _turns(row_turns, fmt: str, where: str) -> list[dict]:
    if isinstance(row_turns, str):  # a JSONL field arrow could not type is kept as JSON text
        row_turns = json.loads(row_turns)
    if fmt == "cauldron":
        if not isinstance(row_turns, list) or not all(isinstance(t, dict) for t in row_turns):
            raise DataError(f"{where}: expected a list of {{'user', 'assistant'}} exchanges")
        return [
            {"role": role, "content": t.get(role)} for t in row_turns for role in ("user", "assistant")
        ]
    if not isinstance(row_turns, list):
        raise DataError(f"{where}: expected a non-empty list of turns, got {type(row_turns).__name__}")
    out = []
    for i, t in enumerate(row_turns):
        if isinstance(t, dict) and ("content" in t or "value" in t):
            key = "content" if "content" in t else "value"
            t = {**t, key: _content_text(t[key], f"{where}, turn {i}")}
        out.append(t)
    return out


def _place_images(turns: list[dict], count: int, where: str) -> list[dict]:
    """Turns whose `IMAGE` marks number ``count``: unmarked images go first in the first
    user turn."""
    marks = sum(t["content"].count(IMAGE) for t in turns)
    if marks == count:
        return turns
    if marks == 0:
        first = next(i for i, t in enumerate(turns) if t["role"] == "user")
        turns = [dict(t) for t in turns]
        turns[first]["content"] = IMAGE * count + "\n" + turns[first]["content"]
        return turns
    raise DataError(f"{where}: the text marks {marks} images ({IMAGE}) but the row has {count}")


def _image_entries(value, where: str) -> list:
    """A row's images as a list of (path or None, bytes or None)."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append((item, None))
        elif isinstance(item, (bytes, bytearray)):
            out.append((None, bytes(item)))
        elif isinstance(item, dict) and ({"bytes", "path"} & set(item)):
            out.append((item.get("path"), item.get("bytes")))
        else:
            raise DataError(f"{where}: an image must be a file path, bytes or {{'bytes', 'path'}}, got {type(item).__name__}")
    return out


def to_canonical_image_chat(
    dataset: datasets.Dataset, fmt: str, columns: dict[str, str], image_dir: str | None, origin: str
) -> datasets.Dataset:
    """``dataset`` (turns in column ``fmt``, see `image_chat_format`) as columns images,
    messages, question, answer, question_type."""
    turns_col = columns.get(fmt, fmt)
    images_col = next(
        (columns.get(n, n) for n in ("images", "image") if columns.get(n, n) in dataset.column_names), None
    )
    qtype = columns.get("question_type", "question_type")
    has_qtype = qtype in dataset.column_names
    # undecoded: a Hub Image column gives {"bytes", "path"} dicts instead of PIL images
    raw = dataset
    if images_col:
        feature = dataset.features[images_col]
        if isinstance(feature, datasets.Image):
            raw = dataset.cast_column(images_col, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):  # a list of images
            raw = dataset.cast_column(images_col, datasets.Sequence(datasets.Image(decode=False)))
    rows = {"images": [], "messages": [], "question": [], "answer": [], "question_type": []}
    entries = []  # (row, path, bytes) of every image
    for r, row in enumerate(raw):
        where = f"{origin}, row {r}"
        turns = normalize_turns(_turns(row[turns_col], FORMATS[fmt], where), where)
        images = _image_entries(row[images_col], f"{where}, column {images_col!r}") if images_col else []
        turns = _place_images(turns, len(images), where)
        entries += [(r, p, b) for p, b in images]
        rows["messages"].append(turns)
        rows["question"].append(" ".join(t["text"] for t in parts(turns[-2]["content"]) if t["type"] == "text"))
        rows["answer"].append(turns[-1]["content"])
        rows["question_type"].append(str(row[qtype]) if has_qtype else "all")
        rows["images"].append(len(images))
    if not rows["messages"]:
        raise DataError(f"{origin} has no rows; expected at least one conversation")
    checked: set[str] = set()
    stored = []
    for r, path, blob in entries:
        where = f"row {r}, column {images_col!r} of {origin}"
        if blob is not None:
            check_image(blob, where)
            stored.append({"bytes": blob, "path": None})
            continue
        if path is None:
            raise DataError(f"{where}: an image entry holds neither bytes nor a file path")
        if image_dir is not None and not os.path.isabs(path):
            path = os.path.join(image_dir, path)
        if path not in checked:
            if not os.path.isfile(path):
                raise DataError(f"image file not found: {path} ({where})")
            check_image(path, where)
            checked.add(path)
        stored.append({"bytes": None, "path": path})
    stored = iter(stored)
    rows["images"] = [[next(stored) for _ in range(n)] for n in rows["images"]]
    return datasets.Dataset.from_dict(rows, features=FEATURES)
