"""One client's local training: one explicit loop (forward, loss, backward, step)."""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from fedvlm.models.precision import autocast, grad_scaler
from fedvlm.train import dp_sgd
from fedvlm.train.collate import to_device
from fedvlm.train.hooks import ClientHook


@dataclass
class LocalResult:
    loss: float  # mean training loss over the round's optimizer steps
    examples: int  # examples trained on this round (counting repeats)
    steps: int
    seconds: float
    data_seconds: float = 0.0  # of ``seconds``, spent waiting for the next batch


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
    mixed_precision: str = "no",
    dp: dp_sgd.DPSGD | None = None,
) -> LocalResult:
    """Train the model's trainable parameters on ``steps``.

    Each item of ``steps`` is one optimizer step's micro-batches (gradient accumulation).
    A fresh AdamW starts every round, as clients keep no optimizer state between rounds;
    the learning rate follows ``lr_at(first_step + i)`` so the schedule runs on across
    rounds. ``mixed_precision`` (no, bf16, fp16) autocasts the forward pass, fp16 with a
    loss scaler; the time spent waiting for ``steps`` to yield is ``data_seconds``.

    With ``dp`` (`fedvlm.train.dp_sgd`) each step is one Poisson batch (or none) whose
    per-example gradients opacus clips and noises instead of the whole-batch clipping.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device, dtype = next(model.parameters()).device, getattr(model, "dtype", None)
    # fused AdamW: one kernel for every parameter on a GPU (the foreach loop over a 7B
    # model's LoRA factors took a fifth of a step); the same update on the CPU
    fused = device.type == "cuda" and all(p.dtype == torch.float32 for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr_at(first_step), weight_decay=weight_decay, **({"fused": True} if fused else {}))
    scaler = grad_scaler(device, mixed_precision)  # a pass-through but for fp16
    forward = model
    if dp is not None:  # per-example gradients, clipped and noised in the optimizer
        noise = torch.Generator(device=device).manual_seed(dp.seed)
        forward, optimizer = dp_sgd.private(model, optimizer, dp.noise_multiplier, dp.max_grad_norm,
                                            dp.expected_batch_size, noise)
    model.train()
    start, total_loss, examples, n_steps = time.perf_counter(), 0.0, 0, 0
    steps = Waited(steps)
    try:
        for i, micro_batches in enumerate(steps):
            lr = lr_at(first_step + i)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for batch in micro_batches:
                with autocast(device, mixed_precision):
                    loss = forward(**to_device(batch, device, dtype)).loss / len(micro_batches)
                for hook in hooks:
                    extra = hook.extra_loss(model)
                    if extra is not None:
                        loss = loss + extra / len(micro_batches)
                scaler.scale(loss).backward()
                step_loss += loss.item()
                examples += batch["input_ids"].shape[0]
            if dp is not None:
                if not micro_batches:  # the Poisson draw picked no row: the noise alone
                    dp_sgd.empty_step(params, optimizer)
                else:
                    optimizer.step()
            else:
                scaler.unscale_(optimizer)
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            for hook in hooks:
                hook.after_step(model, lr)
            total_loss += step_loss
            n_steps += 1
            if on_step is not None:
                on_step(step_loss)
    finally:
        if dp is not None:
            forward.cleanup()  # the model is shared: no opacus hooks or attributes left on it
    model.eval()
    return LocalResult(
        loss=total_loss / max(1, n_steps),
        examples=examples,
        steps=n_steps,
        seconds=time.perf_counter() - start,
        data_seconds=steps.seconds,
    )


class Waited:
    """``items`` iterated, with ``seconds`` the time spent waiting for them."""

    def __init__(self, items: Iterable):
        self.items, self.seconds = items, 0.0

    def __iter__(self):
        items = iter(self.items)
        while True:
            asked = time.perf_counter()
            item = next(items, None)
            self.seconds += time.perf_counter() - asked
            if item is None:
                return
            yield item
