"""Which clients take part in a round."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedvlm.core.types import AdapterState, Instruction


def sample_clients(
    client_ids: Sequence[str], fraction: float, min_clients: int, rng: np.random.Generator
) -> list[str]:
    """Sample ``max(min_clients, round(fraction * N))`` distinct clients, capped at N.

    The result keeps the order of ``client_ids`` so that aggregation order (and so float
    rounding) does not depend on the draw order.
    """
    n = len(client_ids)
    k = min(n, max(int(min_clients), int(round(fraction * n)), 1))
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    return [cid for i, cid in enumerate(client_ids) if i in chosen]


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
