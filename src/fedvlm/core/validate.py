"""Check a client update before it reaches a strategy."""

import numpy as np

from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import UpdateError


def _check_arrays(cid: str, what: str, arrays: AdapterState, reference: AdapterState) -> None:
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        raise UpdateError(
            f"client {cid}: {what} keys differ from the expected ones "
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


def validate_update(
    update: ClientUpdate, reference: AdapterState, extras: dict[str, AdapterState] | None = None
) -> None:
    """Raise ``UpdateError`` naming the client and key unless ``update.state`` has exactly
    the reference's keys, shapes and dtypes and finite values, the extras groups are the
    ones ``extras`` names, each like its reference there (``None``: every group sent is
    like ``reference``, as SCAFFOLD's ``dc``), and the example count is positive."""
    cid = update.client_id
    _check_arrays(cid, "update", update.state, reference)
    if extras is not None and set(update.extras) != set(extras):
        raise UpdateError(f"client {cid}: extras groups {sorted(update.extras)}, expected {sorted(extras)}")
    for group, arrays in update.extras.items():
        _check_arrays(cid, f"extras[{group}]", arrays, reference if extras is None else extras[group])
    if update.num_examples <= 0:
        raise UpdateError(f"client {cid}: num_examples must be positive, got {update.num_examples}")
