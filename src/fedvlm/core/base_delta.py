"""The server side of merging LoRA updates into the base (FLoRA, FedEx-LoRA).

The merged updates are kept factored, ``B A`` per layer with scaling 1, and only grow: each
round appends rows to every A and as many columns to every B. A client therefore needs only
the factors appended since it last synced; the server remembers, per client, how many rows
it held when it last trained (``scalars["base_synced"]``) and sends the rest as
``extras["base_increment"]``. A client left out of some rounds catches up in one message.
"""

from collections.abc import Sequence

import numpy as np

from fedvlm.core.lora import A_SUFFIX, B_SUFFIX
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


def extend(delta: AdapterState, increment: AdapterState) -> AdapterState:
    """``delta`` with ``increment``'s factors appended: A gains rows, B gains columns."""
    out = dict(delta)
    for key, inc in increment.items():
        if key not in delta:
            out[key] = inc
        elif key.endswith(A_SUFFIX):
            out[key] = np.vstack([delta[key], inc])
        elif key.endswith(B_SUFFIX):
            out[key] = np.hstack([delta[key], inc])
        else:
            raise ValueError(f"base delta: {key} is not a LoRA factor")
    return out


def delta_rank(delta: AdapterState) -> int:
    """Rows of the factored delta (the same for every layer: each round appends equally)."""
    return next((a.shape[0] for k, a in delta.items() if k.endswith(A_SUFFIX)), 0)


def increment_since(delta: AdapterState, rows: int) -> AdapterState:
    """The factors appended after the first ``rows``: what a client holding ``rows`` lacks."""
    if rows >= delta_rank(delta):
        return {}
    return {k: a[rows:] if k.endswith(A_SUFFIX) else a[:, rows:] for k, a in delta.items()}


def send_increments(instructions: dict[str, Instruction], state: ServerState) -> dict[str, Instruction]:
    """Give each instruction the base factors its client has not applied yet."""
    synced, delta = state.scalars.get("base_synced", {}), state.buffers["base_delta"]
    for cid, ins in instructions.items():
        ins.extras = {**ins.extras, "base_increment": increment_since(delta, synced.get(cid, 0))}
    return instructions


def synced_after(state: ServerState, updates: Sequence[ClientUpdate]) -> dict:
    """``state.scalars`` with every client that answered marked as holding the base delta
    of ``state`` (the one it trained on)."""
    held = delta_rank(state.buffers["base_delta"])
    synced = {**state.scalars.get("base_synced", {}), **{u.client_id: held for u in updates}}
    return {**state.scalars, "base_synced": synced}
