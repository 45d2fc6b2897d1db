"""The client unit's training: set the payload, train locally, return the update."""

import numpy as np
import torch

from fedvlm.algorithms.dp_fedavg.client import clip_and_noise
from fedvlm.algorithms.registry import client_sides
from fedvlm.client import faults
from fedvlm.client.node import LOCAL, Node
from fedvlm.client.round_config import RoundConfig
from fedvlm.core.compress import compress_delta
from fedvlm.core.lora import pad_rank, slice_rank
from fedvlm.core.types import AdapterState, ClientUpdate, message_nbytes
from fedvlm.models.adapter import (
    get_adapter_state,
    set_adapter_state,
    set_trainable,
    trainable_by_state_key,
)
from fedvlm.seeds import Stream, seed_for, torch_seed
from fedvlm.train import dp_sgd
from fedvlm.train.batches import iter_poisson_steps, iter_steps
from fedvlm.train.local import train_local
from fedvlm.train.rank_mask import RankMask
from fedvlm.train.schedule import lr_at


def start_state(node: Node, round_num: int) -> AdapterState:
    """What the client holds before the server's payload: the shared seeded initialization,
    overlaid with the trained arrays it kept to itself (FedSA-LoRA's B) as of before
    ``round_num``. The payload replaces what travels."""
    own = node.store.load(LOCAL, before_round=round_num)
    return {**node.initial_adapter, **(own or {})}


def train(
    payload: AdapterState,
    extras: dict[str, AdapterState],
    config: RoundConfig,
    node: Node,
    on_step=None,
) -> ClientUpdate:
    """Train ``node`` for one round from the server's ``payload`` (and ``extras``).

    Batches, dropout and any other randomness are seeded from (seed, client, round), so a
    client's round is reproducible on its own, whichever order clients run in. The data
    stream and the learning-rate schedule advance with the client's own participation:
    ``config.rounds_done`` earlier rounds of this client, of the ``config.schedule_rounds``
    its schedule spans. What the client keeps between rounds goes to its store, versioned
    by round.
    """
    c, round_num = config, config.round
    faults.before_training(c.fault, node.client_id, c.hang_seconds)
    train_ds, rows = node.train_ds, node.train_rows
    if c.attack in faults.DATA_ATTACKS:
        rng = np.random.default_rng(seed_for(c.seed, Stream.ATTACK_NOISE, node.seed_id, round_num))
        if c.attack == "backdoor":
            train_ds, rows = faults.backdoor(train_ds, rows, c.attack_target, rng)
        else:
            train_ds, rows = faults.flip_labels(train_ds, rows, rng)
    n_steps = c.steps(len(rows))
    first_step = c.rounds_done * n_steps
    total = c.schedule_rounds * n_steps
    received = _at_rank(payload, c.rank, c.full_rank)  # what a rank-`rank` client holds
    start = {**start_state(node, round_num), **received}
    set_adapter_state(node.model, start)
    set_trainable(node.model, node.plan.trained(start, round_num))
    sides = [side(node, c, extras, start) for side in client_sides() if side.applies(c, extras)]
    hooks = [h for side in sides for h in side.hooks]
    mask = RankMask(trainable_by_state_key(node.model), c.rank) if c.rank < c.full_rank else None
    torch.manual_seed(torch_seed(seed_for(c.seed, Stream.TRAINING, node.seed_id, round_num)))
    dp = private(c, node, len(rows), total) if c.dp_sgd else None
    steps = _steps(c, node, train_ds, rows, n_steps, first_step, dp)
    result = train_local(
        node.model,
        steps,
        lr_at=lambda s: lr_at(s, total, c.lr, c.warmup_steps, c.schedule),
        first_step=first_step,
        weight_decay=c.weight_decay,
        max_grad_norm=c.max_grad_norm,
        hooks=hooks,
        on_step=on_step,
        mixed_precision=c.mixed_precision,
        dp=dp,
    )
    if mask is not None:
        mask.remove()
    trained = get_adapter_state(node.model)
    state = {k: trained[k] for k in node.plan.exchanged(trained, round_num)}
    kept = {k: trained[k] for k in node.plan.trained(trained, round_num) if k not in state}
    if kept:
        node.store.save(LOCAL, kept, round_num)
    extras_up = {}
    for side in sides:
        extras_up.update(side.finish(start, state))
    if c.dp_clip > 0:  # distributed DP-FedAvg: clipped, with this client's share of the noise
        rng = np.random.default_rng(seed_for(c.seed, Stream.DP_CLIENT_NOISE, node.seed_id, round_num))
        state = clip_and_noise(state, {k: start[k] for k in state}, c.dp_clip, c.dp_noise_std, rng)
    # Only the client's own rank travels; the server sees it zero-padded to full rank.
    if c.attack and not (c.attack in faults.DATA_ATTACKS and c.attack_scale == 1):
        rng = np.random.default_rng(seed_for(c.seed, Stream.ATTACK_NOISE, node.seed_id, round_num))
        state = faults.attack(c.attack, state, {k: start[k] for k in state}, c.attack_scale, rng)
    own = (lambda x: slice_rank(x, c.rank)) if c.rank < c.full_rank else (lambda x: x)
    sent, nbytes = _send(c, own(state), own(received), [node.seed_id, round_num])
    metrics = {
        "loss": result.loss,
        "train_size": len(rows),
        "examples": result.examples,
        "steps": result.steps,
        "seconds": result.seconds,
        "data_seconds": result.data_seconds,
        "rank": c.rank,
        "bytes_up": nbytes + message_nbytes({}, extras_up),
        "bytes_down": message_nbytes(own(payload), extras),
    }
    if dp is not None:  # what this client's own DP-SGD has spent, over all its rounds so far
        metrics["dp_sgd"] = {"epsilon": dp_sgd.epsilon(dp.noise_multiplier, dp.rate, first_step + n_steps, c.dp_sgd_delta),
                             "delta": c.dp_sgd_delta, "noise_multiplier": dp.noise_multiplier}
    # Like a Flower client, report the training-set size; the server weights by it (or by
    # metrics["examples"], or uniformly: federated.weighting).
    sent = _at_rank(sent, c.rank, c.full_rank)
    if c.fault:
        sent = faults.corrupt(c.fault, sent, {k: start[k] for k in sent})
    return ClientUpdate(node.client_id, sent, len(rows), metrics, extras_up)


