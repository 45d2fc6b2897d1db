"""Build what every runner needs once: the model with its adapter, data and client splits."""

import logging
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from fedvlm.config import Config
from fedvlm.core.types import AdapterState
from fedvlm.data.partition import partition_indices, split_local
from fedvlm.data.vqa import load_vqa
from fedvlm.models.adapter import get_adapter_state
from fedvlm.errors import ModelError
from fedvlm.models.load import attach_lora, load_base
from fedvlm.runners.merge import read_adapter


@dataclass
class ClientData:
    train: list[int]  # rows of the train split this client trains on
    test: list[int]  # rows of the train split held out as this client's local test


@dataclass
class Federation:
    model: object  # PeftModel: the one base model in memory, with one adapter
    processor: object
    initial_adapter: AdapterState
    train_ds: object
    test_ds: object
    pooled_test: list[int]  # rows of test_ds for the global evaluation
    clients: dict[str, ClientData] = field(default_factory=dict)


def seed_for(cfg: Config, *tags: int) -> list[int]:
    """A seed sequence for one purpose, so that every RNG stream is independent of the
    others and of the order things run in."""
    return [cfg.run.seed, *tags]


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
        local_train, local_test = split_local(rows, p.local_test_fraction, cfg.run.seed + k)
        # Rows held out beyond the local-test cap go back to training.
        spare = local_test[p.max_local_test :]
        clients[str(k)] = ClientData(
            train=sorted(local_train + spare), test=local_test[: p.max_local_test]
        )
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


def build_federation(cfg: Config) -> Federation:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    d = cfg.data
    train_ds = load_vqa(d.source, d.train_split, d.columns or None, d.image_dir)
    test_ds = load_vqa(d.source, d.test_split, d.columns or None, d.image_dir)
    if d.max_train_examples is not None and d.max_train_examples < len(train_ds):
        keep = np.random.default_rng(seed_for(cfg, 1)).permutation(len(train_ds))[: d.max_train_examples]
        train_ds = train_ds.select(np.sort(keep))
    n_test = min(d.pooled_test_size, len(test_ds))
    pooled = np.random.default_rng(seed_for(cfg, 2)).permutation(len(test_ds))[:n_test]

    base, processor = load_base(cfg.model.path, cfg.model.dtype)
    lo = cfg.lora
    model = attach_lora(
        base, lo.r, lo.alpha, lo.dropout, lo.target_modules, lo.modules_to_save, cfg.run.seed
    )
    initial = get_adapter_state(model)
    if lo.init_adapter:
        initial = warm_start(initial, Path(lo.init_adapter))
    if cfg.federated.aggregation == "ffa":
        # FFA-LoRA: A stays at its shared seeded initialization on every client.
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    return Federation(
        model=model,
        processor=processor,
        initial_adapter=initial,
        train_ds=train_ds,
        test_ds=test_ds,
        pooled_test=sorted(pooled.tolist()),
        clients=build_clients(cfg, train_ds),
    )
