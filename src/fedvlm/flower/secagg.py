"""Secure aggregation on the Flower engines (``federated.secure_aggregation=secaggplus``):
Flower's own SecAgg+ protocol carrying fedvlm's train message.

Server: fedvlm's round loop hands a round's train messages to `train_securely`, which runs
``flwr``'s ``SecAggPlusWorkflow`` for that one round (setup, key sharing, masked upload,
unmasking; four exchanges) through a thin legacy Strategy (`_OneRound`) whose FitIns are
fedvlm's messages and which keeps the unmasked weighted mean. Each answering client's
update is that mean, as in Flower's own workflow, so fedvlm's strategy (FedAvg, a server
optimizer) steps from it exactly as from the plain mean; per-client metrics (loss, sizes)
travel beside the masked vector in the clear, as Flower's do.

Node: ``secaggplus_mod`` (`secure_aggregation_mod` routes only SecAgg+ messages to it)
masks what the train handler returns. Before that, the node checks its own update
(`secure_reply`): the keys, shapes and dtypes it was sent, finite values, and within the
clipping range once weighted; the server cannot check what it cannot see, so a bad update
is the node's error and the round goes on without it (a dropout, which SecAgg+ unmasks
around).

Flower's quantisation rounds stochastically with numpy's global generator, so two runs of
one seed agree within `quantization_bound`, not bit for bit.
"""

import json

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import Code, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedvlm.algorithms.secaggplus.options import SecAggPlusOptions
from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import FedvlmError
from fedvlm.flower.grid import push, short_reason
from fedvlm.flower.messages import Reply
from fedvlm.flower.records import flat_metrics, nested_metrics

MESSAGE = "fedvlm"  # the FitIns config key holding fedvlm's train message (JSON)
FITINS, FITRES = "fitins.parameters", "fitres.parameters"
HALTED = "secure aggregation stopped: too few clients left to unmask the sum (federated.secagg_reconstruction_threshold)"


def is_secure(content: RecordDict) -> bool:
    """Whether a train message is SecAgg+'s masked-upload stage (fedvlm's message inside)."""
    return FITINS in content.array_records


def train_fitins(arrays: AdapterState, config: dict, options: dict, run: dict, terms: dict) -> FitIns:
    """A train message as the legacy FitIns the workflow sends: the arrays in sorted key
    order, the rest as one JSON string (``terms``: the client's weight, the round's
    largest weight and the clipping range, which the node checks its update against)."""
    keys = sorted(arrays)
    message = {"keys": keys, "config": config, "options": options, "run": run, "terms": terms}
    return FitIns(ndarrays_to_parameters([np.ascontiguousarray(arrays[k]) for k in keys]), {MESSAGE: json.dumps(message)})


def read_fitins(content: RecordDict) -> tuple[AdapterState, dict, dict, dict, dict]:
    """`train_fitins` read back on the node: (arrays, config, options, run, terms)."""
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    message = json.loads(str(fitins.config[MESSAGE]))
    arrays = dict(zip(message["keys"], parameters_to_ndarrays(fitins.parameters), strict=True))
    return arrays, message["config"], message["options"], message["run"], message["terms"]


def secure_reply(reply: Reply, sent: AdapterState, terms: dict) -> RecordDict:
    """The node's update as the FitRes ``secaggplus_mod`` masks, after the checks the server
    cannot make: the arrays it was sent (keys, shapes, dtypes), nothing beside them,
    finite, and each value times ``weight / max_weight`` within the clipping range."""
    who = f"client {reply.client_id}"
    if set(reply.arrays) != set(sent):
        missing, extra = sorted(set(sent) - set(reply.arrays)), sorted(set(reply.arrays) - set(sent))
        raise FedvlmError(f"{who}: SecAgg+ sums the arrays the server sent; update missing {missing[:3]}, extra {extra[:3]}")
    if reply.extras:
        raise FedvlmError(f"{who}: SecAgg+ sums the update only; got extras {sorted(reply.extras)}")
    ratio = terms["weight"] / terms["max_weight"]
    for key in sorted(sent):
        value, reference = reply.arrays[key], sent[key]
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise FedvlmError(f"{who}: update {key} is {value.dtype}{list(value.shape)}, "
                              f"expected {reference.dtype}{list(reference.shape)}")
        if not np.isfinite(value).all():
            raise FedvlmError(f"{who}: update {key} is not finite")
        top = float(np.abs(value).max(initial=0.0)) * ratio
        if top > terms["clip"]:
            raise FedvlmError(f"{who}: update {key} reaches {top:.3g} once weighted, beyond "
                              f"federated.secagg_clipping_range ({terms['clip']:g})")
    keys = sorted(sent)
    metrics = {**flat_metrics(reply.metrics), "client_id": reply.client_id}
    return RecordDict({
        FITRES: compat.parameters_to_arrayrecord(ndarrays_to_parameters([reply.arrays[k] for k in keys]), True),
        "fitres.metrics": ConfigRecord(metrics),
        "fitres.num_examples": MetricRecord({"num_examples": int(terms["weight"])}),
        "fitres.status": ConfigRecord({"code": int(Code.OK.value), "message": ""}),
    })


