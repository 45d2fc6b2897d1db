"""Use a saved adapter: evaluate it on a dataset (``fedvlm eval``) or answer one question
(``fedvlm predict``).

Any adapter fedvlm writes works: a run's ``adapters/final`` or ``adapters/round_NNNN``, a
client's ``adapters/personalized/<client>`` (FedALT's mixing included,
`fedvlm.algorithms.fedalt.export`) and what ``fedvlm merge`` writes. The base model is the
adapter's own (``base_model_name_or_path``) unless ``model.path`` is given. An adapter
inside a run directory is read with that run's config (its data, columns, template and
metrics), a CONFIG file and overrides on top; elsewhere with the default config.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fedvlm.config import Config, load_config
from fedvlm.errors import ConfigError, DataError
from fedvlm.models.adapter import read_adapter

RUN_CONFIG = "config.yaml"


def run_config_of(adapter: Path) -> Path | None:
    """The ``config.yaml`` of the run directory holding ``adapter`` (adapters/<name> or
    adapters/personalized/<client>), if there is one."""
    for parent in list(adapter.resolve().parents)[:3]:
        if parent.name == "adapters" and (parent.parent / RUN_CONFIG).is_file():
            return parent.parent / RUN_CONFIG
    return None


def adapter_config(adapter: Path, config: str | None, overrides: list[str]) -> Config:
    """The config to use ``adapter`` with (see the module doc). Checks the adapter first,
    so a wrong path is one line before anything loads."""
    peft_config, _ = read_adapter(adapter)
    run_config = run_config_of(adapter)
    base = config if config is not None else (str(run_config) if run_config else None)
    cfg = load_config(base, overrides)
    if not any(o.startswith("model.path=") for o in overrides):
        path = peft_config.get("base_model_name_or_path")
        if not path:
            raise DataError(f"adapter {adapter}: adapter_config.json names no base_model_name_or_path (give model.path=...)")
        cfg = replace(cfg, model=replace(cfg.model, path=path))
    return cfg


def load_adapter_model(cfg: Config, adapter: Path, labels: list[str] | None):
    """The base of ``cfg`` with ``adapter`` loaded by stock peft (and a FedALT client's
    mixing installed); the model in evaluation mode, its processor and its family."""
    from peft import PeftModel

    from fedvlm.models.load import load_base
    from fedvlm.algorithms.fedalt.export import load_personalized
    from fedvlm.models.precision import train_float32

    m = cfg.model
    base, processor, family = load_base(m.path, m.dtype, family=m.family, quantization=m.quantization,
                                        labels=labels, seed=cfg.run.seed, attn_implementation=m.attn_implementation)
    model = PeftModel.from_pretrained(base, str(adapter))
    train_float32(model)  # connector / head copies in float32, as the run evaluated them
    load_personalized(model, adapter)
    model.eval()
    return model, processor, family


def evaluate_adapter(adapter: Path, config: str | None, overrides: list[str]) -> dict:
    """``adapter`` on ``data.test_split`` of ``data.source`` (the ``data.pooled_test_size``
    rows a run with that seed evaluates), with the run's metrics."""
    from fedvlm.engine.federation import label_names, load_datasets, peek_family, pooled_rows, task_for
    from fedvlm.train.evaluate import evaluate

    cfg = adapter_config(adapter, config, overrides)
    family = peek_family(cfg)
    train_ds, test_ds = load_datasets(cfg, family)
    labels = label_names(family, train_ds)
    model, processor, family = load_adapter_model(cfg, adapter, labels)
    task = task_for(cfg, family, processor, test_ds, labels)
    rows = pooled_rows(cfg, len(test_ds))
    e = cfg.eval
    result = evaluate(task, model, test_ds, rows, e.batch_size, e.max_new_tokens, e.answer_span, e.caption_types,
                      cfg.train.mixed_precision, e.references)
    return {"adapter": str(adapter), "model": cfg.model.path, "data": cfg.data.source, "split": cfg.data.test_split,
            **result}


def predict_one(adapter: Path, config: str | None, overrides: list[str], image: str | None, question: str | None,
                text: str | None) -> str:
    """The adapted model's answer to one question about ``image`` (image-text models), or
    to ``text`` (text models; a classifier's label)."""
    from fedvlm.models.load import model_config, resolve_family
    from fedvlm.engine.federation import label_names, load_datasets
    from fedvlm.train.tasks import build_task

    cfg = adapter_config(adapter, config, overrides)
    family = resolve_family(model_config(cfg.model.path), cfg.model.family)
    if family.images:
        if image is None or question is None:
            raise ConfigError(f"{cfg.model.path} is an image-text model: give --image PATH and --question TEXT")
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(image).convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"--image {image}: not a readable image ({type(e).__name__})") from None
        rows = {"image": [picture], "question": [question], "answer": [""]}
    else:
        if text is None:
            raise ConfigError(f"{cfg.model.path} is a text model: give --text TEXT")
        rows = {"text": [text], "answer": [""]}
    labels = None
    if family.task == "classify":  # the head's label names come from the run's data
        train_ds, _ = load_datasets(cfg, family)
        labels = label_names(family, train_ds)
    model, processor, family = load_adapter_model(cfg, adapter, labels)
    d = cfg.data
    task = build_task(family, processor, labels, d.max_length, d.template, d.system_prompt)
    return task.predict(model, rows, cfg.eval.max_new_tokens)[0]
