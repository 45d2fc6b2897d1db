"""The in-process simulator: one base model in memory, adapter state swapped per client.

Memory does not grow with the number of clients: a client is a list of row indices plus,
for stateful algorithms, files in its own directory of the run.
"""

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fedvlm.client import EvalRoundConfig, kept, personalized
from fedvlm.client import evaluate as client_evaluate
from fedvlm.client import train as client_train
from fedvlm.algorithms.flora.client import MergedBase
from fedvlm.algorithm_config import algorithm_options, privacy_noise, server_kwargs, server_side
from fedvlm.config import Config, check_in_process, save_config
from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.sharing import PlannedStrategy
from fedvlm.core.sampling import expected_participation
from fedvlm.algorithms.registry import PRIVACY, VARIANTS
from fedvlm.core.strategy import Strategy
from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.core.validate import validate_update
from fedvlm.engine import backdoor
from fedvlm.engine.faults import assigned
from fedvlm.errors import FedvlmError, UpdateError, error_reason
from fedvlm.models.adapter import save_adapter, set_adapter_state
from fedvlm.algorithms.fedalt.export import save_personalized
from fedvlm.engine import rundir
from fedvlm.engine.base_delta import export_merged
from fedvlm.engine.records import personalized_summary
from fedvlm.engine.client import node_of, round_config
from fedvlm.engine.federation import Federation, build_federation
from fedvlm.seeds import Stream, seed_for
from fedvlm.train.evaluate import evaluate


def make_strategy(cfg: Config, num_clients: int, client_sizes: dict[str, int] | None = None) -> Strategy:
    """The run's server side; with ``federated.privacy``, wrapped in it (the inner strategy
    then offers every client, and the wrapper samples them)."""
    algorithm = server_side(cfg)[1]
    kwargs = server_kwargs(cfg, num_clients, client_sizes)
    if cfg.federated.privacy == "none":
        return algorithm.server(**kwargs)
    inner = algorithm.server(**{**kwargs, **{k: v for k, v in (("fraction", 1.0), ("min_clients", 1)) if k in kwargs}})
    privacy = PRIVACY[cfg.federated.privacy]
    return privacy.server(inner, num_clients, algorithm_options(cfg, privacy), privacy_noise(cfg),
                          cfg.federated.fraction, cfg.run.seed)


class InProcessClients:
    """The simulator's way of reaching clients: every client's node lives in this process
    and shares the one model; the client unit is called directly."""

    def __init__(self, cfg: Config, fed: Federation, store):
        self.fed, self.store, self.show = fed, store, cfg.run.progress
        self.sizes = {cid: len(client.train) for cid, client in fed.clients.items()}  # training-set sizes

    def train(self, messages: dict[str, tuple], round_num: int) -> tuple[list[ClientUpdate], dict[str, str]]:
        """``messages``: client id -> (payload, extras, RoundConfig). Returns the updates and
        the clients that failed, with why: an error the client raised, or (an injected
        hang) no reply before the round's deadline, as on Flower."""
        updates, failed = [], {}
        for cid in tqdm(messages, desc=f"round {round_num} clients", leave=False, disable=not self.show):
            payload, extras, config = messages[cid]
            if config.fault == "hang":  # one process cannot wait out a client; it is late by definition
                failed[cid] = LATE
                continue
            bar = tqdm(desc=f"client {cid} steps", leave=False, disable=not self.show)
            try:
                updates.append(client_train(
                    payload, extras, config, node_of(self.fed, cid, self.store),
                    on_step=lambda loss: bar.update(1) or bar.set_postfix(loss=f"{loss:.3f}"),
                ))
            except Exception as e:  # noqa: BLE001 - a client's failure is its round's, not the run's
                failed[cid] = f"error: {error_reason(e)}"
            bar.close()
        return updates, failed

    def kept(self, round_num: int) -> dict[str, AdapterState]:
        """Client id -> the trained arrays it keeps to itself, as of after ``round_num``."""
        return {cid: kept(round_num, node_of(self.fed, cid, self.store)) for cid in self.fed.clients}

    def personalized(self, shared: AdapterState, round_num: int, extras: dict | None = None):
        """(client id, its own model after ``round_num``: ``shared`` over what it keeps, with
        what the server sends it, ``extras[client id]``), one client at a time."""
        for cid in self.fed.clients:
            yield cid, personalized(shared, round_num, node_of(self.fed, cid, self.store), (extras or {}).get(cid))

    def evaluate(self, shared: AdapterState, config: EvalRoundConfig, extras: dict | None = None):
        """The function that evaluates each client's own model on its local test split
        (clients without one left out). Here it runs when called; another engine starts
        its clients' evaluations at once and collects them when called."""

        def results() -> dict[str, dict]:
            local = {cid: client_evaluate(shared, config, node_of(self.fed, cid, self.store), (extras or {}).get(cid))
                     for cid in self.fed.clients}
            return {cid: m for cid, m in local.items() if m}

        return results


