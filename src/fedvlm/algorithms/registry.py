"""The registry: one line per algorithm (``fedvlm.algorithms``; the facts each line can
state: `fedvlm.algorithms.base.Algorithm`)."""

from importlib.metadata import entry_points

from fedvlm.algorithms.base import Algorithm
from fedvlm.algorithms.fedadagrad.server import FedAdagrad, FedAdagradOptions
from fedvlm.algorithms.fedadam.server import FedAdam, FedAdamOptions
from fedvlm.algorithms.fedalt.client import FedALTClient
from fedvlm.algorithms.fedalt.server import FedALT, FedALTOptions
from fedvlm.algorithms.fedavg.server import FedAvg
from fedvlm.algorithms.dp_fedavg.server import DPFedAvg, DPFedAvgOptions
from fedvlm.algorithms.fedavgm.server import FedAvgM, FedAvgMOptions
from fedvlm.algorithms.fedex.server import FedExLoRA
from fedvlm.algorithms.fedprox.client import FedProxClient
from fedvlm.algorithms.fedprox.server import FedProx, FedProxOptions
from fedvlm.algorithms.fedyogi.server import FedYogi, FedYogiOptions
from fedvlm.algorithms.flora.client import BaseIncrements
from fedvlm.algorithms.flora.server import FLoRA
from fedvlm.algorithms.krum.server import Krum, KrumOptions
from fedvlm.algorithms.median.server import Median
from fedvlm.algorithms.norm_bound.server import NormBound, NormBoundOptions
from fedvlm.algorithms.scaffold.client import ScaffoldClient
from fedvlm.algorithms.secaggplus.options import SecAggPlusOptions
from fedvlm.algorithms.scaffold.server import Scaffold, ScaffoldOptions
from fedvlm.algorithms.svd.server import FlexLoRA, FlexLoRAOptions
from fedvlm.algorithms.trimmed_mean.server import TrimmedMean, TrimmedMeanOptions
from fedvlm.core.lora import A_SUFFIX, B_SUFFIX


def _plugins(group: str) -> dict[str, Algorithm]:
    """Algorithms other packages register (entry points ``name = "module:ALGORITHM"``)."""
    return {point.name: point.load() for point in entry_points(group=group)}


_ROBUST = "a robust aggregator picks among the individual updates by their values"

STRATEGIES: dict[str, Algorithm] = {
    "fedavg": Algorithm(FedAvg, paper="https://arxiv.org/abs/1602.05629"),
    "fedavgm": Algorithm(FedAvgM, options=FedAvgMOptions, paper="https://arxiv.org/abs/1909.06335"),
    "fedadam": Algorithm(FedAdam, options=FedAdamOptions, paper="https://arxiv.org/abs/2003.00295"),
    "fedyogi": Algorithm(FedYogi, options=FedYogiOptions, paper="https://arxiv.org/abs/2003.00295"),
    "fedadagrad": Algorithm(FedAdagrad, options=FedAdagradOptions, paper="https://arxiv.org/abs/2003.00295"),
    "fedprox": Algorithm(FedProx, FedProxClient, FedProxOptions, loss_term=True, paper="https://arxiv.org/abs/1812.06127"),
    "scaffold": Algorithm(Scaffold, ScaffoldClient, ScaffoldOptions, paper="https://arxiv.org/abs/1910.06378",
                          not_a_sum="its control variates go up beside the update, outside the sum (unclipped, unmasked)"),
    # robust aggregation, of each LoRA layer's product s B A (core/robust.py):
    "median": Algorithm(Median, paper="https://arxiv.org/abs/1803.01498", not_a_sum=_ROBUST),
    "trimmed_mean": Algorithm(TrimmedMean, options=TrimmedMeanOptions, paper="https://arxiv.org/abs/1803.01498",
                              not_a_sum=_ROBUST),
    "krum": Algorithm(Krum, options=KrumOptions, paper="https://arxiv.org/abs/1703.02757", not_a_sum=_ROBUST),
    "norm_bound": Algorithm(NormBound, options=NormBoundOptions, paper="https://arxiv.org/abs/1911.07963",
                            not_a_sum=_ROBUST),
    **_plugins("fedvlm.strategies"),
}

VARIANTS: dict[str, Algorithm] = {
    "naive": Algorithm(mixed_ranks=True, connector_stages=True, paper="https://arxiv.org/abs/2305.05644"),  # FedIT
    "svd": Algorithm(FlexLoRA, options=FlexLoRAOptions, mixed_ranks=True, connector_stages=True, paper="https://arxiv.org/abs/2402.11505",
                     not_a_sum="FlexLoRA truncates the mean of the clients' products by SVD, which is not linear"),
    "ffa": Algorithm(frozen=(A_SUFFIX,), paper="https://arxiv.org/abs/2403.12313"),
    "fedsa": Algorithm(local=(B_SUFFIX,), paper="https://arxiv.org/abs/2410.01463"),
    "flora": Algorithm(FLoRA, BaseIncrements, merges_into_base=True, paper="https://arxiv.org/abs/2409.05976",
                       not_a_sum="FLoRA stacks every client's factors, each one as the client sent it"),
    "fedex": Algorithm(FedExLoRA, BaseIncrements, merges_into_base=True, paper="https://arxiv.org/abs/2410.09432",
                       not_a_sum="FedEx-LoRA's residual is built from each client's own product"),
    "fedalt": Algorithm(FedALT, FedALTClient, FedALTOptions, personal=True, loss_term=True, paper="https://arxiv.org/abs/2503.11880",
                        not_a_sum="FedALT sends each client the others' own adapters (its rest of world)"),
    **_plugins("fedvlm.variants"),
}


# Client-level privacy around the run's strategy (federated.privacy)
PRIVACY: dict[str, Algorithm] = {
    "dp_fedavg": Algorithm(DPFedAvg, options=DPFedAvgOptions, paper="https://arxiv.org/abs/1710.06963"),
}

# Secure aggregation on the Flower engines (federated.secure_aggregation): the server sees
# the weighted sum of the round's updates only (fedvlm/flower/secagg.py hosts Flower's protocol)
SECURE_AGGREGATION: dict[str, Algorithm] = {
    "secaggplus": Algorithm(options=SecAggPlusOptions, paper="https://eprint.iacr.org/2020/704"),
}


def client_sides() -> list[type]:
    """Every registered client side, once each, in registry order. The client unit builds
    those whose ``applies`` says this round's message asks for them."""
    sides = [a.client for a in (*STRATEGIES.values(), *VARIANTS.values()) if a.client is not None]
    return list(dict.fromkeys(sides))


def option_fields() -> dict[str, object]:
    """Every option name any registered algorithm takes, with its type hint: the keys the
    config's ``federated`` section accepts beside its own."""
    from dataclasses import fields
    from typing import get_type_hints

    out = {}
    for algorithm in (*STRATEGIES.values(), *VARIANTS.values(), *PRIVACY.values(), *SECURE_AGGREGATION.values()):
        if algorithm.options is not None:
            hints = get_type_hints(algorithm.options)
            out.update({f.name: hints[f.name] for f in fields(algorithm.options)})
    return out
