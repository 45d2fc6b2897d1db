"""FLoRA: stacking client LoRAs, merged into the base every round."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedvlm.core.aggregate import client_weights
from fedvlm.core.base_delta import extend, send_increments, synced_after
from fedvlm.core.lora import flora_stack, lora_pairs, non_lora_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState
from fedvlm.seeds import Stream, seed_for


def append_factors(delta: AdapterState, increment: dict[str, tuple[np.ndarray, np.ndarray]], pairs) -> AdapterState:
    """Grow a factored base delta (``B A`` per layer, scaling 1) by ``increment``'s
    ``(A_inc, B_inc)`` pairs: A gains rows, B gains columns."""
    flat = {}
    for prefix, (a_inc, b_inc) in increment.items():
        a_key, b_key = pairs[prefix]
        flat[a_key], flat[b_key] = a_inc, b_inc
    return extend(delta, flat)


def fresh_lora(state: AdapterState, rng: np.random.Generator) -> AdapterState:
    """A new LoRA like PEFT's default init: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (Kaiming
    uniform with a=sqrt(5)), B = 0."""
    out = dict(state)
    for a_key, b_key in lora_pairs(state).values():
        d_in = state[a_key].shape[1]
        bound = 1.0 / np.sqrt(d_in)
        out[a_key] = rng.uniform(-bound, bound, size=state[a_key].shape).astype(state[a_key].dtype)
        out[b_key] = np.zeros_like(state[b_key])
    return out


@dataclass
class FLoRA:
    """FLoRA (Wang et al. 2024, https://arxiv.org/abs/2409.05976).

    The server stacks the clients' factors, ``A = [p_1 s A_1; ...; p_K s A_K]``,
    ``B = [B_1 ... B_K]``, so ``B A = sum_k p_k s B_k A_k`` exactly (``core.lora.flora_stack``),
    and every client merges that into its base weight; then all start a fresh LoRA. The
    merged updates accumulate in ``buffers["base_delta"]`` in factored form (rank grows by
    ``K r`` a round, never a dense d_out x d_in matrix); each client is sent the factors it
    has not applied yet as ``extras["base_increment"]`` (``core.base_delta``). Non-LoRA
    modules are averaged. The base must be full precision (a quantized base cannot absorb
    the merge).
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    lora_scaling: float = 1.0
    seed: int = 0

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(0, dict(initial), buffers={"base_delta": {}})

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return send_increments(broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng), state)

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        states, weights = [u.state for u in updates], client_weights(updates, self.weighting)
        pairs = lora_pairs(states[0])
        stack = flora_stack(states, weights, [self.lora_scaling] * len(states))
        fresh = fresh_lora(states[0], np.random.default_rng(seed_for(self.seed, Stream.FLORA_REINIT, round_num)))
        new_global = {**fresh, **non_lora_mean(states, weights)}
        return state.advance(
            round_num,
            {k: new_global[k] for k in states[0]},
            scalars=synced_after(state, updates),
            base_delta=append_factors(state.buffers["base_delta"], stack, pairs),
        )
