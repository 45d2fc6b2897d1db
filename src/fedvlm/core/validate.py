"""Check a client update before it reaches a strategy."""

import numpy as np

from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import UpdateError


def _check_arrays(cid: str, what: str, arrays: AdapterState, reference: AdapterState) -> None:
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        raise UpdateError(
            f"client {cid}: {what} keys differ from the global adapter "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, ref in reference.items():
        arr = arrays[name]
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise UpdateError(
                f"client {cid}: {what} {name} has shape {arr.shape} {arr.dtype}, "
                f"expected {ref.shape} {ref.dtype}"
            )
        if not np.all(np.isfinite(arr)):
            raise UpdateError(f"client {cid}: {what} {name} contains NaN or Inf")


def validate_update(update: ClientUpdate, reference: AdapterState) -> None:
    """Raise ``UpdateError`` naming the client and key unless ``update.state`` (and every
    extras group) has exactly the reference's keys, shapes and dtypes, finite values, and
    the example count is positive."""
    cid = update.client_id
    _check_arrays(cid, "update", update.state, reference)
    for group, arrays in update.extras.items():
        _check_arrays(cid, f"extras[{group}]", arrays, reference)
    if update.num_examples <= 0:
        raise UpdateError(f"client {cid}: num_examples must be positive, got {update.num_examples}")
