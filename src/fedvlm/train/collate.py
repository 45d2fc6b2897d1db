"""Inputs for generative models: a prompt (with an image, for VLMs), answer-only labels.

One path serves every image-text family: the model's chat template with an image part, or
plain prompt formats (PaliGemma's ``answer en ...``, Fuyu's ``question\\n``). Every extra
input the processor returns is carried through; those with one value per token (Gemma3's
``token_type_ids``, Mllama's 4-D ``cross_attention_mask``, Fuyu's
``image_patches_indices``) are extended over the appended answer tokens with the value of
the prompt's last token (text that sees what the prompt's end sees), unless the family names
another (PaliGemma's answer is its suffix, ``token_type_ids`` 1).

Rows with ``messages`` (conversations with images in any turn, `fedvlm.data.image_chat`)
go through the processor whole, with labels on every assistant turn
(`GenerativeTask._conversation_batch`); rows without images (a text-only task beside
image tasks) are passed without any.
"""

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from fedvlm.data.image_chat import IMAGE, parts
from fedvlm.errors import DataError, ModelError
from fedvlm.train.chat import assistant_spans, span_labels

IGNORE_INDEX = -100
TEXT_PROMPT = "{question}\nAnswer:"  # causal LMs without a chat template


def to_device(batch: Mapping, device, dtype: torch.dtype | None = None) -> dict:
    """``batch`` with its tensors on ``device`` (the model's: a GPU where there is one) and
    its floating-point inputs (pixel values) in ``dtype``, the model's: some image
    processors hand out bfloat16 pixels, which a float32 model cannot multiply. Copies
    to a GPU do not block the host (batches come pinned, `fedvlm.train.prefetch`); the
    cast happens on the device."""

    def move(v):
        if not torch.is_tensor(v):
            return v
        v = v.to(device, non_blocking=True)
        if dtype is not None and v.is_floating_point() and v.dtype != dtype:
            v = v.to(dtype)
        return v

    return {k: move(v) for k, v in batch.items()}


def rgb(images: Sequence) -> list:
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


def questions_of(rows: Mapping) -> list[str]:
    """The prompt text of each row: a VQA question, or a text (and its pair)."""
    if "question" in rows:
        return list(rows["question"])
    pairs = rows.get("text_pair") or [None] * len(rows["text"])
    return [t if p is None else f"{t}\n{p}" for t, p in zip(rows["text"], pairs)]


def align_labels(ids: Sequence[int], labels: Sequence[int], expanded: Sequence[int]) -> list[int]:
    """``labels`` of token sequence ``ids`` carried onto ``expanded``, the same text as the
    processor tokenized it (each image mark grown into the image's tokens, perhaps a
    leading ``bos``): tokens the two share, matched in order, keep their label; the rest
    are ``IGNORE_INDEX``. Every labelled token must be matched, or the processor changed
    the text itself and no label can be trusted."""
    out = [IGNORE_INDEX] * len(expanded)
    for a, b, n in difflib.SequenceMatcher(None, ids, expanded, autojunk=False).get_matching_blocks():
        out[b:b + n] = labels[a:a + n]
    if [x for x in out if x != IGNORE_INDEX] != [x for x in labels if x != IGNORE_INDEX]:
        raise ModelError("the processor's token ids do not contain the rendered conversation's assistant tokens in order")
    return out


def _per_token(key: str, value, ids: torch.Tensor) -> bool:
    """Whether a processor output holds one value (or one array) per prompt token."""
    if not torch.is_tensor(value) or value.dim() < 2 or tuple(value.shape[:2]) != tuple(ids.shape):
        return False
    return not key.startswith("pixel") and not key.endswith(("_grid_thw", "_sizes"))


