"""Conversations as token ids with the loss on the assistant turns only.

A conversation is rendered by a template: the model's own chat template, or the alpaca
template below for models without one. Which tokens belong to an assistant turn is read
from the template itself: for every assistant turn j, the conversation up to j rendered with
the generation prompt ends where the turn's text starts, and the conversation through j
ends where it stops (its end-of-turn token included, trailing whitespace not). The template
must render each such prefix as a prefix of the whole conversation; one that does not (a
template that rewrites earlier turns) is refused, since no mask could be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedvlm.errors import ModelError

IGNORE_INDEX = -100

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
# The Stanford Alpaca prompt (https://github.com/tatsu-lab/stanford_alpaca), one
# "### Instruction / ### Response" pair per exchange; the response ends with eos.
ALPACA_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}" + ALPACA_SYSTEM + "{% endif %}\n\n"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n### Response:\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
)
TEMPLATES = ("auto", "chat", "alpaca", "plain")


def resolve_template(name: str, tokenizer, conversations: bool) -> str:
    """``data.template``: ``chat`` (the model's own), ``alpaca``, ``plain`` (fedvlm's
    ``{question}\\nAnswer: {answer}`` for single-turn data), or ``auto``: the model's own
    where it has one, else alpaca for instruction and conversation data, plain otherwise."""
    has_own = getattr(tokenizer, "chat_template", None) is not None
    if name == "auto":
        return "chat" if has_own else ("alpaca" if conversations else "plain")
    if name == "chat" and not has_own:
        raise ModelError(
            f"data.template=chat: {type(tokenizer).__name__} has no chat template (use data.template=alpaca)"
        )
    if name == "plain" and conversations:
        raise ModelError("data.template=plain cannot hold a conversation (use chat or alpaca)")
    return name


def render(tokenizer, messages: Sequence[dict], template: str, generation_prompt: bool) -> str:
    chat_template = ALPACA_TEMPLATE if template == "alpaca" else None
    return tokenizer.apply_chat_template(
        list(messages), chat_template=chat_template, add_generation_prompt=generation_prompt, tokenize=False
    )


def assistant_spans(render_fn, messages: Sequence[dict], what: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns;
    ``render_fn(messages, generation_prompt)`` renders by a template (``what``, for errors)."""
    full = render_fn(messages, False)
    spans = []
    for j, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = render_fn(messages[:j], True)
        through = render_fn(messages[: j + 1], False).rstrip()
        if not (through.startswith(before) and full.startswith(through)):
            raise ModelError(
                f"{what}: the template does not render turn {j} of a conversation as a "
                "prefix of the whole conversation, so its assistant tokens cannot be told apart"
            )
        spans.append((len(before), len(through)))
    return full, spans


def span_labels(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """``ids`` where a token has any character in one of ``spans``, ``IGNORE_INDEX``
    elsewhere: where a template's generation prompt ends in a space that the tokenizer
    joins to the answer's first word, that word is still learned."""
    return [
        i if e > s and any(s < end and e > start for start, end in spans) else IGNORE_INDEX
        for i, (s, e) in zip(ids, offsets)
    ]


def conversation_ids(tokenizer, messages: Sequence[dict], template: str) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and labels that are the ids on assistant
    turns and ``IGNORE_INDEX`` elsewhere (`span_labels`)."""
    text, spans = assistant_spans(
        lambda m, g: render(tokenizer, m, template, g), messages, f"data.template={template}"
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], span_labels(enc["input_ids"], enc["offset_mapping"], spans)


def prompt_ids(tokenizer, messages: Sequence[dict], template: str) -> list[int]:
    """Token ids of the conversation before its last (assistant) turn, with the generation
    prompt: what the model is given to generate that turn."""
    text = render(tokenizer, messages[:-1], template, generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
