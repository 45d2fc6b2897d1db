"""The contracts every runner and strategy share (see DESIGN.md, "The contracts").

Arrays are plain numpy keyed by PEFT's own parameter names, so a state maps 1:1 to a
safetensors file, a Flower ``ArrayRecord`` and ``peft.set_peft_model_state_dict``.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

AdapterState = dict[str, np.ndarray]


@dataclass
class Instruction:
    """What the server sends one sampled client for one round.

    ``payload`` is the adapter state this client starts from (the broadcast global adapter,
    or a per-client payload such as FedALT's leave-one-out mean); ``config`` holds the
    round's scalar settings for the client (its participation so far, ...).
    """

    payload: AdapterState
    config: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, AdapterState] = field(default_factory=dict)  # e.g. SCAFFOLD's {"c": ...}


@dataclass
class ClientUpdate:
    """What one client returns after local training.

    ``state`` is the client's trained adapter (strategies that want a delta compute it
    against the payload they sent). ``extras`` holds algorithm-specific named array groups
    (for example SCAFFOLD's control-variate delta ``{"dc": ...}``); ``metrics`` scalar
    diagnostics.
    """

    client_id: str
    state: AdapterState
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, AdapterState] = field(default_factory=dict)


@dataclass
class ServerState:
    """Everything the server keeps between rounds; checkpointed after every round.

    ``global_state`` is the current global adapter. ``buffers`` holds named array groups
    owned by the strategy (momentum, Adam moments, SCAFFOLD's c, ...); ``scalars`` any
    JSON-serializable bookkeeping.
    """

    round: int
    global_state: AdapterState
    buffers: dict[str, AdapterState] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)

    def advance(
        self, round_num: int, global_state: AdapterState, scalars: dict[str, Any] | None = None, **buffers: AdapterState
    ) -> "ServerState":
        """The state after ``round_num``: a new global adapter, the named buffers replaced
        (others kept), scalars replaced if given."""
        return ServerState(
            round_num, global_state, {**self.buffers, **buffers}, self.scalars if scalars is None else scalars
        )


def state_nbytes(state: AdapterState) -> int:
    """Bytes of array data in ``state``: what crosses the wire for it, uncompressed."""
    return int(sum(a.nbytes for a in state.values()))


def message_nbytes(state: AdapterState, extras: dict[str, AdapterState]) -> int:
    """Bytes of one message's arrays: the adapter state plus every extras group."""
    return state_nbytes(state) + sum(state_nbytes(group) for group in extras.values())
