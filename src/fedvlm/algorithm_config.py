"""Which algorithms a config runs and with which options: the strategy's and the LoRA
variant's registry lines (`fedvlm.algorithms.registry`), their options dataclasses built
from the ``federated`` section, the record their client sides receive, and what the server
side's constructor gets."""

import dataclasses
from dataclasses import fields
from typing import Any

from fedvlm.algorithms.base import Algorithm, OptionError
from fedvlm.algorithms.registry import STRATEGIES, VARIANTS
from fedvlm.errors import ConfigError
from fedvlm.settings import Config


def chosen(cfg: Config) -> dict[str, Algorithm]:
    """The run's algorithms by name: ``federated.strategy``'s and ``federated.aggregation``'s."""
    f = cfg.federated
    return {f.strategy: STRATEGIES[f.strategy], f.aggregation: VARIANTS[f.aggregation]}


def algorithm_options(cfg: Config, algorithm: Algorithm):
    """``algorithm``'s options dataclass from the config (None: it has none). An option set
    in the config that none of the run's algorithms takes is an error naming them."""
    set_ = cfg.federated.options
    takes = {n: {f.name for f in fields(a.options)} if a.options else set() for n, a in chosen(cfg).items()}
    for key in set_:
        if not any(key in names for names in takes.values()):
            offered = ", ".join(sorted(set().union(*takes.values()))) or "none"
            owners = [f"federated.{kind}={n}" for kind, table in (("strategy", STRATEGIES), ("aggregation", VARIANTS))
                      for n, a in table.items() if a.options and key in {f.name for f in fields(a.options)}]
            raise ConfigError(
                f"config key 'federated.{key}': needs {' or '.join(owners)} (this run's strategy "
                f"{cfg.federated.strategy!r} and aggregation {cfg.federated.aggregation!r} take {offered})"
            )
    if algorithm.options is None:
        return None
    try:
        return algorithm.options(**{f.name: set_[f.name] for f in fields(algorithm.options) if f.name in set_})
    except OptionError as e:
        raise ConfigError(f"config key 'federated.{e.key}': expected {e.expected}, got {e.got!r}") from None


def options_record(cfg: Config) -> dict[str, Any]:
    """What the run's algorithms' client sides receive each round (``RoundConfig.options``):
    the options of the strategy and of the LoRA variant, every field, as one record."""
    out = {}
    for algorithm in chosen(cfg).values():
        options = algorithm_options(cfg, algorithm)
        if options is not None:
            out |= dataclasses.asdict(options)
    return out


def server_side(cfg: Config) -> tuple[str, Algorithm]:
    """The algorithm whose server side runs, with its name: the LoRA variant's own where it
    has one (svd, FLoRA, FedEx-LoRA, FedALT), else ``federated.strategy``'s."""
    f = cfg.federated
    if VARIANTS[f.aggregation].server is not None:
        return f.aggregation, VARIANTS[f.aggregation]
    return f.strategy, STRATEGIES[f.strategy]


def server_kwargs(cfg: Config, num_clients: int | None = None, client_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """What the server side's constructor gets: its options (`algorithm_options`) and the
    run's settings and facts it has a field for (sampling, weighting, client count, every
    client's training-set size, LoRA scaling, seed)."""
    f = cfg.federated
    _, algorithm = server_side(cfg)
    facts = {
        "fraction": f.fraction,
        "min_clients": f.min_clients,
        "weighting": f.weighting,
        "num_clients": num_clients or cfg.partition.num_clients,
        "lora_scaling": cfg.lora.alpha / cfg.lora.r,
        "seed": cfg.run.seed,
        "client_sizes": client_sizes,
    }
    takes = {field.name for field in fields(algorithm.server)}
    kwargs = {k: v for k, v in facts.items() if k in takes}
    if algorithm.options is not None:
        kwargs["options"] = algorithm_options(cfg, algorithm)
    return kwargs
