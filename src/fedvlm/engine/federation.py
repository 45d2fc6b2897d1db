"""Build what every runner needs once: the model with its adapter, data and client splits."""

import logging
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from fedvlm.config import Config, client_ranks
from fedvlm.client import Node, NodeStore
from fedvlm.algorithms.flora.client import MergedBase
from fedvlm.core.sharing import SharingPlan
from fedvlm.algorithms.registry import VARIANTS
from fedvlm.core.types import AdapterState
from fedvlm.data.partition import partition_indices, split_local
from fedvlm.errors import ConfigError, DataError, ModelError
from fedvlm.models.adapter import get_adapter_state
from fedvlm.seeds import Stream, seed_for
from fedvlm.models.families import Family
from fedvlm.models.load import (
    attach_lora,
    check_modules_exist,
    load_base,
    load_processor,
    model_config,
    resolve_family,
    resolve_model_path,
)
from fedvlm.models.adapter import read_adapter
from fedvlm.train.prefetch import Loading
from fedvlm.train.tasks import Task, build_task


@dataclass
class ClientData:
    train: list[int]  # rows of the train split this client trains on
    test: list[int]  # rows of the train split held out as this client's local test


@dataclass
class Federation:
    model: object  # PeftModel: the one base model in memory, with one adapter
    family: Family
    task: Task  # rows -> batches, model -> answers
    plan: SharingPlan  # what trains and what travels, per round
    initial_adapter: AdapterState
    train_ds: object
    test_ds: object
    pooled_test: list[int]  # rows of test_ds for the global evaluation
    clients: dict[str, ClientData] = field(default_factory=dict)
    merged_base: object = None  # algorithms.flora.client.MergedBase, for variants that merge into the base
    loading: Loading = Loading()  # how batches are made (train.dataloader_*)


def build_clients(cfg: Config, train_ds) -> dict[str, ClientData]:
    p = cfg.partition
    parts = partition_indices(
        train_ds,
        p.method,
        p.num_clients,
        cfg.run.seed,
        label_column=p.label_column,
        alpha=p.alpha,
        labels_per_client=p.labels_per_client,
        overlap=p.overlap,
        natural_column=p.natural_column,
        min_partition_size=p.min_partition_size,
    )
    clients = {}
    for k, rows in enumerate(parts):
        train, test = split_local(rows, p.local_test_fraction, seed_for(cfg.run.seed, Stream.LOCAL_TEST, k), p.max_local_test)
        clients[str(k)] = ClientData(train=train, test=test)
    return clients


def warm_start(initial: AdapterState, path: Path) -> AdapterState:
    """The adapter at ``path`` in place of the fresh one; it must match key for key."""
    _, state = read_adapter(path)
    missing, extra = sorted(set(initial) - set(state)), sorted(set(state) - set(initial))
    if missing or extra:
        raise ModelError(
            f"lora.init_adapter {path}: layers differ from lora.* settings "
            f"(missing {missing[:2]}, unexpected {extra[:2]})"
        )
    for k, a in initial.items():
        if state[k].shape != a.shape:
            raise ModelError(f"lora.init_adapter {path}: {k} has shape {state[k].shape}, expected {a.shape}")
    return {k: state[k].astype(a.dtype) for k, a in initial.items()}


def resolve_tuning(cfg: Config, family: Family) -> str:
    """``lora.tuning`` with ``auto`` resolved; the connector strategies need a connector,
    and ``lora`` alone must not be handed the connector through ``lora.modules_to_save``."""
    tuning = cfg.lora.tuning
    if tuning == "auto":
        return "connector_lora" if family.connector else "lora"
    if tuning != "lora" and not family.connector:
        raise ConfigError(
            f"config key 'lora.tuning': {tuning} trains a vision-language connector, and family "
            f"{family.name} has none (use lora)"
        )
    named = sorted(set(cfg.lora.modules_to_save) & set(family.connector))
    if tuning == "lora" and named:
        raise ConfigError(
            f"config key 'lora.modules_to_save': {named[0]} is the connector; train it with "
            "lora.tuning=connector_lora (or two_stage), not with lora.tuning=lora"
        )
    return tuning


