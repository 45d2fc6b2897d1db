"""Check a client update before it reaches a strategy."""

import numpy as np

from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import UpdateError


def validate_update(update: ClientUpdate, reference: AdapterState) -> None:
    """Raise ``UpdateError`` naming the client and key unless ``update.state`` has exactly
    the reference's keys, shapes and dtypes, finite values, and a positive example count."""
    cid = update.client_id
    missing = sorted(set(reference) - set(update.state))
    extra = sorted(set(update.state) - set(reference))
    if missing or extra:
        raise UpdateError(
            f"client {cid}: update keys differ from the global adapter "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, ref in reference.items():
        arr = update.state[name]
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise UpdateError(
                f"client {cid}: {name} has shape {arr.shape} {arr.dtype}, "
                f"expected {ref.shape} {ref.dtype}"
            )
        if not np.all(np.isfinite(arr)):
            raise UpdateError(f"client {cid}: {name} contains NaN or Inf")
    if update.num_examples <= 0:
        raise UpdateError(f"client {cid}: num_examples must be positive, got {update.num_examples}")
