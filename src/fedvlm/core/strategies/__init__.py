"""Server strategies, one algorithm per file."""

import dataclasses
from typing import Any

from fedvlm.core.strategies.fedadagrad import FedAdagrad
from fedvlm.core.strategies.fedadam import FedAdam
from fedvlm.core.strategies.fedavg import FedAvg
from fedvlm.core.strategies.fedalt import FedALT
from fedvlm.core.strategies.fedavgm import FedAvgM
from fedvlm.core.strategies.fedex import FedExLoRA
from fedvlm.core.strategies.flora import FLoRA
from fedvlm.core.strategies.fedprox import FedProx
from fedvlm.core.strategies.fedyogi import FedYogi
from fedvlm.core.strategies.scaffold import Scaffold

STRATEGIES = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedprox": FedProx,
    "scaffold": Scaffold,
    # LoRA aggregations that change the server's state shape (federated.aggregation):
    "flora": FLoRA,
    "fedex": FedExLoRA,
    "fedalt": FedALT,
}


def build_strategy(name: str, **options: Any):
    """Instantiate strategy ``name`` with the options it has; ``None`` means its default.

    Options a strategy does not take are ignored only when unset, so a setting that would
    silently do nothing (``mu`` for FedAdam, say) is an error naming it.
    """
    cls = STRATEGIES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unused = sorted(k for k, v in options.items() if v is not None and k not in fields)
    if unused:
        raise ValueError(f"strategy {name!r} takes no option {', '.join(unused)} (it takes {', '.join(sorted(fields))})")
    return cls(**{k: v for k, v in options.items() if v is not None and k in fields})
