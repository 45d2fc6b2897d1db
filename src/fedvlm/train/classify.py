"""Inputs and predictions for sequence classifiers (RoBERTa/BERT with a head)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedvlm.train.collate import to_device


@dataclass
class ClassifyTask:
    """Text (or a text pair) -> one of ``label_names``; cross-entropy on the head's logits."""

    tokenizer: object
    label_names: Sequence[str]
    max_length: int = 128

    def encode(self, rows: Mapping) -> dict:
        pairs = rows.get("text_pair")
        return dict(
            self.tokenizer(
                list(rows["text"]),
                list(pairs) if pairs is not None else None,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
        )

    def training_batch(self, rows: Mapping) -> dict:
        return {**self.encode(rows), "labels": torch.tensor(rows["label"], dtype=torch.long)}

    def prediction_batch(self, rows: Mapping, max_new_tokens: int = 0) -> dict:
        return self.encode(rows)

    def predict(self, model, rows: Mapping, max_new_tokens: int = 0) -> list[str]:
        return self.predict_batch(model, self.encode(rows))

    @torch.no_grad()
    def predict_batch(self, model, batch: dict, max_new_tokens: int = 0) -> list[str]:
        logits = model(**to_device(batch, model.device)).logits
        return [self.label_names[i] for i in logits.argmax(dim=-1).tolist()]