@dataclass
class GenerativeTask:
    """Image + prompt -> answer tokens, trained with the loss on the answer and ``eos`` only
    (text-only models: `fedvlm.train.text_generation`)."""

    processor: object
    prompt: str | None = None  # plain format; None: the model's chat template
    token_fill: dict[str, int] = field(default_factory=dict)
    nest_images: bool | None = False  # None: nested if the processor refuses a flat list
    max_length: int | None = None  # tokens per training example (image tokens included)
    _template_checked: bool = field(default=False, init=False, repr=False)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def prompts(self, questions: Sequence[str]) -> list[str]:
        if self.prompt is not None:
            return [self.prompt.format(question=q) for q in questions]
        self._require_template()
        if not self._template_checked:
            self._check_template(questions[0])
        return [self._render([self._turn("user", q)], generation_prompt=True) for q in questions]

    def _require_template(self) -> None:
        if getattr(self.processor, "chat_template", None) is None:
            raise ModelError(
                f"{type(self.processor).__name__} has no chat template: give the model directory a "
                "chat_template.jinja (the hub checkpoint's), or name a family with a plain prompt"
            )

    def _turn(self, role: str, text: str) -> dict:
        parts = [{"type": "text", "text": text}]
        return {"role": role, "content": [{"type": "image"}, *parts] if role == "user" else parts}

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    def _check_template(self, question: str) -> None:
        """The answer is trained right after the generation prompt: the template must render
        an answer turn as that prompt followed by the answer, or the labels would not be
        what the model is asked to generate."""
        prompt = self._render([self._turn("user", question)], generation_prompt=True)
        full = self._render([self._turn("user", question), self._turn("assistant", "ANSWER")], generation_prompt=False)
        if not full.startswith(prompt) or not full[len(prompt):].lstrip().startswith("ANSWER"):
            raise ModelError(
                f"the chat template of {type(self.processor).__name__} does not render an answer as its generation "
                f"prompt followed by the answer (prompt ends {prompt[-30:]!r}, answer turn {full[-60:]!r})"
            )
        self._template_checked = True

    def _encode(self, text: list[str], images: list[list], padding_side: str) -> dict:
        """The processor's inputs for ``text`` with each row's ``images``."""

        def encode(nested: bool):
            flat = [im for row in images for im in row]
            return self.processor(
                images=None if not flat else images if nested else flat,  # text-only rows: no images at all
                text=text,
                return_tensors="pt",
                padding=True,
                padding_side=padding_side,
            )

        if self.nest_images is None:  # learn once which form this processor takes
            try:
                enc = encode(False)
                self.nest_images = False
                return enc
            except (ValueError, TypeError, IndexError):
                self.nest_images = True
        return encode(self.nest_images)

    def _encode_prompts(self, rows: Mapping, padding_side: str) -> dict:
        if "messages" in rows:
            turns = [list(m)[:-1] for m in rows["messages"]]
            shown = [sum(t["content"].count(IMAGE) for t in m) for m in turns]
            images = [rgb(row[:n]) for row, n in zip(rows["images"], shown)]
            return self._encode([self._render_turns(m, True) for m in turns], images, padding_side)
        return self._encode(self.prompts(questions_of(rows)), [[im] for im in rgb(rows["image"])], padding_side)

    def _answer_ids(self, answers: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(answers), add_special_tokens=False)["input_ids"]

    def training_batch(self, rows: Mapping) -> dict:
        """``prompt + answer + eos`` per row, right-padded; labels -100 except on the answer
        and ``eos``, so the model learns to answer rather than to echo prompts.

        The prompt's real tokens are read through the attention mask, so processors that
        pad on the left (Fuyu's always does) work too."""
        return self._batch(rows, self.max_length)

    def _batch(self, rows: Mapping, limit: int | None) -> dict:
        if "messages" in rows:
            return self._conversation_batch(rows, limit)
        tok = self.tokenizer
        enc = self._encode_prompts(rows, "right")
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        answers = [a + [tok.eos_token_id] for a in self._answer_ids(rows["answer"])]
        prompt_lens = mask.sum(dim=1).tolist()
        width = max(n + len(a) for n, a in zip(prompt_lens, answers))
        self._check_fits(width, limit)
        per_token = [k for k, v in enc.items() if _per_token(k, v, ids)]
        out = {k: v for k, v in enc.items() if k not in per_token}
        for key in per_token:
            fill = {"input_ids": tok.pad_token_id, "attention_mask": 0}.get(key, self.token_fill.get(key, 0))
            out[key] = torch.full((len(answers), width, *enc[key].shape[2:]), fill, dtype=enc[key].dtype)
        labels = torch.full((len(answers), width), IGNORE_INDEX, dtype=torch.long)
        for i, (n, answer) in enumerate(zip(prompt_lens, answers)):
            end = n + len(answer)
            for key in per_token:
                prompt = enc[key][i][mask[i]]
                out[key][i, :n] = prompt
                if key not in ("input_ids", "attention_mask") and key not in self.token_fill:
                    out[key][i, n:] = prompt[-1]  # answer and padding continue the prompt's end
            out["input_ids"][i, n:end] = torch.tensor(answer)
            out["attention_mask"][i, n:end] = 1
            labels[i, n:end] = torch.tensor(answer)
        out["labels"] = labels
        return out

    def _render_turns(self, turns: Sequence[dict], generation_prompt: bool) -> str:
        """Turns whose content marks images with `IMAGE`, rendered by the chat template."""
        if self.prompt is not None:
            raise ModelError(
                f"{type(self.processor).__name__} takes a plain prompt, not a chat template: conversation "
                "data needs a family with a chat template"
            )
        self._require_template()
        messages = [{"role": t["role"], "content": parts(t["content"])} for t in turns]
        return self._render(messages, generation_prompt)

    @staticmethod
    def _check_fits(width: int, limit: int | None) -> None:
        if limit is not None and width > limit:
            # rows that do not fit are dropped when the data loads (`fits`); the image
            # tokens cannot be cut without breaking the model's image features
            raise DataError(
                f"data.max_length={limit}: an example of {width} tokens (images, text and answer) "
                "does not fit; raise data.max_length"
            )

    def _conversation_batch(self, rows: Mapping, limit: int | None) -> dict:
        """Whole conversations through the processor (which expands each image into its
        tokens), with labels on every assistant turn. The assistant spans come from the
        template (`fedvlm.train.chat.assistant_spans`) and label the tokenizer's reading of
        the rendered text; those labels are carried onto the processor's expanded ids by
        matching the two id sequences (`align_labels`), which differ only where images
        expanded."""
        tok = self.tokenizer
        texts, unexpanded = [], []
        for m in rows["messages"]:
            text, spans = assistant_spans(self._render_turns, list(m), f"{type(self.processor).__name__} chat template")
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            texts.append(text)
            unexpanded.append((enc["input_ids"], span_labels(enc["input_ids"], enc["offset_mapping"], spans)))
        out = dict(self._encode(texts, [rgb(r) for r in rows["images"]], "right"))
        mask = out["attention_mask"].bool()
        self._check_fits(int(mask.sum(dim=1).max()), limit)
        labels = torch.full(out["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for i, (ids, row_labels) in enumerate(unexpanded):
            real = mask[i].nonzero().squeeze(1)
            labels[i, real] = torch.tensor(align_labels(ids, row_labels, out["input_ids"][i, real].tolist()))
        out["labels"] = labels
        return out

    def lengths(self, rows: Mapping) -> list[int]:
        """Tokens each row's training example takes (images expanded)."""
        return self._batch(rows, None)["attention_mask"].sum(dim=1).tolist()

    def fits(self, rows: Mapping) -> list[bool]:
        """Whether each row fits in ``max_length`` tokens (else it is dropped when the data
        loads, in training and evaluation alike: images cannot be cut)."""
        if self.max_length is None:
            return [True] * len(rows["answer"])
        return [n <= self.max_length for n in self.lengths(rows)]

    def generation_batch(self, rows: Mapping) -> dict:
        """Left-padded prompts for batched greedy generation."""
        return dict(self._encode_prompts(rows, "left"))

    def prediction_batch(self, rows: Mapping, max_new_tokens: int) -> dict:
        return self.generation_batch(rows)

    def predict(self, model, rows: Mapping, max_new_tokens: int) -> list[str]:
        return self.predict_batch(model, self.prediction_batch(rows, max_new_tokens), max_new_tokens)

    @torch.no_grad()
    def predict_batch(self, model, batch: dict, max_new_tokens: int) -> list[str]:
        batch = to_device(batch, model.device, model.dtype)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=self.tokenizer.pad_token_id
        )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return [a.strip() for a in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
