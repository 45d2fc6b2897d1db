"""One client's round, shared by every runner: set the payload, train, return the update."""

import math

import numpy as np
import torch

from fedvlm.config import Config, client_ranks
from fedvlm.core.compress import compress_delta
from fedvlm.core.lora import pad_rank, slice_rank
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, message_nbytes
from fedvlm.models.adapter import get_adapter_state, set_adapter_state, set_trainable, trainable_by_state_key
from fedvlm.runners.federation import torch_seed
from fedvlm.runners.rundir import ClientStore
from fedvlm.train.batches import iter_steps
from fedvlm.train.fedprox import ProximalTerm
from fedvlm.train.local import train_local
from fedvlm.train.rank_mask import RankMask, within_rank
from fedvlm.train.scaffold import ScaffoldCorrection
from fedvlm.train.schedule import lr_at


def steps_per_round(cfg: Config, num_examples: int) -> int:
    """Local optimizer steps per round: fixed, or enough for ``local_epochs`` passes."""
    t = cfg.train
    if t.local_epochs is None:
        return t.local_steps
    return max(1, math.ceil(t.local_epochs * num_examples / (t.batch_size * t.grad_accum)))


def client_start_state(cfg: Config, fed, store: ClientStore, client_id: str, round_num: int) -> AdapterState:
    """What a client holds before the server's payload: the shared seeded initialization
    (which every client regenerates; here the run's initial adapter), under FedSA-LoRA
    overlaid with the client's own B from its store. The payload replaces what travels."""
    if cfg.federated.aggregation == "fedsa":
        own = store.load(client_id, "fedsa_b", before_round=round_num)
        return {**fed.initial_adapter, **(own or {})}
    return dict(fed.initial_adapter)


def _hooks(
    model, instruction: Instruction, start: AdapterState, store: ClientStore, client_id: str, round_num: int, rank: int
):
    """Client-side algorithm hooks the instruction asks for (FedProx, SCAFFOLD)."""
    hooks, scaffold = [], None
    params = trainable_by_state_key(model)
    mu = instruction.config.get("proximal_mu", 0.0)
    if mu:
        hooks.append(ProximalTerm(params, start, mu))
    if "c" in instruction.extras:
        c = instruction.extras["c"]
        c_i = store.load(client_id, "scaffold_c", before_round=round_num)
        if c_i is None or set(c_i) != set(c):  # first round, or a new two-stage stage
            c_i = {k: np.zeros_like(v) for k, v in c.items()}
        # Control variates cover the exchanged arrays (a local-only B is left uncorrected),
        # and of those only the components within this client's rank.
        owned = within_rank({k: v.shape for k, v in c.items()}, rank)
        scaffold = ScaffoldCorrection({k: p for k, p in params.items() if k in c}, c, c_i, owned)
        hooks.append(scaffold)
    return hooks, scaffold


def run_client_round(
    cfg: Config,
    fed,
    client_id: str,
    instruction: Instruction,
    round_num: int,
    store: ClientStore,
    on_step=None,
) -> ClientUpdate:
    """Train ``client_id`` of the federation ``fed`` for one round from ``instruction``.

    Batches, dropout and any other randomness are seeded from (seed, client, round), so a
    client's round is reproducible on its own, whichever order clients run in. The data
    stream and the learning-rate schedule advance with the client's own participation:
    ``instruction.config["rounds_done"]`` earlier rounds of this client, of the
    ``schedule_rounds`` its schedule spans. What the client keeps between rounds goes to
    its ``store``, versioned by round.
    """
    t = cfg.train
    client_num = list(fed.clients).index(client_id)
    rows = fed.clients[client_id].train
    n_steps = steps_per_round(cfg, len(rows))
    first_step = instruction.config["rounds_done"] * n_steps
    total = instruction.config["schedule_rounds"] * n_steps
    rank = client_ranks(cfg).get(client_id, cfg.lora.r)
    payload = _at_rank(instruction.payload, rank, cfg.lora.r)  # what a rank-`rank` client holds
    start = {**client_start_state(cfg, fed, store, client_id, round_num), **payload}
    set_adapter_state(fed.model, start)
    set_trainable(fed.model, fed.plan.trained(start, round_num))
    hooks, scaffold = _hooks(fed.model, instruction, start, store, client_id, round_num, rank)
    mask = RankMask(trainable_by_state_key(fed.model), rank) if rank < cfg.lora.r else None
    torch.manual_seed(torch_seed([cfg.run.seed, 4, client_num, round_num]))
    steps = iter_steps(
        fed.task,
        fed.train_ds,
        rows,
        num_steps=n_steps,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        first_step=first_step,
        seed=[cfg.run.seed, 3, client_num],
    )
    result = train_local(
        fed.model,
        steps,
        lr_at=lambda s: lr_at(s, total, t.lr, t.warmup_steps, t.schedule),
        first_step=first_step,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        hooks=hooks,
        on_step=on_step,
    )
    if mask is not None:
        mask.remove()
    trained = get_adapter_state(fed.model)
    state = {k: trained[k] for k in fed.plan.exchanged(trained, round_num)}
    if cfg.federated.aggregation == "fedsa":
        own_b = {k: trained[k] for k in fed.plan.trained(trained, round_num) if k not in state}
        store.save(client_id, "fedsa_b", own_b, round_num)
    extras = {}
    if scaffold is not None:
        c_new = scaffold.new_control(start, state)
        extras["dc"] = {k: c_new[k] - scaffold.c_i[k] for k in c_new}
        store.save(client_id, "scaffold_c", c_new, round_num)
    # Only the client's own rank travels; the server sees it zero-padded to lora.r.
    own = (lambda x: slice_rank(x, rank)) if rank < cfg.lora.r else (lambda x: x)
    sent, nbytes = _send(cfg, own(state), own(payload), [client_num, round_num])
    metrics = {
        "loss": result.loss,
        "train_size": len(rows),
        "examples": result.examples,
        "steps": result.steps,
        "seconds": result.seconds,
        "rank": rank,
        "bytes_up": nbytes + message_nbytes({}, extras),
        "bytes_down": message_nbytes(own(instruction.payload), instruction.extras),
    }
    # Like a Flower client, report the training-set size; the server weights by it (or by
    # metrics["examples"], or uniformly: federated.weighting).
    return ClientUpdate(client_id, _at_rank(sent, rank, cfg.lora.r), len(rows), metrics, extras)


def _at_rank(state: AdapterState, rank: int, full_rank: int) -> AdapterState:
    """``state`` with LoRA components past ``rank`` zeroed (shapes kept at ``full_rank``)."""
    return pad_rank(slice_rank(state, rank), full_rank) if rank < full_rank else state


def _send(cfg: Config, state: AdapterState, payload: AdapterState, tags: list[int]) -> tuple[AdapterState, int]:
    """What the server receives of ``state``, and the bytes on the wire: the arrays as they
    are, or (``federated.compression``) a stochastically quantized delta from the payload."""
    f = cfg.federated
    if f.compression == "none":
        return state, message_nbytes(state, {})
    rng = np.random.default_rng([cfg.run.seed, 8, *tags])
    return compress_delta(state, payload, {"int8": 8, "int4": 4}[f.compression], f.compression_block, rng)
