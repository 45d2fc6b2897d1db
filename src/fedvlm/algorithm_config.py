"""Which algorithms a config runs and with which options: the strategy's and the LoRA
variant's registry lines (`fedvlm.algorithms.registry`), their options dataclasses built
from the ``federated`` section, the record their client sides receive, and what the server
side's constructor gets."""

import dataclasses
from dataclasses import fields
from typing import Any

from fedvlm.algorithms.base import Algorithm, OptionError
from fedvlm.algorithms.registry import PRIVACY, SECURE_AGGREGATION, STRATEGIES, VARIANTS
from fedvlm.errors import ConfigError
from fedvlm.settings import Config


def chosen(cfg: Config) -> dict[str, Algorithm]:
    """The run's algorithms by name: ``federated.strategy``'s and ``federated.aggregation``'s
    (and ``federated.privacy``'s and ``federated.secure_aggregation``'s, if any)."""
    f = cfg.federated
    privacy = {f.privacy: PRIVACY[f.privacy]} if f.privacy in PRIVACY else {}
    secure = {f.secure_aggregation: SECURE_AGGREGATION[f.secure_aggregation]} if f.secure_aggregation in SECURE_AGGREGATION else {}
    return {f.strategy: STRATEGIES[f.strategy], f.aggregation: VARIANTS[f.aggregation], **privacy, **secure}


def algorithm_options(cfg: Config, algorithm: Algorithm):
    """``algorithm``'s options dataclass from the config (None: it has none). An option set
    in the config that none of the run's algorithms takes is an error naming them."""
    set_ = cfg.federated.options
    takes = {n: {f.name for f in fields(a.options)} if a.options else set() for n, a in chosen(cfg).items()}
    for key in set_:
        if not any(key in names for names in takes.values()):
            offered = ", ".join(sorted(set().union(*takes.values()))) or "none"
            owners = [f"federated.{kind}={n}" for kind, table in (("strategy", STRATEGIES), ("aggregation", VARIANTS),
                                                                    ("privacy", PRIVACY),
                                                                    ("secure_aggregation", SECURE_AGGREGATION))
                      for n, a in table.items() if a.options and key in {f.name for f in fields(a.options)}]
            raise ConfigError(
                f"config key 'federated.{key}': needs {' or '.join(owners)} (this run's {_run_algorithms(cfg)} "
                f"take {offered})"
            )
    if algorithm.options is None:
        return None
    try:
        return algorithm.options(**{f.name: set_[f.name] for f in fields(algorithm.options) if f.name in set_})
    except OptionError as e:
        raise ConfigError(f"config key 'federated.{e.key}': expected {e.expected}, got {e.got!r}") from None


def _run_algorithms(cfg: Config) -> str:
    f = cfg.federated
    named = [f"strategy {f.strategy!r}", f"aggregation {f.aggregation!r}"]
    named += [f"{kind} {value!r}" for kind, value in (("privacy", f.privacy), ("secure_aggregation", f.secure_aggregation))
              if value != "none"]
    return ", ".join(named[:-1]) + " and " + named[-1]


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
    if options.dp_noise == "clients" and options.dp_adaptive_clip:
        raise ConfigError("config key 'federated.dp_adaptive_clip': federated.dp_noise=clients clips on the clients, and "
                          "the server cannot count the clipped updates adaptive clipping needs")
    if options.dp_noise_split is not None and options.dp_noise != "clients":
        raise ConfigError("config key 'federated.dp_noise_split': needs federated.dp_noise=clients")
    if options.dp_adaptive_clip:
        stddev = options.dp_clipped_count_stddev or f.fraction * cfg.partition.num_clients / 20.0
        try:
            split_noise(privacy_noise(cfg), stddev)
        except ValueError as e:
            raise ConfigError(f"config key 'federated.dp_clipped_count_stddev': {e}") from None