def train_round(
    cfg: Config, clients, client_ids: list[str], strategy: Strategy, state, rng, round_num: int, participation: dict[str, int]
) -> tuple:
    """One round's training: configure, each sampled client trains (through ``clients``,
    `InProcessClients` or another engine's), validate, aggregate.

    ``participation`` counts the rounds each client has trained so far (its data stream and
    schedule position); the sampled clients' counts go up by one. Returns the new server
    state and the round's record (per-client metrics and bytes, failed clients).
    """
    instructions = strategy.configure(round_num, state, client_ids, rng)
    f = cfg.federated
    schedule_rounds = expected_participation(f.rounds, len(client_ids), f.fraction, f.min_clients)
    faults = assigned(f.faults, Stream.FAULTS, cfg.run.seed, round_num, client_ids)
    attacks = assigned(f.attacks, Stream.ATTACKS, cfg.run.seed, round_num, client_ids)
    messages = {}
    for cid, instruction in instructions.items():
        instruction.config = {
            **instruction.config, "rounds_done": participation[cid], "schedule_rounds": schedule_rounds
        }
        messages[cid] = (instruction.payload, instruction.extras,
                         round_config(cfg, instruction, round_num, cid, faults.get(cid), attacks.get(cid)))
    received, failed = clients.train(messages, round_num)
    updates = valid_updates(received, state, strategy, cfg.federated.max_norm_ratio, failed)
    failed = {cid: failed[cid] for cid in messages if cid in failed}  # in sampling order
    if len(updates) < min(f.min_clients, len(messages)):  # (DP's Poisson sampling may pick fewer)
        raise TooFewClients(
            f"round {round_num}: {len(updates)} of {len(messages)} clients answered with a valid update, fewer than "
            f"federated.min_clients ({f.min_clients}); left out: "
            + "; ".join(f"{cid} ({why})" for cid, why in failed.items())
        )
    for update in updates:
        participation[update.client_id] += 1
    record = {
        "bytes_up": sum(u.metrics["bytes_up"] for u in received),
        "bytes_down": sum(u.metrics["bytes_down"] for u in received),
        "clients": {u.client_id: u.metrics for u in updates},
    }
    if failed:
        record["failed"] = failed
    attackers = {cid: m[2].attack for cid, m in messages.items() if m[2].attack}
    if attackers:
        record["attackers"] = attackers
    new = strategy.aggregate(round_num, state, updates)
    if not all(np.isfinite(a).all() for a in new.global_state.values()):
        raise FedvlmError(f"round {round_num}: the aggregate of valid updates is not finite; the run stopped before writing it")
    if f.privacy != "none":
        record["privacy"] = privacy_record(cfg, new.scalars, round_num, len(messages))
    if f.secure_aggregation != "none":
        record["secure_aggregation"] = f.secure_aggregation
    return new, record


