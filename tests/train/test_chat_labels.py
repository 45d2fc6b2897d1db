"""The loss is on every assistant turn of a conversation and nowhere else: the label mask
of a 3-exchange conversation (system, user, assistant, user, assistant) against one built by
hand from the template's pieces, on two different tokenizers and templates."""

import pytest
from families.tiny_text import _byte_level_bpe, _wrap, minilm_dir
from transformers import AutoTokenizer

from fedvlm.errors import ModelError
from fedvlm.train.chat import (
    ALPACA_SYSTEM,
    IGNORE_INDEX,
    conversation_ids,
    prompt_ids,
    resolve_template,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello there"},
    {"role": "user", "content": "and you?"},
    {"role": "assistant", "content": "fine"},
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bpe_chatml():
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tok = _wrap(_byte_level_bpe(specials, unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    tok.chat_template = CHATML
    return tok


def _wordpiece():
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    tok.eos_token = "[SEP]"  # the alpaca template closes each response with eos
    return tok


def _hand_built(tok, pieces):
    """Ids and labels from (text, trained) pieces, each tokenized on its own: the pieces
    meet at special tokens or line breaks, where tokenization splits anyway."""
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return ids, labels


@pytest.mark.parametrize("name", ["bpe-chatml", "wordpiece-alpaca"])
def test_assistant_turns_and_only_they_are_labelled(name):
    if name == "bpe-chatml":
        tok, template = _bpe_chatml(), "chat"
        pieces = [
            ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", False),
            ("hello there<|im_end|>", True),
            ("\n<|im_start|>user\nand you?<|im_end|>\n<|im_start|>assistant\n", False),
            ("fine<|im_end|>", True),
            ("\n", False),
        ]
    else:
        tok, template = _wordpiece(), "alpaca"
        pieces = [
            ("Be brief.\n\n### Instruction:\nhi\n\n### Response:\n", False),
            ("hello there[SEP]", True),
            ("\n\n### Instruction:\nand you?\n\n### Response:\n", False),
            ("fine[SEP]", True),
        ]
    ids, labels = conversation_ids(tok, CONVERSATION, template)
    assert (ids, labels) == _hand_built(tok, pieces)
    trained = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert "hello" in trained and "fine" in trained and "brief" not in trained and "you" not in trained


def test_generation_prompt_is_the_conversation_before_its_last_answer():
    tok = _bpe_chatml()
    expected = tok(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        "hello there<|im_end|>\n<|im_start|>user\nand you?<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )["input_ids"]
    assert prompt_ids(tok, CONVERSATION, "chat") == expected


def test_alpaca_template_uses_the_alpaca_preamble_when_there_is_no_system_turn():
    tok = _wordpiece()
    ids, _ = conversation_ids(tok, CONVERSATION[1:3], "alpaca")
    text = tok.decode(ids)
    assert text.startswith(tok.decode(tok(ALPACA_SYSTEM, add_special_tokens=False)["input_ids"]))


def test_a_template_that_rewrites_earlier_turns_is_refused():
    tok = _bpe_chatml()
    # renders only the last two turns: earlier prefixes are not prefixes of the whole
    tok.chat_template = "{% for m in messages[-2:] %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ModelError, match="prefix") as err:
        conversation_ids(tok, CONVERSATION, "chat")
    assert "\n" not in str(err.value)


def test_template_resolution():
    with_own, without = _bpe_chatml(), _wordpiece()
    assert resolve_template("auto", with_own, conversations=True) == "chat"
    assert resolve_template("auto", without, conversations=True) == "alpaca"
    assert resolve_template("auto", without, conversations=False) == "plain"
    with pytest.raises(ModelError, match="no chat template"):
        resolve_template("chat", without, conversations=False)
    with pytest.raises(ModelError, match="plain"):
        resolve_template("plain", with_own, conversations=True)
