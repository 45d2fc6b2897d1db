"""Seed helpers shared by the server and the client side."""

import numpy as np


def torch_seed(seed: list[int]) -> int:
    """One integer for ``torch.manual_seed`` from a seed sequence (``[run seed, stream, ids...]``)."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])
