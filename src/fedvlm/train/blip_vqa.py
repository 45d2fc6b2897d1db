"""Inputs and predictions for BLIP VQA (``BlipForQuestionAnswering``), as FedUMM trains it:
the image and question go through the vision model and text encoder, and the answer is
produced by the text decoder."""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedvlm.train.collate import IGNORE_INDEX, rgb, to_device


@dataclass
class BlipVQATask:
    processor: object

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def encode(self, rows: Mapping) -> dict:
        return dict(
            self.processor(images=rgb(rows["image"]), text=list(rows["question"]), padding=True, return_tensors="pt")
        )

    def training_batch(self, rows: Mapping) -> dict:
        """The decoder reads ``[DEC] answer [SEP]`` (the tokenizer's bos in place of
        ``[CLS]``); the loss, on the next token, skips padding. BLIP would use ``labels`` as
        decoder inputs if none were given, so both are passed."""
        tok = self.tokenizer
        answers = tok(list(rows["answer"]), padding=True, padding_side="right", return_tensors="pt")
        ids = answers["input_ids"].clone()
        ids[:, 0] = tok.bos_token_id
        labels = ids.masked_fill(answers["attention_mask"] == 0, IGNORE_INDEX)
        return {
            **self.encode(rows),
            "decoder_input_ids": ids,
            "decoder_attention_mask": answers["attention_mask"],
            "labels": labels,
        }

    def prediction_batch(self, rows: Mapping, max_new_tokens: int) -> dict:
        return self.encode(rows)

    def predict(self, model, rows: Mapping, max_new_tokens: int) -> list[str]:
        return self.predict_batch(model, self.prediction_batch(rows, max_new_tokens), max_new_tokens)

    @torch.no_grad()
    def predict_batch(self, model, batch: dict, max_new_tokens: int) -> list[str]:
        # BLIP's generate sets its own pad and eos ids (passing them is an error)
        out = model.generate(**to_device(batch, model.device), max_new_tokens=max_new_tokens, use_cache=True)
        return [a.strip() for a in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
