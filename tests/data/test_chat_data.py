"""Instruction and conversation files load as turns: alpaca (its input kept), messages,
ShareGPT conversations; a malformed conversation is one line naming the row."""

import json

import pytest

from fedvlm.data.text import load_text
from fedvlm.errors import DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_alpaca_rows_keep_their_input_after_the_instruction(tmp_path):
    source = _jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Name a colour.", "input": "", "output": "red"},
    ])
    ds = load_text(source, "train")
    assert ds[0]["messages"] == [
        {"role": "user", "content": "Translate to French.\n\ncat"},
        {"role": "assistant", "content": "chat"},
    ]
    assert ds[1]["messages"][0]["content"] == "Name a colour."  # no input: no blank line
    assert ds["text"] == ["Translate to French.\n\ncat", "Name a colour."] and ds["answer"] == ["chat", "red"]


def test_alpaca_columns_can_be_mapped(tmp_path):
    source = _jsonl(tmp_path / "a.jsonl", [{"prompt": "Say hi.", "ctx": "politely", "response": "Hello."}])
    ds = load_text(source, "train", {"instruction": "prompt", "input": "ctx", "output": "response"})
    assert ds[0]["messages"][0]["content"] == "Say hi.\n\npolitely" and ds[0]["answer"] == "Hello."


def test_messages_and_sharegpt_conversations_load_as_the_same_turns(tmp_path):
    turns = [("system", "Be brief."), ("user", "hi"), ("assistant", "hello"), ("user", "bye?"), ("assistant", "bye")]
    messages = _jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": r, "content": c} for r, c in turns]}])
    sharegpt_roles = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = _jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": sharegpt_roles[r], "value": c} for r, c in turns]}])
    a, b = load_text(messages, "train"), load_text(sharegpt, "train")
    assert a[0]["messages"] == b[0]["messages"] == [{"role": r, "content": c} for r, c in turns]
    assert a[0]["text"] == "bye?" and a[0]["answer"] == "bye"


@pytest.mark.parametrize("turns, expected", [
    ([{"role": "user", "content": "hi"}], "end with the assistant"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "alternate"),
    ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "c"}], "unknown role 'robot'"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}], "system -> assistant"),
])
def test_a_malformed_conversation_is_one_line_naming_the_row(tmp_path, turns, expected):
    source = _jsonl(tmp_path / "bad.jsonl", [
        {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}]},
        {"messages": turns},
    ])
    with pytest.raises(DataError) as err:
        load_text(source, "train")
    message = str(err.value)
    assert "\n" not in message and "row 1" in message and "bad.jsonl" in message
    assert expected in message
