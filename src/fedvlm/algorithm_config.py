"""Which algorithms a config runs and with which options: the strategy's and the LoRA
variant's registry lines (`fedvlm.algorithms.registry`), their options dataclasses built
from the ``federated`` section, the record their client sides receive, and what the server
side's constructor gets."""

import dataclasses
from dataclasses import fields
from typing import Any

from fedvlm.algorithms.base import Algorithm, OptionError
from fedvlm.algorithms.registry import PRIVACY, STRATEGIES, VARIANTS
from fedvlm.errors import ConfigError
from fedvlm.settings import Config


def chosen(cfg: Config) -> dict[str, Algorithm]:
    """The run's algorithms by name: ``federated.strategy``'s and ``federated.aggregation``'s
    (and ``federated.privacy``'s, if any)."""
    f = cfg.federated
    privacy = {f.privacy: PRIVACY[f.privacy]} if f.privacy in PRIVACY else {}
    return {f.strategy: STRATEGIES[f.strategy], f.aggregation: VARIANTS[f.aggregation], **privacy}


def algorithm_options(cfg: Config, algorithm: Algorithm):
    """``algorithm``'s options dataclass from the config (None: it has none). An option set
    in the config that none of the run's algorithms takes is an error naming them."""
    set_ = cfg.federated.options
    takes = {n: {f.name for f in fields(a.options)} if a.options else set() for n, a in chosen(cfg).items()}
    for key in set_:
        if not any(key in names for names in takes.values()):
            offered = ", ".join(sorted(set().union(*takes.values()))) or "none"
            owners = [f"federated.{kind}={n}" for kind, table in (("strategy", STRATEGIES), ("aggregation", VARIANTS),
                                                                    ("privacy", PRIVACY))
                      for n, a in table.items() if a.options and key in {f.name for f in fields(a.options)}]
            raise ConfigError(
                f"config key 'federated.{key}': needs {' or '.join(owners)} (this run's strategy "
                f"{cfg.federated.strategy!r}, aggregation {cfg.federated.aggregation!r} and privacy "
                f"{cfg.federated.privacy!r} take {offered})"
            )
    if algorithm.options is None:
        return None
    try:
        return algorithm.options(**{f.name: set_[f.name] for f in fields(algorithm.options) if f.name in set_})
    except OptionError as e:
        raise ConfigError(f"config key 'federated.{e.key}': expected {e.expected}, got {e.got!r}") from None


def options_record(cfg: Config) -> dict[str, Any]:
    """What the run's algorithms' client sides receive each round (``RoundConfig.options``):
    the options of those of the run's algorithms that have a client side, every field, as
    one record (a server-only algorithm's options stay on the server)."""
    out = {}
    for algorithm in chosen(cfg).values():
        if algorithm.client is None:
            continue
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


def privacy_noise(cfg: Config) -> float | None:
    """The run's DP noise multiplier ``z`` (calibrated to ``dp_target_epsilon`` where that
    is set); None without ``federated.privacy``."""
    f = cfg.federated
    if f.privacy not in PRIVACY:
        return None
    try:
        from fedvlm.algorithms.dp_fedavg.accountant import noise_multiplier
    except ImportError as e:
        raise ConfigError(f"config key 'federated.privacy': {f.privacy} needs dp-accounting for its epsilon "
                          f"(pip install 'fedvlm[privacy]'; {e})") from None
    return noise_multiplier(algorithm_options(cfg, PRIVACY[f.privacy]), f.fraction, f.rounds)


def check_privacy(cfg: Config) -> None:
    """One line for what ``federated.privacy`` rules out (the registry's ``not_a_sum``
    facts, a weighting other than uniform, adaptive clipping without noise to spare)."""
    from fedvlm.algorithms.dp_fedavg.server import split_noise

    f = cfg.federated
    if f.privacy not in PRIVACY:
        return
    for kind, name, algorithm in (("strategy", f.strategy, STRATEGIES[f.strategy]),
                                  ("aggregation", f.aggregation, VARIANTS[f.aggregation])):
        if algorithm.not_a_sum:
            raise ConfigError(f"config key 'federated.{kind}': federated.privacy={f.privacy} needs an aggregate that is a "
                              f"sum of the clients' updates; not {name}: {algorithm.not_a_sum}")
    if f.weighting != "uniform":
        raise ConfigError(f"config key 'federated.weighting': federated.privacy={f.privacy} weighs every client the same "
                          f"(a data-size weight lets one client move the mean past the clipping bound); set "
                          f"federated.weighting=uniform, got {f.weighting!r}")
    options = algorithm_options(cfg, PRIVACY[f.privacy])
    if options.dp_adaptive_clip:
        stddev = options.dp_clipped_count_stddev or f.fraction * cfg.partition.num_clients / 20.0
        try:
            split_noise(privacy_noise(cfg), stddev)
        except ValueError as e:
            raise ConfigError(f"config key 'federated.dp_clipped_count_stddev': {e}") from None
