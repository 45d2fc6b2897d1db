"""The simulator's side of the client unit: a node's context from the federation, and the
round config each sampled client receives (built from the run's config on the server)."""

from fedvlm.client import Node, RoundConfig
from fedvlm.client.round_config import local_steps
from fedvlm.algorithm_config import options_record
from fedvlm.config import Config, client_ranks
from fedvlm.core.types import Instruction
from fedvlm.engine.federation import node_view


def steps_per_round(cfg: Config, num_examples: int) -> int:
    """Local optimizer steps per round for a client of ``num_examples`` training rows."""
    t = cfg.train
    return local_steps(t.local_steps, t.local_epochs, t.batch_size * t.grad_accum, num_examples)


def round_config(cfg: Config, instruction: Instruction, round_num: int, client_id: str,
                 fault: dict | None = None, attack: dict | None = None) -> RoundConfig:
    """Everything client ``client_id`` needs for ``round_num``: the run's training settings,
    its rank, the run's algorithms' options, and what the runner put in
    ``instruction.config`` (its participation so far), and the fault or attack it is told to
    commit (``fedvlm.engine.faults``)."""
    t, f = cfg.train, cfg.federated
    return RoundConfig(
        round=round_num,
        seed=cfg.run.seed,
        rounds_done=instruction.config["rounds_done"],
        schedule_rounds=instruction.config["schedule_rounds"],
        local_steps=t.local_steps,
        local_epochs=t.local_epochs or 0.0,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        lr=t.lr,
        warmup_steps=t.warmup_steps,
        schedule=t.schedule,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        rank=client_ranks(cfg).get(client_id, cfg.lora.r),
        full_rank=cfg.lora.r,
        compression=f.compression,
        compression_block=f.compression_block,
        mixed_precision=t.mixed_precision,
        options=options_record(cfg),
        fault=(fault or {}).get("kind", ""),
        attack=(attack or {}).get("kind", ""),
        attack_scale=float((attack or {}).get("scale", 1.0)),
        attack_target=str((attack or {}).get("target", "")),
        hang_seconds=(f.round_timeout or 0.0) + 5.0 if fault and fault["kind"] == "hang" else 0.0,
        dp_clip=float(instruction.config.get("dp_clip", 0.0)),
        dp_noise_std=float(instruction.config.get("dp_noise_std", 0.0)),
        **dp_sgd_fields(cfg, client_id),
    )


def dp_sgd_fields(cfg: Config, client_id: str) -> dict:
    """The round config's DP-SGD fields for ``client_id`` (none unless train.dp_sgd names it)."""
    t = cfg.train
    if not t.dp_sgd or (t.dp_sgd_clients is not None and client_id not in {str(c) for c in t.dp_sgd_clients}):
        return {}
    return {"dp_sgd": True, "dp_sgd_noise_multiplier": t.dp_sgd_noise_multiplier or 0.0,
            "dp_sgd_target_epsilon": t.dp_sgd_target_epsilon or 0.0, "dp_sgd_max_grad_norm": t.dp_sgd_max_grad_norm,
            "dp_sgd_delta": t.dp_sgd_delta}


def node_of(fed, client_id: str, store) -> Node:
    """Client ``client_id`` of the in-process federation as a node: the one shared model,
    its rows, its view of the run's client store."""
    client = fed.clients[client_id]
    return node_view(fed, client_id, list(fed.clients).index(client_id), fed.train_ds, client.train, client.test, store)