def secure_aggregation_mod(msg, context, call_next):
    """A ClientApp mod: SecAgg+'s messages through Flower's ``secaggplus_mod``, every other
    message straight on."""
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(msg, context, call_next)


class _OneRound(LegacyStrategy):
    """The legacy Strategy ``SecAggPlusWorkflow`` drives for one round: fedvlm's FitIns to
    each node, and the aggregate (the unmasked weighted mean, set as every result's
    parameters) kept in ``results``."""

    def __init__(self, grid, fitins: dict[int, FitIns]):
        self.grid, self.fitins, self.results = grid, fitins, None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(GridClientProxy(nid, self.grid, 0), ins) for nid, ins in self.fitins.items()]

    def aggregate_fit(self, server_round, results, failures):
        self.results = results
        return None, {}  # fedvlm's own strategy aggregates

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class _Exchanges:
    """The run's Grid as the workflow sees it: replies pulled as often as fedvlm's own
    exchanges (`push`), each error reply kept by node with why, and the bytes of each
    node's masked upload."""

    def __init__(self, grid: Grid):
        self.grid, self.errors, self.masked_bytes = grid, {}, {}

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        replies = push(self.grid, list(messages), timeout)()
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.errors[node] = f"error: {short_reason(reply.error.reason)}"
                continue
            configs = reply.content.config_records.get(RECORD_KEY_CONFIGS, {})
            if Key.MASKED_PARAMETERS in configs:
                self.masked_bytes[node] = sum(len(b) for b in configs[Key.MASKED_PARAMETERS])
        return replies


def train_securely(grid: Grid, nodes: dict[str, int], contents: dict[str, tuple], weights: dict[str, float],
                   options: SecAggPlusOptions, timeout: float | None, round_num: int,
                   late: str) -> tuple[list[ClientUpdate], dict[str, str]]:
    """One round's training under SecAgg+. ``contents``: client id -> (arrays, config,
    options, run) of its train message; ``weights``: client id -> its aggregation weight.
    Returns an update per client in the sum (each the weighted mean, in sampling order) and
    the clients left out, with why (``late``: no reply in time)."""
    shapes = {cid: {k: (a.shape, a.dtype) for k, a in c[0].items()} for cid, c in contents.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        raise FedvlmError(f"round {round_num}: SecAgg+ needs every client sent the same arrays")
    top = max(weights[cid] for cid in contents)
    fitins = {nodes[cid]: train_fitins(arrays, config, opts, run,
                                       {"weight": weights[cid], "max_weight": top, "clip": options.secagg_clipping_range})
              for cid, (arrays, config, opts, run) in contents.items()}
    strategy, exchanges = _OneRound(grid, fitins), _Exchanges(grid)
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=strategy)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: round_num})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    shares, threshold = options.workflow_counts()
    SecAggPlusWorkflow(shares, threshold, max_weight=float(top), clipping_range=options.secagg_clipping_range,
                       quantization_range=options.secagg_quantization_range,
                       modulus_range=options.secagg_modulus_range, timeout=timeout)(exchanges, context)
    client_of = {nodes[cid]: cid for cid in contents}
    updates = {}
    if strategy.results:
        keys = sorted(first)
        mean = parameters_to_ndarrays(strategy.results[0][1].parameters)
        state = {k: np.asarray(a).astype(first[k][1]) for k, a in zip(keys, mean, strict=True)}
        for proxy, fitres in strategy.results:
            cid = client_of[proxy.node_id]
            metrics = nested_metrics({k: v for k, v in fitres.metrics.items() if k != "client_id"})
            metrics["bytes_up"] = exchanges.masked_bytes.get(proxy.node_id, metrics.get("bytes_up", 0))
            updates[cid] = ClientUpdate(cid, state, int(metrics["train_size"]), metrics, {})
    failed = {}
    for cid in contents:
        if cid not in updates:
            failed[cid] = exchanges.errors.get(nodes[cid], late if strategy.results else HALTED)
    return [updates[cid] for cid in contents if cid in updates], failed
