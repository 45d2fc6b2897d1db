"""FedALT: each client keeps its own LoRA and learns from a leave-one-out rest of world."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.algorithms.base import OptionError
from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.lora import A_SUFFIX, B_SUFFIX
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState

OWN = "own."  # buffer name prefix: the latest own LoRA the server has of each client


def rest_of_world_sums(owns: dict[str, AdapterState], weights: dict[str, float]) -> tuple[AdapterState, float]:
    """``S = sum_m w_m own_m`` over every client the server has heard from, and ``sum_m w_m``:
    one pass, from which each client's rest of world is a subtraction (`rest_of_world`)."""
    keys = next(iter(owns.values())).keys()
    total = {k: sum(np.float64(weights[c]) * owns[c][k].astype(np.float64) for c in owns) for k in keys}
    return total, float(sum(weights[c] for c in owns))


def rest_of_world(
    sums: AdapterState, weight_sum: float, own: AdapterState | None, weight: float, like: AdapterState
) -> AdapterState:
    """Client k's rest of world, factor-wise: ``(S - w_k own_k) / (W - w_k)``, the weighted
    mean of every other client's own LoRA (uniform weights: ``(S - own_k) / (K - 1)``, the
    FedALT reference). A client the server has not heard from gets ``S / W``; with no
    other client yet, zeros (a rest-of-world branch that adds nothing)."""
    if own is not None:
        rest = weight_sum - weight
        if rest <= 0:
            return {k: np.zeros_like(v) for k, v in like.items()}
        return {k: ((sums[k] - weight * own[k].astype(np.float64)) / rest).astype(like[k].dtype) for k in like}
    if weight_sum <= 0:
        return {k: np.zeros_like(v) for k, v in like.items()}
    return {k: (sums[k] / weight_sum).astype(like[k].dtype) for k in like}


@dataclass(frozen=True)
class FedALTOptions:
    """FedALT's options (config keys ``federated.<field>``): the per-token mixer (``learned``,
    or ``fixed`` 0.5/0.5, the paper's ablation), the weight of FedALT-VLM's
    ``|cos(A_own, A_row)|`` penalty (0: off), and how the rest of world weighs the other
    clients (``uniform`` as the reference code, or ``data_size``)."""

    fedalt_mixer: str = "learned"
    fedalt_ortho: float = 0.05
    fedalt_weighting: str = "uniform"

    def __post_init__(self):
        if self.fedalt_mixer not in ("learned", "fixed"):
            raise OptionError("fedalt_mixer", "learned or fixed", self.fedalt_mixer)
        if not self.fedalt_ortho >= 0:
            raise OptionError("fedalt_ortho", "a weight >= 0", self.fedalt_ortho)
        if self.fedalt_weighting not in ("uniform", "data_size"):
            raise OptionError("fedalt_weighting", "uniform or data_size", self.fedalt_weighting)


@dataclass
class FedALT:
    """FedALT (Bian et al. 2025, https://arxiv.org/abs/2503.11880; reference code
    jmbian/FedALT), the server side.

    Each sampled client receives only its rest of world ``RoW_k`` (``extras["row"]``, the
    LoRA factors; other trained modules such as a projector are the client's own only): the
    mean of the latest own LoRA of every other client the server has heard from, from one
    sum per round (`rest_of_world`), weighted as ``fedalt_weighting`` says. A client that was not sampled keeps
    its place in the sum with the own LoRA it last sent, and when it is sampled again
    receives the rest of world as of that round. Nothing of a client's own model comes
    down: its own LoRA and its mixer stay on the client (``fedvlm.algorithms.fedalt.client``).

    FedALT has no global model. ``global_state`` is kept as a reference only, the
    (``fedalt_weighting``-weighted) mean of every client's latest own LoRA, which the pooled
    test row of the report evaluates (without a mixer); the method's own numbers are the
    clients' personalized evaluations.
    """

    fraction: float = 1.0
    min_clients: int = 1
    options: FedALTOptions = field(default_factory=FedALTOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial), scalars={"fedalt_sizes": {}})

    def _owns(self, state: ServerState) -> dict[str, AdapterState]:
        return {name[len(OWN):]: arrays for name, arrays in state.buffers.items() if name.startswith(OWN)}

    def _weights(self, state: ServerState, clients) -> dict[str, float]:
        sizes = state.scalars.get("fedalt_sizes", {})
        return {c: 1.0 if self.options.fedalt_weighting == "uniform" else float(sizes[c]) for c in clients}

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        instructions = broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)
        rows = self.rows(state, list(instructions))
        for cid, instruction in instructions.items():
            instruction.payload = {}
            instruction.extras = {"row": rows[cid]}
        return instructions

    def rows(self, state: ServerState, client_ids: Sequence[str]) -> dict[str, AdapterState]:
        """Each of ``client_ids``'s rest of world from the own LoRAs in ``state`` (one sum)."""
        lora = {k: v for k, v in state.global_state.items() if k.endswith((A_SUFFIX, B_SUFFIX))}
        owns = {c: {k: own[k] for k in lora} for c, own in self._owns(state).items()}
        weights = self._weights(state, owns)
        sums, weight_sum = rest_of_world_sums(owns, weights) if owns else ({}, 0.0)
        return {cid: rest_of_world(sums, weight_sum, owns.get(cid), weights.get(cid, 0.0), lora) for cid in client_ids}

    def evaluation_extras(self, state: ServerState, client_ids: Sequence[str]) -> dict[str, dict[str, AdapterState]]:
        """What each client evaluates (and exports) its model with after a round: the rest of
        world freshly aggregated from that round's own LoRAs, as the reference code
        evaluates, not the one the client trained against. Nothing before any client has
        reported (round 0)."""
        if not self._owns(state):
            return {}
        return {cid: {"row": row} for cid, row in self.rows(state, client_ids).items()}

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        sizes = {**state.scalars.get("fedalt_sizes", {}), **{u.client_id: u.num_examples for u in updates}}
        state = state.advance(round_num, state.global_state, {**state.scalars, "fedalt_sizes": sizes},
                              **{OWN + u.client_id: u.state for u in updates})
        owns = self._owns(state)
        weights = self._weights(state, owns)
        reference = weighted_mean([owns[c] for c in owns], [weights[c] for c in owns])
        return state.advance(round_num, reference)