def privacy_record(cfg: Config, scalars: dict, round_num: int, sampled: int) -> dict:
    """What DP-FedAvg spent so far: (epsilon, delta) after ``round_num`` rounds from the
    accountant, with the round's noise multiplier, clipping norm and clipped updates."""
    from fedvlm.algorithms.dp_fedavg.accountant import epsilon

    options = algorithm_options(cfg, PRIVACY[cfg.federated.privacy])
    z = scalars["dp_noise_multiplier"]  # the strategy's, calibrated once
    return {"epsilon": epsilon(z, cfg.federated.fraction, round_num, options.dp_delta, options.dp_accountant),
            "delta": options.dp_delta, "noise_multiplier": z, "clip": scalars["dp_round_clip"],
            "clipped": scalars["dp_clipped"], "sampled": sampled, "accountant": options.dp_accountant,
            "noise": options.dp_noise}


class TooFewClients(FedvlmError):
    """A round with fewer valid updates than ``federated.min_clients``."""


LATE = "no reply before the round deadline"


def valid_updates(received: list[ClientUpdate], state, strategy, max_norm_ratio: float | None, failed: dict) -> list:
    """The updates that pass validation (`core.validate`) and, with ``max_norm_ratio``,
    whose change from the global adapter is at most that many times the median change of
    the round's other valid updates; the rest go into ``failed`` with why."""
    expected = strategy.expected_extras(state) if hasattr(strategy, "expected_extras") else None
    valid = []
    for update in received:
        try:
            validate_update(update, state.global_state, expected)
            valid.append(update)
        except UpdateError as e:
            failed[update.client_id] = str(e)
    if max_norm_ratio is None or len(valid) < 2:
        return valid
    norms = [float(np.sqrt(sum(np.sum((u.state[k].astype(np.float64) - state.global_state[k]) ** 2)
                               for k in state.global_state))) for u in valid]
    kept = []
    for i, update in enumerate(valid):
        others = float(np.median(norms[:i] + norms[i + 1:]))
        if norms[i] > max_norm_ratio * others:
            failed[update.client_id] = (f"client {update.client_id}: update norm {norms[i]:.3g} is {norms[i] / others:.3g} "
                                        f"times the median of the others' (federated.max_norm_ratio {max_norm_ratio:g})")
        else:
            kept.append(update)
    return kept


def evaluate_global(cfg: Config, fed: Federation, full: AdapterState, shared: AdapterState, round_num: int, clients,
                    extras: dict | None = None) -> dict:
    """The global adapter ``full`` on the pooled test set (the server holds it), and each
    client's own model on its local test split, evaluated by the client unit from what the
    server sends down (``shared``, and per client ``extras``): the global model, or for a
    personalized method such as FedSA-LoRA the client's own."""
    e = cfg.eval
    config = EvalRoundConfig(round_num, e.batch_size, e.max_new_tokens, e.answer_span, list(e.caption_types),
                             cfg.train.mixed_precision, e.references)
    local = clients.evaluate(shared, config, extras) if e.local else None
    set_adapter_state(fed.model, full)
    result = evaluate(fed.task, fed.model, fed.test_ds, fed.pooled_test, e.batch_size, e.max_new_tokens, e.answer_span,
                      e.caption_types, cfg.train.mixed_precision, e.references)
    for target in backdoor.targets(cfg.federated.attacks):
        result.setdefault("backdoor", {})[target] = backdoor.success_rate(
            fed.task, fed.model, fed.test_ds, fed.pooled_test, target, e.batch_size, e.max_new_tokens, e.answer_span,
            cfg.train.mixed_precision)
    if local is not None:
        result["clients"] = local()
        summary = personalized_summary(result["clients"])
        if summary is not None:
            result["personalized"] = summary
    return result


def evaluation_extras(strategy, state, client_ids: list[str]) -> dict:
    """What the strategy sends each client to evaluate (and export) its own model with
    after a round (FedALT: its fresh rest of world); none for most."""
    return strategy.evaluation_extras(state, client_ids) if hasattr(strategy, "evaluation_extras") else {}


