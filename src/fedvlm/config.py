"""One validated config schema for every command.

A config is a YAML file of sections (``model``, ``data``, ...) overlaid with
``section.key=value`` overrides from the command line. Unknown keys and bad values raise
``ConfigError`` naming the key, so the CLI can print one line and exit 2.
"""

import dataclasses
import math
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from fedvlm.client.faults import ATTACKS, FAULTS
from fedvlm.core.aggregate import WEIGHTINGS
from fedvlm.engine.faults import check_entries
from fedvlm.core.answers import ANSWER_SPANS, REFERENCES
from fedvlm.algorithm_config import algorithm_options, check_dp_sgd, check_privacy, check_secure_aggregation, chosen
from fedvlm.algorithms.base import Algorithm
from fedvlm.engine.trackers import check_trackers
from fedvlm.algorithms.registry import PRIVACY, SECURE_AGGREGATION, STRATEGIES, VARIANTS, option_fields
from fedvlm.core.sharing import TUNINGS
from fedvlm.errors import ConfigError
from fedvlm.fileio import is_one_directory_name, write_atomic
from fedvlm.core.text_metrics import TEXT_METRICS
from fedvlm.models.families import ATTN_IMPLEMENTATIONS, FAMILIES, FAMILY_ALIASES
from fedvlm.settings import (  # noqa: F401 - the sections are part of this module's API
    Config,
    DataConfig,
    EvalConfig,
    FederatedConfig,
    LoraConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    TrainConfig,
)
from fedvlm.train.chat import TEMPLATES


