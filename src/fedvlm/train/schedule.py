"""Learning-rate schedules over a client's steps counted across all rounds."""

import math


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, schedule: str) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    The step counts across rounds (round t's first local step is ``(t-1) * local_steps``),
    so the schedule is continuous over the whole federated run rather than restarting
    every round. Linear warmup, then ``constant``, ``linear`` decay to 0, or ``cosine``
    decay to 10% of ``lr``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return lr * (1.0 - progress)
    if schedule == "cosine":
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}")
