"""One client's round, shared by every runner: set the payload, train, return the update."""

import math

import numpy as np
import torch

from fedvlm.config import Config
from fedvlm.core.types import ClientUpdate, Instruction
from fedvlm.models.adapter import get_adapter_state, set_adapter_state
from fedvlm.train.batches import iter_steps
from fedvlm.train.local import train_local
from fedvlm.train.schedule import lr_at


def steps_per_round(cfg: Config, num_examples: int) -> int:
    """Local optimizer steps per round: fixed, or enough for ``local_epochs`` passes."""
    t = cfg.train
    if t.local_epochs is None:
        return t.local_steps
    return max(1, math.ceil(t.local_epochs * num_examples / (t.batch_size * t.grad_accum)))


def run_client_round(
    cfg: Config,
    model,
    processor,
    dataset,
    train_rows: list[int],
    client_id: str,
    client_num: int,
    instruction: Instruction,
    round_num: int,
    on_step=None,
) -> ClientUpdate:
    """Train ``client_id`` for one round starting from ``instruction.payload``.

    Batches, dropout and any other randomness are seeded from (seed, client, round), so a
    client's round is reproducible on its own, whichever order clients run in.
    """
    t = cfg.train
    n_steps = steps_per_round(cfg, len(train_rows))
    first_step = (round_num - 1) * n_steps
    total = cfg.federated.rounds * n_steps
    set_adapter_state(model, instruction.payload)
    torch.manual_seed(int(np.random.SeedSequence([cfg.run.seed, 4, client_num, round_num]).generate_state(1)[0]))
    steps = iter_steps(
        processor,
        dataset,
        train_rows,
        num_steps=n_steps,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        first_step=first_step,
        seed=[cfg.run.seed, 3, client_num],
    )
    result = train_local(
        model,
        steps,
        lr_at=lambda s: lr_at(s, total, t.lr, t.warmup_steps, t.schedule),
        first_step=first_step,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        on_step=on_step,
    )
    return ClientUpdate(
        client_id=client_id,
        state=get_adapter_state(model),
        num_examples=result.examples,
        metrics={
            "loss": result.loss,
            "examples": result.examples,
            "steps": result.steps,
            "seconds": result.seconds,
        },
    )
