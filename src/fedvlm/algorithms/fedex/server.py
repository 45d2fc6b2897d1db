"""FedEx-LoRA: averaged factors plus the exact residual folded into the base."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedvlm.core.aggregate import client_weights, weighted_mean
from fedvlm.core.base_delta import send_increments, synced_after
from fedvlm.core.lora import exact_delta_factors, lora_pairs
from fedvlm.core.sampling import broadcast
from fedvlm.algorithms.flora.server import append_factors
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass
class FedExLoRA:
    """FedEx-LoRA (Singhal et al. 2024, https://arxiv.org/abs/2410.09432).

    A and B are averaged as in FedAvg, and the error of doing so,
    ``s (sum_k p_k B_k A_k - B_avg A_avg)``, is folded into the frozen base weight, so the
    global model carries the exact mean update. The paper sends that residual dense; here
    it stays factored (ALGORITHMS.md): ``B = [s p_1 B_1 ... s p_K B_K, -s B_avg]``,
    ``A = [A_1; ...; A_K; A_avg]``, rank ``(K+1) r``, accumulated in
    ``buffers["base_delta"]``; each client is sent what it has not applied yet as
    ``extras["base_increment"]`` (``core.base_delta``).
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    lora_scaling: float = 1.0

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(0, dict(initial), buffers={"base_delta": {}})

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return send_increments(broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng), state)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        states, weights = [u.state for u in updates], client_weights(updates, self.weighting)
        s = self.lora_scaling
        avg = weighted_mean(states, weights)
        pairs = lora_pairs(avg)
        residual = {}
        for prefix, (P, Q) in exact_delta_factors(states, weights, [s] * len(states)).items():
            a_key, b_key = pairs[prefix]
            b = np.hstack([P, -s * avg[b_key].astype(np.float64)]).astype(avg[b_key].dtype)
            a = np.vstack([Q, avg[a_key].astype(np.float64)]).astype(avg[a_key].dtype)
            residual[prefix] = (a, b)
        return state.advance(
            round_num,
            avg,
            scalars=synced_after(state, updates),
            base_delta=append_factors(state.buffers["base_delta"], residual, pairs),
        )