def private(c: RoundConfig, node: Node, num_rows: int, total_steps: int) -> dp_sgd.DPSGD:
    """This round's DP-SGD settings: the noise multiplier given, or the one that spends the
    target epsilon over the client's whole schedule (``total_steps``)."""
    rate = dp_sgd.sample_rate(c.batch_size, num_rows)
    z = c.dp_sgd_noise_multiplier or dp_sgd.noise_for(c.dp_sgd_target_epsilon, rate, total_steps, c.dp_sgd_delta)
    return dp_sgd.DPSGD(z, c.dp_sgd_max_grad_norm, max(1, round(rate * num_rows)),
                        torch_seed(seed_for(c.seed, Stream.DP_SGD_NOISE, node.seed_id, c.round)), rate)


def _steps(c: RoundConfig, node: Node, train_ds, rows: list[int], n_steps: int, first_step: int, dp):
    """The round's optimizer steps: the client's stream of batches, or with DP-SGD its
    Poisson batches (as its accountant assumes)."""
    if dp is not None:
        return iter_poisson_steps(node.task, train_ds, rows, num_steps=n_steps, rate=dp.rate, first_step=first_step,
                                  seed=seed_for(c.seed, Stream.DP_SGD_BATCHES, node.seed_id),
                                  loading=node.loading, device=node.model.device)
    return iter_steps(node.task, train_ds, rows, num_steps=n_steps, batch_size=c.batch_size, grad_accum=c.grad_accum,
                      first_step=first_step, seed=seed_for(c.seed, Stream.BATCHES, node.seed_id),
                      loading=node.loading, device=node.model.device)


def _at_rank(state: AdapterState, rank: int, full_rank: int) -> AdapterState:
    """``state`` with LoRA components past ``rank`` zeroed (shapes kept at ``full_rank``)."""
    return pad_rank(slice_rank(state, rank), full_rank) if rank < full_rank else state


def _send(config: RoundConfig, state: AdapterState, payload: AdapterState, tags: list[int]) -> tuple[AdapterState, int]:
    """What the server receives of ``state``, and the bytes on the wire: the arrays as they
    are, or (``compression``) a stochastically quantized delta from the payload."""
    if config.compression == "none":
        return state, message_nbytes(state, {})
    rng = np.random.default_rng(seed_for(config.seed, Stream.COMPRESSION, *tags))
    bits = {"int8": 8, "int4": 4}[config.compression]
    return compress_delta(state, payload, bits, config.compression_block, rng)
