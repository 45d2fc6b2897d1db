"""Which clients take part in a round."""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedvlm.core.types import AdapterState, Instruction


def clients_per_round(num_clients: int, fraction: float, min_clients: int) -> int:
    """``max(min_clients, round(fraction * N), 1)`` capped at N: how many clients a round samples."""
    return min(num_clients, max(int(min_clients), int(round(fraction * num_clients)), 1))


def expected_participation(rounds: int, num_clients: int, fraction: float, min_clients: int) -> int:
    """Rounds a client takes part in over ``rounds``, on average, rounded up: the length of
    each client's learning-rate schedule (its own rounds, not the federation's)."""
    return math.ceil(rounds * clients_per_round(num_clients, fraction, min_clients) / num_clients)


def sample_clients(
    client_ids: Sequence[str], fraction: float, min_clients: int, rng: np.random.Generator
) -> list[str]:
    """Sample `clients_per_round` distinct clients.

    The result keeps the order of ``client_ids`` so that aggregation order (and so float
    rounding) does not depend on the draw order.
    """
    n = len(client_ids)
    k = clients_per_round(n, fraction, min_clients)
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    return [cid for i, cid in enumerate(client_ids) if i in chosen]


def sampling_plan(
    client_ids: Sequence[str], rounds: int, fraction: float, min_clients: int, rng: np.random.Generator
) -> list[list[str]]:
    """The clients `sample_clients` draws in each of ``rounds`` rounds from ``rng``: what a
    run whose strategy samples through `broadcast` will train, replayed without training."""
    return [sample_clients(client_ids, fraction, min_clients, rng) for _ in range(rounds)]


def broadcast(
    payload: AdapterState,
    client_ids: Sequence[str],
    fraction: float,
    min_clients: int,
    rng: np.random.Generator,
    **instruction: Any,
) -> dict[str, Instruction]:
    """Sample this round's clients and send each the same ``payload`` (and round config or
    extras given as ``instruction`` keywords)."""
    chosen = sample_clients(client_ids, fraction, min_clients, rng)
    return {cid: Instruction(payload=payload, **instruction) for cid in chosen}