def load_datasets(cfg: Config, family: Family | None):
    """The train split (subsampled to ``data.max_train_examples``; for generation without
    rows that cannot fit in ``data.max_length``, `_fitting`) and the test split, read
    as VQA (families with images) or text data. Without a family (its config out of reach),
    the source decides: the built-in text corpora and GLUE tasks are text, anything else VQA."""
    d = cfg.data
    text_source = d.source == "crowdflower" or d.source.startswith("glue/")
    # The built-in sources say what they hold: a mismatch is named before any loading.
    if family is not None and (text_source if family.images else d.source == "easyvqa"):
        kind = "vision-language" if family.images else "text-only"
        need = "image-question data (easyvqa, a VQA file or dataset)" if family.images else "text data (crowdflower, glue/<task>, a text file)"
        raise ConfigError(
            f"data.source {d.source!r} does not fit model.path {cfg.model.path!r}, a {kind} model "
            f"(family {family.name}): it needs {need}"
        )
    if d.subsets and family is not None and not family.images:
        raise ConfigError("data.subsets loads image-text datasets (the_cauldron's subsets); this model is text-only")
    splits = (d.train_split,) if d.validation_size else (d.train_split, d.test_split)  # (tuning never reads test)
    if family.images if family else not text_source:
        from fedvlm.data.vqa import load_vqa

        loaded = [load_vqa(d.source, split, d.columns or None, d.image_dir, d.subsets) for split in splits]
    else:
        from fedvlm.data.text import load_text

        loaded = [load_text(d.source, split, d.columns or None) for split in splits]
    train_ds = loaded[0]
    if d.max_train_examples is not None and d.max_train_examples < len(train_ds):
        keep = np.random.default_rng(seed_for(cfg.run.seed, Stream.SUBSAMPLE)).permutation(len(train_ds))[: d.max_train_examples]
        train_ds = train_ds.select(np.sort(keep))
    if d.validation_size:
        train_ds, test_ds = held_out(cfg, train_ds)
    else:
        test_ds = loaded[1]
    if family is not None and family.task == "generate" and d.max_length is not None:
        processor = load_processor(resolve_model_path(cfg.model.path), family)
        train_ds, test_ds = (
            _fitting(cfg, family, processor, ds, split) for ds, split in ((train_ds, d.train_split), (test_ds, d.test_split))
        )
    return train_ds, test_ds


def _fitting(cfg: Config, family: Family, processor, dataset, split: str):
    """``dataset`` without the rows that cannot fit in ``data.max_length`` tokens: for text
    models those whose last answer alone is longer (the prompt is cut from the left,
    `TextGenerationTask.fits`), for image-text models those whose whole example is (images
    cannot be cut, `GenerativeTask.fits`); the number dropped in the log."""
    task = task_for(cfg, family, processor, dataset)
    keep = [i for start in range(0, len(dataset), 256)
            for i, ok in enumerate(task.fits(dataset[start:start + 256]), start) if ok]
    if len(keep) < len(dataset):
        logging.getLogger("fedvlm").warning(
            "data.max_length=%d: dropped %d of %d %s rows that do not fit",
            cfg.data.max_length, len(dataset) - len(keep), len(dataset), split,
        )
        if not keep:
            raise DataError(f"data.max_length={cfg.data.max_length}: no {split} row fits (raise data.max_length)")
        dataset = dataset.select(keep)
    return dataset


def task_for(cfg: Config, family: Family, processor, dataset, labels=None):
    """The task of ``family`` with the run's data settings."""
    d = cfg.data
    return build_task(family, processor, labels, d.max_length, d.template, d.system_prompt,
                      conversations="messages" in dataset.column_names)


def label_names(family: Family, train_ds) -> list[str] | None:
    if family.task != "classify":
        return None
    feature = train_ds.features.get("label")
    if feature is None or not hasattr(feature, "names"):
        raise DataError(f"data.source: family {family.name} classifies, but the dataset has no label column with class names")
    return list(feature.names)


@dataclass
class LoadedModel:
    """What every node (and the simulator's one process) loads once: the base model with
    its adapter, the task, the sharing plan and the seeded initial adapter."""

    model: object
    family: Family
    task: Task
    plan: SharingPlan
    initial_adapter: AdapterState
    merged_base: object = None  # algorithms.flora.client.MergedBase, for variants that merge into the base
    loading: Loading = Loading()  # how batches are made (train.dataloader_*)


def node_view(loaded, client_id: str, seed_id: int, train_ds, train: list[int], test: list[int], store) -> Node:
    """A client node on ``loaded`` (a `LoadedModel`, or the simulator's `Federation`, which
    holds the same): the shared model with this client's rows and its view of ``store``
    (a `rundir.ClientStore`)."""
    return Node(
        client_id=client_id,
        seed_id=seed_id,
        model=loaded.model,
        task=loaded.task,
        plan=loaded.plan,
        initial_adapter=loaded.initial_adapter,
        train_ds=train_ds,
        train_rows=train,
        test_rows=test,
        store=NodeStore(store, client_id),
        base=loaded.merged_base,
        loading=loaded.loading,
    )


