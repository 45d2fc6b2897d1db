"""Export of a run whose updates were merged into the base (FLoRA, FedEx-LoRA) as one
standard PEFT adapter. (The base weights themselves: ``algorithms.flora.client``.)"""

import numpy as np

from fedvlm.core.lora import lora_pairs
from fedvlm.core.types import AdapterState


def export_merged(state: AdapterState, delta: AdapterState, scaling: float) -> tuple[AdapterState, dict]:
    """One standard LoRA adapter equal to ``base delta + current LoRA``: A stacks
    ``[A_delta; A]``, B stacks ``[B_delta, s B]``, with ``lora_alpha = r`` (scaling 1).
    Returns the state and the adapter-config fields to override (``r``, ``lora_alpha``)."""
    if not delta:
        return state, {}
    out = dict(state)
    rank = None
    for a_key, b_key in lora_pairs(state).values():
        out[a_key] = np.vstack([delta[a_key], state[a_key]])
        out[b_key] = np.hstack([delta[b_key], scaling * state[b_key].astype(np.float64)]).astype(state[b_key].dtype)
        rank = out[a_key].shape[0]
    return out, {"r": rank, "lora_alpha": rank}