_CHOICES = {
    "partition.method": {"iid", "dirichlet", "pathological", "overlap", "natural"},
    "federated.strategy": set(STRATEGIES),
    "train.schedule": {"cosine", "linear", "constant"},
    "federated.aggregation": set(VARIANTS),
    "federated.privacy": {"none", *PRIVACY},
    "federated.secure_aggregation": {"none", *SECURE_AGGREGATION},
    "federated.compression": {"none", "int8", "int4"},
    "model.dtype": {"float32", "bfloat16", "float16"},
    "model.quantization": {"none", "4bit", "8bit"},
    "model.attn_implementation": set(ATTN_IMPLEMENTATIONS),
    "train.mixed_precision": {"no", "bf16", "fp16"},  # models/precision.py
    "model.family": {"auto", *FAMILIES, *FAMILY_ALIASES},
    "data.template": set(TEMPLATES),
    "eval.metric": {"accuracy", *TEXT_METRICS, "loss"},
    "lora.tuning": {"auto", *TUNINGS},
    "federated.weighting": set(WEIGHTINGS),
    "eval.answer_span": set(ANSWER_SPANS),
    "eval.references": set(REFERENCES),
    "run.engine": {"simulator", "flower-sim"},
}
_POSITIVE = {
    "partition.num_clients", "federated.rounds", "train.batch_size", "train.grad_accum",
    "train.local_steps", "lora.r", "eval.batch_size", "eval.max_new_tokens",
    "data.pooled_test_size", "federated.compression_block", "lora.two_stage_rounds",
    "data.max_length", "lora.alpha", "federated.min_clients", "data.validation_size",
}
_NON_NEGATIVE = {
    "run.seed", "train.warmup_steps", "train.weight_decay", "train.max_grad_norm", "eval.keep_last",
    "partition.min_partition_size", "partition.max_local_test",
    "train.dataloader_num_workers", "train.dataloader_prefetch_factor",
}
_BASELINES = {"centralized", "local"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type hint ``hint``; ints pass as floats."""
    options = get_args(hint) if get_origin(hint) in (types.UnionType, Union) else (hint,)
    for opt in options:
        if opt is type(None) and value is None:
            return None
        origin = get_origin(opt) or opt
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is bool and isinstance(value, bool):
            return value
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, list):
            return value
        if origin is dict and isinstance(value, dict):
            value_type = (get_args(opt) or (str, str))[1]
            out = {}
            for k, v in value.items():
                if value_type is int and (not isinstance(v, int) or isinstance(v, bool)):
                    raise ConfigError(f"config key '{key}.{k}': expected int, got {v!r}")
                if value_type is list and not isinstance(v, list):
                    raise ConfigError(f"config key '{key}.{k}': expected a list, got {v!r}")
                out[str(k)] = v if value_type is int else [str(x) for x in v] if value_type is list else str(v)
            return out
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config key '{key}': expected {names}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    if cls is FederatedConfig:  # the algorithms' options are keys of this section too
        data, hints_of = dict(data), option_fields()
        options = {k: data.pop(k) for k in list(data) if k in hints_of}
        kwargs["options"] = {k: _coerce(prefix + k, v, hints_of[k]) for k, v in options.items() if v is not None}
        known = (known - {"options"}) | set(hints_of)
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (valid: {', '.join(sorted(known))})"
            )
    for f in fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix}{f.name}' must be a section (mapping)")
            kwargs[f.name] = _build(hint, value, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(prefix + f.name, value, hint)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    flat = {
        f"{s}.{k}": v for s, section in cfg.to_dict().items() for k, v in section.items()
    }
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(
                f"config key '{key}': expected one of {sorted(choices)}, got {flat[key]!r}"
            )
    for key, value in {**flat, **{f"federated.{k}": v for k, v in cfg.federated.options.items()}}.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}': expected a finite number, got {value}")
    for key in _POSITIVE:
        if flat[key] is not None and flat[key] <= 0:
            raise ConfigError(f"config key '{key}': expected a positive number, got {flat[key]!r}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}': expected a number >= 0, got {flat[key]!r}")
    check_run_name(cfg.run.name)
    if cfg.data.max_train_examples is not None and cfg.data.max_train_examples <= 0:
        raise ConfigError(f"config key 'data.max_train_examples': expected a positive number or null, got {cfg.data.max_train_examples}")
    if not 0 <= cfg.lora.dropout < 1:
        raise ConfigError(f"config key 'lora.dropout': expected 0 <= dropout < 1, got {cfg.lora.dropout}")
    if cfg.federated.min_clients > cfg.partition.num_clients:
        raise ConfigError(
            f"config key 'federated.min_clients': expected at most partition.num_clients "
            f"({cfg.partition.num_clients}), got {cfg.federated.min_clients}"
        )
    if not 0 < cfg.federated.fraction <= 1:
        raise ConfigError(f"config key 'federated.fraction': expected 0 < fraction <= 1, got {cfg.federated.fraction}")
    if not 0 <= cfg.partition.local_test_fraction < 1:
        raise ConfigError("config key 'partition.local_test_fraction': expected 0 <= value < 1")
    if not 0 <= cfg.partition.overlap < 1:
        raise ConfigError("config key 'partition.overlap': expected 0 <= value < 1")
    if cfg.train.local_epochs is not None and cfg.train.local_epochs <= 0:
        raise ConfigError("config key 'train.local_epochs': expected a positive number or null")
    if cfg.train.lr <= 0:
        raise ConfigError(f"config key 'train.lr': expected a positive number, got {cfg.train.lr}")
    if cfg.run.engine == "flower-sim":
        _check_flower(cfg)
    if cfg.federated.round_timeout is not None and cfg.federated.round_timeout <= 0:
        raise ConfigError(f"config key 'federated.round_timeout': expected a positive number of seconds or null, got {cfg.federated.round_timeout}")
    _check_misbehaviour(cfg)
    if not isinstance(cfg.run.report_to, list):
        raise ConfigError(f"config key 'run.report_to': expected a list of trackers, got {cfg.run.report_to!r}")
    check_trackers(cfg.run.report_to)
    _check_variant(cfg, VARIANTS[cfg.federated.aggregation])
    for algorithm in chosen(cfg).values():
        algorithm_options(cfg, algorithm)  # each in range
    check_privacy(cfg)
    check_secure_aggregation(cfg)
    check_dp_sgd(cfg)
    options = cfg.federated.options
    if options.get("server_rank") is not None and not 0 < options["server_rank"] <= cfg.lora.r:
        raise ConfigError(f"config key 'federated.server_rank': expected 1..lora.r ({cfg.lora.r}), got {options['server_rank']}")
    for b in cfg.run.baselines:
        if b not in _BASELINES:
            raise ConfigError(f"config key 'run.baselines': unknown baseline {b!r} (valid: {sorted(_BASELINES)})")


def check_in_process(cfg: Config) -> None:
    """One line for a setting the in-process simulator cannot run (there, the server and
    every client are one process)."""
    if cfg.federated.secure_aggregation != "none":
        raise ConfigError(f"config key 'federated.secure_aggregation': {cfg.federated.secure_aggregation} runs on Flower "
                          "(run.engine=flower-sim or a deployment); the in-process simulator has no separate server to "
                          "hide the updates from")


def check_run_name(name: str | None) -> None:
    """A run name is one directory name inside ``run.output_dir``: never empty, ``.``,
    ``..``, an absolute path or a path with separators, so it cannot reach outside it."""
    if name is None:
        return
    if not is_one_directory_name(name):
        raise ConfigError(
            f"config key 'run.name': expected one directory name (no '/', not empty, '.' or '..'), got {name!r}"
        )


def _check_flower(cfg: Config) -> None:
    import importlib.util

    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise ConfigError("config key 'run.engine': flower-sim needs Flower's simulation runtime (pip install 'fedvlm[flower]')")
    if cfg.run.flower_client_cpus < 1:
        raise ConfigError(f"config key 'run.flower_client_cpus': expected a positive number of CPUs, got {cfg.run.flower_client_cpus}")
    if cfg.run.flower_client_gpus is not None and not 0 <= cfg.run.flower_client_gpus:
        raise ConfigError(f"config key 'run.flower_client_gpus': expected 0 or more GPUs (a fraction shares one) or null, "
                          f"got {cfg.run.flower_client_gpus}")


def client_ranks(cfg: Config) -> dict[str, int]:
    """Each client's LoRA rank where it differs from ``lora.r``: from ``lora.rank_groups``
    ({rank: [client ids]}), then ``lora.client_ranks`` ({client id: rank}) on top."""
    clients = {str(k) for k in range(cfg.partition.num_clients)}
    ranks, sources = {}, {}
    for rank, members in cfg.lora.rank_groups.items():
        key = f"lora.rank_groups.{rank}"
        if not rank.isdigit():
            raise ConfigError(f"config key '{key}': expected a rank (1..lora.r) as the group's key")
        for cid in members:
            if cid in ranks:
                raise ConfigError(f"config key '{key}': client {cid} is already in {sources[cid]}")
            ranks[cid], sources[cid] = int(rank), key
    for cid, rank in cfg.lora.client_ranks.items():
        ranks[cid], sources[cid] = rank, f"lora.client_ranks.{cid}"
    for cid, rank in ranks.items():
        if cid not in clients:
            raise ConfigError(f"config key '{sources[cid]}': no such client {cid} (ids 0..{cfg.partition.num_clients - 1})")
        if not 0 < rank <= cfg.lora.r:
            raise ConfigError(f"config key '{sources[cid]}': expected a rank 1..lora.r ({cfg.lora.r}), got {rank}")
    return ranks


def _check_misbehaviour(cfg: Config) -> None:
    f = cfg.federated
    check_entries("federated.faults", f.faults, FAULTS, cfg.partition.num_clients)
    check_entries("federated.attacks", f.attacks, ATTACKS, cfg.partition.num_clients)
    if any(e["kind"] == "hang" for e in f.faults) and f.round_timeout is None:
        raise ConfigError("config key 'federated.faults': a hang needs federated.round_timeout (the deadline it misses)")
    if f.max_norm_ratio is not None and not f.max_norm_ratio > 1:
        raise ConfigError(f"config key 'federated.max_norm_ratio': expected a ratio > 1 or null, got {f.max_norm_ratio}")


def _check_variant(cfg: Config, variant: Algorithm) -> None:
    """What the LoRA variant's registry facts rule out (``fedvlm.algorithms.base.Algorithm``)."""
    f, name = cfg.federated, cfg.federated.aggregation
    if variant.server is not None and f.strategy != "fedavg":
        raise ConfigError(f"config key 'federated.aggregation': {name} brings its own server side; keep federated.strategy=fedavg")
    if variant.merges_into_base and cfg.model.quantization != "none":
        raise ConfigError(
            f"config keys 'model.quantization' / 'federated.aggregation': {name} merges updates "
            "into the base weights, which needs a full-precision base (model.quantization=none)"
        )
    if variant.personal:
        if not cfg.eval.local:
            raise ConfigError(f"config key 'eval.local': {name}'s models are the clients' own, evaluated on their local tests; keep eval.local=true")
        if f.weighting != "data_size":
            own = ", ".join(f"federated.{o.name}" for o in fields(variant.options)) if variant.options else "none"
            raise ConfigError(f"config key 'federated.weighting': {name} averages no global model; its own options say how it weighs clients ({own})")
        if f.compression != "none":
            raise ConfigError(f"config key 'federated.compression': {name} sends each client's own arrays whole (the server sends none to take a delta from)")
    if cfg.lora.tuning == "two_stage" and cfg.lora.two_stage_rounds >= f.rounds:
        raise ConfigError(
            f"config key 'lora.two_stage_rounds': expected fewer than federated.rounds ({f.rounds}), "
            f"got {cfg.lora.two_stage_rounds}"
        )
    if cfg.lora.tuning in ("connector", "two_stage") and not variant.connector_stages:
        works = " or ".join(n for n, v in VARIANTS.items() if v.connector_stages)
        raise ConfigError(f"config key 'lora.tuning': {cfg.lora.tuning} works with federated.aggregation {works}, not {name}")
    if client_ranks(cfg) and not variant.mixed_ranks:
        works = " or ".join(n for n, v in VARIANTS.items() if v.mixed_ranks)
        raise ConfigError(
            f"config keys 'lora.client_ranks' / 'lora.rank_groups': heterogeneous ranks work with federated.aggregation "
            f"{works}, not {name}"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML reads 1e-3 as a string; accept it as a float.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key.strip().split("."), value


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (YAML; None means the built-in defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.load(path.read_text(), Loader=_UniqueKeys) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}")
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top")
    return _from_data(data, overrides)


def config_from_text(text: str, what: str = "the server's job") -> Config:
    """A config from YAML ``text`` (what the ServerApp sends its nodes), validated."""
    try:
        data = yaml.load(text, Loader=_UniqueKeys) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping of sections at the top")
    return _from_data(data, ())


def config_text(cfg: Config) -> str:
    """``cfg`` as the YAML `config_from_text` reads."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _from_data(data: dict[str, Any], overrides) -> Config:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{k}' is not a section")
        node[keys[-1]] = value
    cfg = _build(Config, data, "")
    _check(cfg)
    return cfg


def save_config(cfg: Config, path: Path, header: list[str] = ()) -> None:
    """Write ``cfg`` as YAML (atomically), after ``header`` comment lines."""
    text = "".join(line + "\n" for line in header) + config_text(cfg)
    write_atomic(path, text)