def server_arrays(state) -> AdapterState:
    """What the server holds of the model: the exchanged arrays and a two-stage run's
    frozen connector."""
    return {**state.buffers.get("frozen", {}), **state.global_state}


def shared_state(state, aggregation: str) -> AdapterState:
    """What the server sends every client of the model (`server_arrays`); nothing where
    every client's model is its own (FedALT)."""
    return {} if VARIANTS[aggregation].personal else server_arrays(state)


def full_states(cfg: Config, fed: Federation, state, clients, round_num: int) -> AdapterState:
    """The global adapter as a model loads it.

    The server only holds the exchanged arrays (and a two-stage run's frozen connector);
    the rest is the shared initialization (FFA-LoRA's A, untrained parts). Where a variant
    keeps trained arrays on the clients (FedSA-LoRA's B) there is no global model; as a
    reference the server asks every client for what it keeps and uses the plain mean (the
    clients' personalized evaluations are the method's own numbers). That reply is
    evaluation traffic, not counted in the round's ``bytes_up``.
    """
    shared = server_arrays(state)
    if not VARIANTS[cfg.federated.aggregation].local:
        return {**fed.initial_adapter, **shared}
    own = [{**fed.initial_adapter, **arrays} for arrays in clients.kept(round_num).values()]
    if not own:
        return {**fed.initial_adapter, **shared}
    return {**weighted_mean(own, [1.0] * len(own)), **shared}


def save_global_adapter(cfg: Config, fed: Federation, full: AdapterState, state, out_dir: Path) -> None:
    """Write the global model as one standard PEFT adapter; for FLoRA / FedEx-LoRA the
    updates merged into the base go into it too (a higher-rank LoRA)."""
    delta = state.buffers.get("base_delta", {})
    adapter, overrides = export_merged(full, delta, cfg.lora.alpha / cfg.lora.r)
    save_adapter(fed.model, adapter, out_dir, overrides)


def save_round_adapters(cfg: Config, fed: Federation, run_dir: Path, full, state, round_num: int):
    # No "best" adapter: picking a round by its test accuracy would report a number
    # selected on the test set itself.
    adapters = run_dir / "adapters"
    save_global_adapter(cfg, fed, full, state, adapters / f"round_{round_num:04d}")
    rundir.rotate_round_adapters(adapters, cfg.eval.keep_last)


def run_simulation(cfg: Config, run_dir: Path, resume: bool = False, fed: Federation | None = None) -> Federation:
    """Run (or continue) the federated job of ``cfg`` in ``run_dir``; returns the federation
    so that baselines can reuse the loaded model and data."""
    check_in_process(cfg)
    fed = fed or build_federation(cfg)
    clients = InProcessClients(cfg, fed, rundir.ClientStore(run_dir / "clients"))
    run_rounds(cfg, run_dir, fed, clients, list(fed.clients), resume)
    return fed


def open_trackers(cfg: Config, run_dir: Path):
    """The run's experiment trackers (``run.report_to``), or None."""
    if not cfg.run.report_to:
        return None
    from dataclasses import asdict

    from fedvlm.config import config_text
    from fedvlm.engine.trackers import Trackers

    return Trackers(list(cfg.run.report_to), asdict(cfg), config_text(cfg), run_dir, run_dir.name)


def append_record(run_dir: Path, record: dict, trackers) -> None:
    """A round's record into metrics.jsonl, then to the run's trackers."""
    rundir.append_metrics(run_dir, record)
    if trackers is not None:
        trackers.log(record)


