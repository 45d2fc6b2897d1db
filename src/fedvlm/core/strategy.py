"""The server-side strategy interface (DESIGN.md, "The contracts")."""

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


class Strategy(Protocol):
    """A federated algorithm's server side, pure numpy.

    ``configure`` decides who trains this round and what each sampled client receives;
    ``aggregate`` folds the validated client updates into a new server state. Anything
    the strategy must remember (optimizer moments, control variates) goes in
    ``ServerState.buffers`` so that it is checkpointed with the round.
    """

    def initialize(self, initial: AdapterState) -> ServerState: ...

    def configure(
        self,
        round_num: int,
        state: ServerState,
        client_ids: Sequence[str],
        rng: np.random.Generator,
    ) -> dict[str, Instruction]: ...

    def aggregate(
        self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]
    ) -> ServerState: ...

    # Optional: ``expected_extras(state) -> {group: reference arrays}``, the extras groups
    # every client must send up with its update and what each must look like (without it,
    # every group a client sends must look like the global adapter, as SCAFFOLD's ``dc``).
