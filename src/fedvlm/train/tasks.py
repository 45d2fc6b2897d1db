"""The task a family trains on: turn dataset rows into a batch, and a model into answers.

Every task has ``training_batch(rows) -> dict`` (model inputs with ``labels``) and
``predict(model, rows, max_new_tokens) -> list[str]``, which is ``predict_batch`` of
``prediction_batch`` (the prompts alone, apart from the model's call); answers are scored as strings against the dataset's ``answer`` column, so one
evaluation serves every family.
"""

from collections.abc import Mapping
from typing import Protocol

from fedvlm.models.families import Family
from fedvlm.train.blip_vqa import BlipVQATask
from fedvlm.train.classify import ClassifyTask
from fedvlm.train.chat import resolve_template
from fedvlm.train.collate import GenerativeTask
from fedvlm.train.text_generation import TextGenerationTask


class Task(Protocol):
    def training_batch(self, rows: Mapping) -> dict: ...

    def predict(self, model, rows: Mapping, max_new_tokens: int) -> list[str]: ...

    def prediction_batch(self, rows: Mapping, max_new_tokens: int) -> dict: ...

    def predict_batch(self, model, batch: dict, max_new_tokens: int) -> list[str]: ...


CLASSIFIER_MAX_LENGTH = 128  # data.max_length=null for a classifier


def build_task(
    family: Family,
    processor,
    label_names=None,
    max_length: int | None = None,
    template: str = "auto",
    system: str | None = None,
    conversations: bool = False,
) -> Task:
    """The task of ``family``; text-only generation renders rows by ``template``
    (`fedvlm.train.chat.resolve_template`; ``conversations``: the data has turns)."""
    if family.task == "classify":
        return ClassifyTask(processor, list(label_names), max_length or CLASSIFIER_MAX_LENGTH)
    if family.task == "blip_vqa":
        return BlipVQATask(processor)
    if not family.images:
        resolved = resolve_template(template, processor, conversations)
        return TextGenerationTask(processor, resolved, max_length, system)
    return GenerativeTask(processor, family.prompt, dict(family.token_fill), family.nest_images, max_length=max_length)
