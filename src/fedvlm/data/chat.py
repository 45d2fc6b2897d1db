"""Instruction and conversation data as one list of turns per row.

The formats federated instruction tuning uses (OpenFedLLM, FlowerTune):

- **alpaca**: ``instruction``, an optional ``input`` (the context the instruction is about)
  and ``output`` (Taori et al. 2023, https://github.com/tatsu-lab/stanford_alpaca); the
  user turn is the instruction, then a blank line and the input where there is one;
- **messages**: a list of ``{"role", "content"}`` turns (the Hugging Face chat format),
  ``system`` first where there is one;
- **conversations**: ShareGPT's list of ``{"from", "value"}`` turns (``human``/``gpt``/
  ``system``).

Every row becomes ``messages`` (the turns, roles ``system``/``user``/``assistant``),
``text`` (the last user turn: what evaluation asks), ``answer`` (the last assistant turn:
what evaluation scores) and ``question_type``. A conversation must alternate user and
assistant after an optional system turn and end with the assistant.
"""

from __future__ import annotations

import datasets

from fedvlm.errors import DataError

CHAT_COLUMNS = ("messages", "conversations", "instruction", "input", "output")
FORMAT_COLUMNS = {"messages": ("messages",), "conversations": ("conversations",), "alpaca": ("instruction", "output")}
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "chatgpt": "assistant", "bard": "assistant", "bing": "assistant"}


def chat_format(available: list[str], columns: dict[str, str]) -> str | None:
    """The chat format of a dataset with columns ``available`` (``data.columns`` may map
    ``messages``, ``conversations``, ``instruction``, ``input`` and ``output`` to its own
    names), or None for question/answer and classification data."""
    for fmt, needed in FORMAT_COLUMNS.items():
        if all(columns.get(n, n) in available for n in needed):
            return fmt
    return None


def alpaca_turns(instruction: str, context: str | None, output: str) -> list[dict]:
    """One alpaca row as a user turn (instruction, then the input after a blank line) and
    the assistant's output."""
    user = instruction if not context else f"{instruction}\n\n{context}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def normalize_turns(turns, where: str, system: str | None = None) -> list[dict]:
    """``turns`` (``role``/``content`` or ShareGPT ``from``/``value``) as checked
    ``{"role", "content"}`` turns, with ``system`` first where the row has no system turn."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: expected a non-empty list of turns, got {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}, turn {i}: expected a dict with role and content")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in _ROLES:
            raise DataError(f"{where}, turn {i}: unknown role {role!r} (expected one of {', '.join(_ROLES)})")
        if not isinstance(content, str):
            raise DataError(f"{where}, turn {i}: content must be text, got {type(content).__name__}")
        out.append({"role": _ROLES[role], "content": content})
    if system and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": system})
    body = out[1:] if out[0]["role"] == "system" else out
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if not body or [t["role"] for t in body] != expected[: len(body)] or body[-1]["role"] != "assistant":
        roles = " -> ".join(t["role"] for t in out)
        raise DataError(
            f"{where}: turns must alternate user and assistant after an optional system turn and end "
            f"with the assistant (got {roles})"
        )
    return out


def to_canonical_chat(
    dataset: datasets.Dataset, fmt: str, columns: dict[str, str], origin: str, system: str | None = None
) -> datasets.Dataset:
    """``dataset`` in format ``fmt`` as columns messages, text, answer, question_type."""
    col = {name: columns.get(name, name) for name in ("messages", "conversations", "instruction", "input", "output")}
    qtype = columns.get("question_type", "question_type")
    rows = {"messages": [], "text": [], "answer": [], "question_type": []}
    has_input = col["input"] in dataset.column_names
    has_qtype = qtype in dataset.column_names
    for i, row in enumerate(dataset):
        where = f"{origin}, row {i}"
        if fmt == "alpaca":
            values = [row[col["instruction"]], row[col["input"]] if has_input else None, row[col["output"]]]
            if not isinstance(values[0], str) or not isinstance(values[2], str):
                raise DataError(f"{where}: alpaca rows need text in {col['instruction']!r} and {col['output']!r}")
            turns = normalize_turns(alpaca_turns(*values), where, system)
        else:
            turns = normalize_turns(row[col[fmt]], where, system)
        rows["messages"].append(turns)
        rows["text"].append(turns[-2]["content"])
        rows["answer"].append(turns[-1]["content"])
        rows["question_type"].append(str(row[qtype]) if has_qtype else "all")
    if not rows["messages"]:
        raise DataError(f"{origin} has no rows; expected at least one conversation")
    turn = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    features = datasets.Features({
        "messages": datasets.List(turn), "text": datasets.Value("string"),
        "answer": datasets.Value("string"), "question_type": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(rows, features=features)
