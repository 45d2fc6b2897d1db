"""FlexLoRA: the exact weighted LoRA update, truncated back to a rank by SVD."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.aggregate import client_weights
from fedvlm.core.lora import A_SUFFIX, pad_rank, svd_aggregate
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class FlexLoRAOptions:
    """FlexLoRA's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    server_rank: int | None = None  # None: the clients' rank
    error_feedback: bool = False


@dataclass
class FlexLoRA:
    """FlexLoRA (Bai et al. 2024, https://arxiv.org/abs/2402.11505), FedAvg's server with
    exact LoRA aggregation.

    Averaging A and B separately (FedIT) is not the mean of the clients' updates
    ``s B_k A_k``. Here the server forms the exact weighted ``dW`` in factored form and
    truncates it to ``server_rank`` by SVD (``core.lora.svd_aggregate``); the relative
    truncation error per round is kept in ``scalars["truncation_error"]`` and, with
    ``error_feedback``, the truncated tail is carried into the next round
    (``buffers["svd_residual"]``). Other trainable modules (e.g. the projector) are averaged
    with the same weights ``p_k`` (``weighting``; ``core.aggregate.client_weights``).

    With ``server_rank`` below the clients' rank, the components past it would come back
    as zero rows of A and zero columns of B, whose gradients are both exactly zero: they
    would never train again. So every round they restart from the seeded LoRA
    initialization, A's rows as initialized (``buffers["lora_init"]``) and B's columns at
    zero, which leaves ``dW`` the truncated one and lets the clients grow new directions.
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    lora_scaling: float = 1.0  # alpha / r of the clients' adapters
    options: FlexLoRAOptions = field(default_factory=FlexLoRAOptions)

    def initialize(self, initial: AdapterState) -> ServerState:
        r = self.options.server_rank
        restart = {
            k: a[r:].copy() for k, a in initial.items()
            if r is not None and k.endswith(A_SUFFIX) and a.shape[0] > r
        }
        return ServerState(round=0, global_state=dict(initial), buffers={"lora_init": restart} if restart else {})

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        states, weights = [u.state for u in updates], client_weights(updates, self.weighting)
        client_rank = next(a.shape[0] for k, a in states[0].items() if k.endswith(A_SUFFIX))
        new_global, errors, residual = svd_aggregate(
            states,
            weights,
            [self.lora_scaling] * len(states),
            self.options.server_rank or client_rank,
            self.lora_scaling,
            error_feedback=state.buffers.get("svd_residual") if self.options.error_feedback else None,
            residual_rank=client_rank * len(states),
            with_residual=self.options.error_feedback,
        )
        new_global = pad_rank(new_global, client_rank)
        for key, rows in state.buffers.get("lora_init", {}).items():
            new_global[key] = np.concatenate([new_global[key][: -len(rows)], rows])
        scalars = {**state.scalars, "truncation_error": float(np.mean(list(errors.values())))}
        feedback = {"svd_residual": residual} if self.options.error_feedback else {}
        return state.advance(round_num, new_global, scalars, **feedback)
