"""Text-only causal LMs on instruction, conversation and question/answer data.

Each row becomes one token sequence: a conversation rendered by ``template``
(`fedvlm.train.chat`: the model's chat template or alpaca) with the loss on every assistant
turn, or for ``plain`` fedvlm's ``{question}\\nAnswer: {answer}<eos>`` with the loss on the
answer. ``max_length`` bounds every sequence the same way in training, evaluation and the
baselines: a sequence is cut from the left, so the prompt loses its start and the answer
stays whole; a row whose last answer alone does not fit is dropped when the data loads
(`fits`), and the log says how many were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedvlm.train.chat import IGNORE_INDEX, conversation_ids, prompt_ids
from fedvlm.train.collate import TEXT_PROMPT, questions_of, to_device


@dataclass
class TextGenerationTask:
    tokenizer: object
    template: str  # chat, alpaca or plain (`fedvlm.train.chat.resolve_template`)
    max_length: int | None  # None: sequences are not cut
    system: str | None = None  # a system turn for conversations that have none

    def conversations(self, rows: Mapping) -> list[list[dict]]:
        """Each row's turns: its ``messages``, or its question and answer as one exchange."""
        if "messages" in rows:
            turns = [list(m) for m in rows["messages"]]
        else:
            turns = [
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                for q, a in zip(questions_of(rows), rows["answer"])
            ]
        if self.system and self.template != "plain":
            turns = [t if t[0]["role"] == "system" else [{"role": "system", "content": self.system}, *t] for t in turns]
        return turns

    def _plain(self, turns: list[dict]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        prompt = tok(TEXT_PROMPT.format(question=turns[-2]["content"]))["input_ids"]
        answer = tok(" " + turns[-1]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer

    def sequence(self, turns: list[dict]) -> tuple[list[int], list[int]]:
        """Token ids and labels of one row, uncut."""
        if self.template == "plain":
            return self._plain(turns)
        return conversation_ids(self.tokenizer, turns, self.template)

    def prompt(self, turns: list[dict]) -> list[int]:
        """What the model is given to generate the last answer, uncut."""
        if self.template == "plain":
            return self.tokenizer(TEXT_PROMPT.format(question=turns[-2]["content"]))["input_ids"]
        return prompt_ids(self.tokenizer, turns, self.template)

    def answer_length(self, turns: list[dict]) -> int:
        """Tokens from the start of the last answer to the end of the sequence."""
        return max(0, len(self.sequence(turns)[0]) - len(self.prompt(turns)))

    def fits(self, rows: Mapping) -> list[bool]:
        """Whether each row's last answer fits in ``max_length`` tokens (else it is dropped)."""
        if self.max_length is None:
            return [True] * len(rows["answer"])
        return [self.answer_length(t) <= self.max_length for t in self.conversations(rows)]

    def training_batch(self, rows: Mapping) -> dict:
        """The rows' sequences cut from the left to ``max_length``, right-padded."""
        tok = self.tokenizer
        pairs = [self.sequence(t) for t in self.conversations(rows)]
        if self.max_length is not None:
            pairs = [(ids[-self.max_length:], labels[-self.max_length:]) for ids, labels in pairs]
        width = max(len(ids) for ids, _ in pairs)
        batch = {
            "input_ids": torch.full((len(pairs), width), tok.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(pairs), width), dtype=torch.long),
            "labels": torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long),
        }
        for i, (ids, labels) in enumerate(pairs):
            batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
            batch["attention_mask"][i, : len(ids)] = 1
            batch["labels"][i, : len(ids)] = torch.tensor(labels)
        return batch

    def generation_batch(self, rows: Mapping, max_new_tokens: int) -> dict:
        """Left-padded prompts, each cut from the left so that it and the generated tokens
        fit in ``max_length``."""
        prompts = [self.prompt(t) for t in self.conversations(rows)]
        if self.max_length is not None:
            keep = max(1, self.max_length - max_new_tokens)
            prompts = [p[-keep:] for p in prompts]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def prediction_batch(self, rows: Mapping, max_new_tokens: int) -> dict:
        return self.generation_batch(rows, max_new_tokens)

    def predict(self, model, rows: Mapping, max_new_tokens: int) -> list[str]:
        return self.predict_batch(model, self.prediction_batch(rows, max_new_tokens), max_new_tokens)

    @torch.no_grad()
    def predict_batch(self, model, batch: dict, max_new_tokens: int) -> list[str]:
        batch = to_device(batch, model.device)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=self.tokenizer.pad_token_id
        )
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [a.strip() for a in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    @torch.no_grad()
    def loss(self, model, rows: Mapping) -> tuple[float, int]:
        """Summed token loss on the rows' labelled (answer) tokens, and their number."""
        batch = to_device(self.training_batch(rows), model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        shifted, targets = logits[:, :-1].float(), batch["labels"][:, 1:]
        total = torch.nn.functional.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return total.item(), int((targets != IGNORE_INDEX).sum())