def check_secure_aggregation(cfg: Config) -> None:
    """One line for what ``federated.secure_aggregation`` rules out: an aggregate that is
    not a weighted sum of updates of one shape (the registry's ``not_a_sum``, mixed LoRA
    ranks), and what needs each client's own update on the server (DP-FedAvg's server-side
    clipping, compressed uploads)."""
    f = cfg.federated
    if f.secure_aggregation not in SECURE_AGGREGATION:
        return
    name = f"federated.secure_aggregation={f.secure_aggregation}"
    for kind, chosen_name, algorithm in (("strategy", f.strategy, STRATEGIES[f.strategy]),
                                         ("aggregation", f.aggregation, VARIANTS[f.aggregation])):
        if algorithm.not_a_sum:
            raise ConfigError(f"config key 'federated.{kind}': {name} needs an aggregate that is a weighted sum of the "
                              f"clients' updates; not {chosen_name}: {algorithm.not_a_sum}")
    if f.privacy != "none" and algorithm_options(cfg, PRIVACY[f.privacy]).dp_noise != "clients":
        raise ConfigError(f"config key 'federated.privacy': {f.privacy} clips each client's update on the server, which "
                          f"{name} hides from it (federated.dp_noise=clients clips and noises on the clients)")
    if f.compression != "none":
        raise ConfigError(f"config key 'federated.compression': {name} quantises the update itself "
                          f"(federated.compression=none, got {f.compression!r})")
    if cfg.lora.client_ranks or cfg.lora.rank_groups:
        key = "client_ranks" if cfg.lora.client_ranks else "rank_groups"
        raise ConfigError(f"config key 'lora.{key}': {name} sums updates of one shape (every client at lora.r)")
    if f.weighting == "examples":
        raise ConfigError(f"config key 'federated.weighting': {name} weighs each client by a weight the server sets "
                          f"before the round (data_size or uniform, got {f.weighting!r})")


def check_dp_sgd(cfg: Config) -> None:
    """One line for a DP-SGD setting (``train.dp_sgd*``) that cannot run as asked."""
    t = cfg.train
    if not t.dp_sgd:
        set_ = [k for k in ("dp_sgd_noise_multiplier", "dp_sgd_target_epsilon", "dp_sgd_clients") if getattr(t, k) is not None]
        if set_:
            raise ConfigError(f"config key 'train.{set_[0]}': needs train.dp_sgd=true")
        return
    z, eps = t.dp_sgd_noise_multiplier, t.dp_sgd_target_epsilon
    if (z is None) == (eps is None):
        raise ConfigError("config key 'train.dp_sgd_noise_multiplier': expected a noise multiplier or "
                          f"train.dp_sgd_target_epsilon (one of them), got {z!r} and {eps!r}")
    for key, value in (("dp_sgd_noise_multiplier", z), ("dp_sgd_target_epsilon", eps), ("dp_sgd_max_grad_norm", t.dp_sgd_max_grad_norm)):
        if value is not None and not value > 0:
            raise ConfigError(f"config key 'train.{key}': expected a positive number, got {value!r}")
    if not 0 < t.dp_sgd_delta < 1:
        raise ConfigError(f"config key 'train.dp_sgd_delta': expected 0 < delta < 1, got {t.dp_sgd_delta!r}")
    if t.grad_accum != 1 or t.mixed_precision != "no":
        key = "grad_accum" if t.grad_accum != 1 else "mixed_precision"
        raise ConfigError(f"config key 'train.{key}': DP-SGD steps on one Poisson batch in float32 "
                          "(train.grad_accum=1, train.mixed_precision=no)")
    ids = {str(i) for i in range(cfg.partition.num_clients)}
    if t.dp_sgd_clients is not None and (not isinstance(t.dp_sgd_clients, list) or not {str(c) for c in t.dp_sgd_clients} <= ids):
        raise ConfigError(f"config key 'train.dp_sgd_clients': expected a list of client ids 0..{len(ids) - 1} or null, "
                          f"got {t.dp_sgd_clients!r}")
    for kind, name in (("strategy", cfg.federated.strategy), ("aggregation", cfg.federated.aggregation)):
        if chosen(cfg)[name].loss_term:
            raise ConfigError(f"config key 'federated.{kind}': {name} adds a term to the client's loss, which DP-SGD's "
                              "per-example gradients would not carry (train.dp_sgd works with the others)")
    try:
        import opacus  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"config key 'train.dp_sgd': needs opacus (pip install 'fedvlm[privacy]'; {e})") from None
