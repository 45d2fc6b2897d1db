"""Deterministic, resumable batch order for a client.

A client's examples are read as an endless stream of epochs, each a fresh permutation
seeded by (seed, client, epoch). Round t reads the stream from where round t-1 stopped.
Nothing is stored: any position of the stream is a pure function of the seeds, so an
interrupted run resumes with exactly the batches it would have seen.
"""

from collections.abc import Iterator, Sequence

import numpy as np

from fedvlm.train.prefetch import Loading, collated


def stream_positions(num_examples: int, start: int, count: int, seed: Sequence[int]) -> np.ndarray:
    """Indices ``0..num_examples-1`` at stream positions ``start .. start+count-1``."""
    out = np.empty(count, dtype=np.int64)
    pos = start
    while pos < start + count:
        epoch, offset = divmod(pos, num_examples)
        perm = np.random.default_rng([*seed, epoch]).permutation(num_examples)
        take = min(num_examples - offset, start + count - pos)
        out[pos - start : pos - start + take] = perm[offset : offset + take]
        pos += take
    return out


def iter_steps(
    task,
    dataset,
    indices: Sequence[int],
    *,
    num_steps: int,
    batch_size: int,
    grad_accum: int,
    first_step: int,
    seed: Sequence[int],
    loading: Loading = Loading(prefetch_factor=0),
    device=None,
) -> Iterator[list[dict]]:
    """Yield ``num_steps`` optimizer steps, each ``grad_accum`` micro-batches of
    ``batch_size`` rows of ``dataset`` drawn from ``indices`` in stream order, turned into
    model inputs by ``task.training_batch``: collated inside the step or ahead of it, as
    ``loading`` says (`fedvlm.train.prefetch.collated`; the batches are the same)."""
    per_step = batch_size * grad_accum
    order = stream_positions(len(indices), first_step * per_step, num_steps * per_step, seed)
    rows_of = np.asarray(indices)[order].tolist()
    plan = [
        [rows_of[s * per_step + m * batch_size : s * per_step + (m + 1) * batch_size] for m in range(grad_accum)]
        for s in range(num_steps)
    ]
    return collated(StepBatches(task, dataset, plan), loading, device)


class StepBatches:
    """Optimizer step ``s`` -> its micro-batches, collated: what a worker process computes."""

    def __init__(self, task, dataset, plan: list[list[list[int]]]):
        self.task, self.dataset, self.plan = task, dataset, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, s: int) -> list[dict]:
        return [self.task.training_batch(self.dataset[rows]) for rows in self.plan[s]]


def poisson_plan(indices: Sequence[int], rate: float, num_steps: int, first_step: int,
                 seed: Sequence[int]) -> list[list[list[int]]]:
    """DP-SGD's batches (`fedvlm.train.dp_sgd`): at each step every index is kept with
    probability ``rate``, drawn from ``(seed, step)``, so a round's batches are a pure
    function of where it starts. One micro-batch per step, or none when nothing was drawn."""
    indices = np.asarray(indices)
    plan = []
    for step in range(first_step, first_step + num_steps):
        rows = indices[np.random.default_rng([*seed, step]).random(len(indices)) < rate].tolist()
        plan.append([rows] if rows else [])
    return plan


def iter_poisson_steps(task, dataset, indices: Sequence[int], *, num_steps: int, rate: float, first_step: int,
                       seed: Sequence[int], loading: Loading = Loading(prefetch_factor=0), device=None):
    """`iter_steps` for DP-SGD: each step one Poisson batch (`poisson_plan`)."""
    plan = poisson_plan(indices, rate, num_steps, first_step, seed)
    return collated(StepBatches(task, dataset, plan), loading, device)
