"""Which adapter arrays a LoRA variant exchanges, and which stay put.

- ``naive`` / ``svd`` / ``flora`` / ``fedex``: everything trainable travels (A, B and modules
  like the projector).
- ``ffa`` (FFA-LoRA, https://arxiv.org/abs/2403.12313): every A is frozen at the shared
  seeded initialization, which each client regenerates itself; only B (and non-LoRA
  modules) is trained and sent, both ways. Averaging B is then exact.
- ``fedsa`` (FedSA-LoRA, https://arxiv.org/abs/2410.01463): only A (and non-LoRA modules)
  is shared and averaged; each client's B stays on the client, giving a personalized
  model ``W0 + s B_k A_avg``.
"""

from collections.abc import Iterable

from fedvlm.core.lora import A_SUFFIX, B_SUFFIX
from fedvlm.core.types import AdapterState

AGGREGATIONS = ("naive", "svd", "ffa", "fedsa", "flora", "fedex")


def kept_suffix(aggregation: str) -> str | None:
    """The LoRA factor that does not travel under ``aggregation`` (None: all travel)."""
    return {"ffa": A_SUFFIX, "fedsa": B_SUFFIX}.get(aggregation)


def shared_keys(keys: Iterable[str], aggregation: str) -> list[str]:
    """The keys exchanged with the server, in the given order."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r} (valid: {', '.join(AGGREGATIONS)})")
    kept = kept_suffix(aggregation)
    return [k for k in keys if kept is None or not k.endswith(kept)]


def split_state(state: AdapterState, aggregation: str) -> tuple[AdapterState, AdapterState]:
    """``(shared, kept)``: what travels and what stays on the client."""
    shared = set(shared_keys(state, aggregation))
    return (
        {k: v for k, v in state.items() if k in shared},
        {k: v for k, v in state.items() if k not in shared},
    )