def run_rounds(cfg: Config, run_dir: Path, fed: Federation, clients, client_ids: list[str], resume: bool = False) -> None:
    """The server's loop, whatever the engine: ``fed`` is what the server holds (the model
    it evaluates, the pooled test set, the initial adapter), ``clients`` how it reaches
    the clients ``client_ids`` (`InProcessClients`, or Flower's)."""
    strategy = PlannedStrategy(make_strategy(cfg, len(client_ids), clients.sizes), fed.plan, fed.initial_adapter)
    show = cfg.run.progress
    aggregation = cfg.federated.aggregation
    merged = None  # the base weights the clients' and the server's merged deltas go into
    if VARIANTS[aggregation].merges_into_base:  # (a Federation built for another run may lack it)
        fed.merged_base = merged = fed.merged_base or MergedBase(fed.model, f"federated.aggregation={aggregation}")
    trackers = open_trackers(cfg, run_dir)
    if resume:
        state, rng_state, extra = rundir.load_checkpoint(run_dir)
        rng = np.random.default_rng()
        rng.bit_generator.state = rng_state
        torch.set_rng_state(torch.tensor(extra["torch_rng"], dtype=torch.uint8))
        participation = extra["participation"]
        rundir.truncate_metrics(run_dir, state.round)
    else:
        if not (run_dir / rundir.CONFIG_FILE).exists():  # kept when a run starts over (resume history)
            save_config(cfg, run_dir / rundir.CONFIG_FILE)
        state = strategy.initialize()
        rng = np.random.default_rng(seed_for(cfg.run.seed, Stream.SAMPLING))
        zero_shot = evaluate_global(cfg, fed, fed.initial_adapter, fed.initial_adapter, 0, clients)
        speed = zero_shot.pop("speed")
        append_record(run_dir, {"round": 0, "eval": zero_shot, "eval_speed": speed}, trackers)
        participation = {cid: 0 for cid in client_ids}
    rounds = tqdm(range(state.round + 1, cfg.federated.rounds + 1), desc="rounds", disable=not show,
                  initial=state.round, total=cfg.federated.rounds)
    for round_num in rounds:
        start = time.perf_counter()
        state = strategy.begin_round(round_num, state)
        try:
            state, record = train_round(cfg, clients, client_ids, strategy, state, rng, round_num, participation)
        except TooFewClients as e:
            raise TooFewClients(f"{e}; the run stopped after round {round_num - 1} (continue with --resume {run_dir})") from None
        if merged is not None:  # clients applied what they were sent; the server evaluates its own
            merged.apply(state.buffers["base_delta"])
        train_seconds = time.perf_counter() - start
        full = full_states(cfg, fed, state, clients, round_num)
        result = evaluate_global(cfg, fed, full, shared_state(state, aggregation), round_num, clients,
                                 evaluation_extras(strategy, state, client_ids))
        if state.scalars.get("truncation_error") is not None:
            record["truncation_error"] = state.scalars["truncation_error"]
        rounds.set_postfix(acc=f"{result['accuracy']:.3f}")
        record = {
            "round": round_num,
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            **record,
            "eval_speed": result.pop("speed"),  # the pooled evaluation's generation
            "eval": result,
        }
        save_round_adapters(cfg, fed, run_dir, full, state, round_num)
        append_record(run_dir, record, trackers)
        rundir.save_checkpoint(
            run_dir, state, rng,
            {"torch_rng": torch.get_rng_state().tolist(), "participation": participation},
        )
    full = full_states(cfg, fed, state, clients, cfg.federated.rounds)
    save_global_adapter(cfg, fed, full, state, run_dir / "adapters" / "final")
    if trackers is not None:
        trackers.finish(run_dir / "adapters" / "final")
    if VARIANTS[aggregation].personalized:  # each client reports its own model
        fresh = evaluation_extras(strategy, state, client_ids)
        for cid, adapter in clients.personalized(shared_state(state, aggregation), cfg.federated.rounds, fresh):
            save_personalized(fed.model, adapter, run_dir / "adapters" / "personalized" / cid)
    if merged is not None:
        merged.apply({})  # give the shared model its original base back (for baselines)
    set_adapter_state(fed.model, full)