def load_model(cfg: Config, family: Family, train_ds, loaded_base: tuple | None = None) -> LoadedModel:
    """Load the base of ``cfg`` and attach the run's seeded LoRA (the same on every node).
    ``loaded_base``: the (model, processor, family) `load_base` would return, built by the
    caller (benchmarks build random-initialised models at real shapes in memory)."""
    m, lo = cfg.model, cfg.lora
    labels = label_names(family, train_ds)
    tuning = resolve_tuning(cfg, family)
    base, processor, family = loaded_base or load_base(
        m.path, m.dtype, family=m.family, quantization=m.quantization,
        gradient_checkpointing=m.gradient_checkpointing, labels=labels, seed=cfg.run.seed,
        attn_implementation=m.attn_implementation,
    )
    connector = family.connector if tuning != "lora" else ()
    check_modules_exist(base, connector, f"lora.tuning={tuning} (family {family.name}'s connector)")
    check_modules_exist(base, lo.modules_to_save, "lora.modules_to_save")
    modules = list(dict.fromkeys([*connector, *family.head, *lo.modules_to_save]))
    model = attach_lora(base, family, lo.r, lo.alpha, lo.dropout, lo.target_modules, modules, cfg.run.seed)
    initial = get_adapter_state(model)
    if lo.init_adapter:
        initial = warm_start(initial, Path(lo.init_adapter))
    variant = VARIANTS[cfg.federated.aggregation]
    plan = SharingPlan(tuning, lo.two_stage_rounds, family.connector, variant.frozen, variant.local)
    if client_ranks(cfg) and not any(k.endswith(".lora_A.weight") for k in plan.trained(initial, cfg.federated.rounds)):
        raise ConfigError(f"config keys 'lora.client_ranks' / 'lora.rank_groups': lora.tuning={tuning} trains no LoRA factors")
    task = task_for(cfg, family, processor, train_ds, labels)
    merged = None
    if variant.merges_into_base:
        merged = MergedBase(model, f"federated.aggregation={cfg.federated.aggregation}")
    return LoadedModel(model, family, task, plan, initial, merged, loading(cfg))


def loading(cfg: Config) -> Loading:
    """How batches are made, from ``train.dataloader_*``."""
    t = cfg.train
    return Loading(t.dataloader_num_workers, t.dataloader_prefetch_factor, t.dataloader_pin_memory)


def held_out(cfg: Config, train_ds):
    """``data.validation_size`` rows of ``train_ds`` (drawn with the run's seed) as the
    evaluation set, and the rest as the training set."""
    n = cfg.data.validation_size
    if n >= len(train_ds):
        raise ConfigError(f"config key 'data.validation_size': {n} rows held out of a training split of {len(train_ds)} "
                          "leaves none to train on")
    order = np.random.default_rng(seed_for(cfg.run.seed, Stream.VALIDATION)).permutation(len(train_ds))
    return train_ds.select(np.sort(order[n:])), train_ds.select(np.sort(order[:n]))


def build_federation(cfg: Config) -> Federation:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    family = peek_family(cfg)
    train_ds, test_ds = load_datasets(cfg, family)
    loaded = load_model(cfg, family, train_ds)
    return Federation(
        model=loaded.model,
        family=loaded.family,
        task=loaded.task,
        plan=loaded.plan,
        initial_adapter=loaded.initial_adapter,
        train_ds=train_ds,
        test_ds=test_ds,
        pooled_test=pooled_rows(cfg, len(test_ds)),
        clients=build_clients(cfg, train_ds),
        merged_base=loaded.merged_base,
        loading=loaded.loading,
    )


def pooled_rows(cfg: Config, num_test: int) -> list[int]:
    """The ``data.pooled_test_size`` test rows the run evaluates the global model on, drawn
    with the run's seed (sorted)."""
    n = min(cfg.data.pooled_test_size, num_test)
    return sorted(np.random.default_rng(seed_for(cfg.run.seed, Stream.POOLED_TEST)).permutation(num_test)[:n].tolist())


def peek_family(cfg: Config) -> Family:
    """The model's family from its config alone (before loading data or weights)."""
    return resolve_family(model_config(cfg.model.path), cfg.model.family)
