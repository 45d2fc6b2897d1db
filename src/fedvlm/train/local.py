"""One client's local training: one explicit loop (forward, loss, backward, step)."""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from fedvlm.train.collate import to_device
from fedvlm.train.hooks import ClientHook


@dataclass
class LocalResult:
    loss: float  # mean training loss over the round's optimizer steps
    examples: int  # examples trained on this round (counting repeats)
    steps: int
    seconds: float


def train_local(
    model: torch.nn.Module,
    steps: Iterable[Sequence[dict]],
    *,
    lr_at: Callable[[int], float],
    first_step: int,
    weight_decay: float,
    max_grad_norm: float,
    hooks: Sequence[ClientHook] = (),
    on_step: Callable[[float], None] | None = None,
) -> LocalResult:
    """Train the model's trainable parameters on ``steps``.

    Each item of ``steps`` is one optimizer step's micro-batches (gradient accumulation).
    A fresh AdamW starts every round, as clients keep no optimizer state between rounds;
    the learning rate follows ``lr_at(first_step + i)`` so the schedule runs on across
    rounds.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device, dtype = next(model.parameters()).device, getattr(model, "dtype", None)
    optimizer = torch.optim.AdamW(params, lr=lr_at(first_step), weight_decay=weight_decay)
    model.train()
    start, total_loss, examples, n_steps = time.perf_counter(), 0.0, 0, 0
    for i, micro_batches in enumerate(steps):
        lr = lr_at(first_step + i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for batch in micro_batches:
            loss = model(**to_device(batch, device, dtype)).loss / len(micro_batches)
            for hook in hooks:
                extra = hook.extra_loss(model)
                if extra is not None:
                    loss = loss + extra / len(micro_batches)
            loss.backward()
            step_loss += loss.item()
            examples += batch["input_ids"].shape[0]
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for hook in hooks:
            hook.after_step(model, lr)
        total_loss += step_loss
        n_steps += 1
        if on_step is not None:
            on_step(step_loss)
    model.eval()
    return LocalResult(
        loss=total_loss / max(1, n_steps),
        examples=examples,
        steps=n_steps,
        seconds=time.perf_counter() - start,
    )
