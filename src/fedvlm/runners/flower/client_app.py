"""The fedvlm ClientApp: Flower messages in, the client unit (``fedvlm.client``) run on this
node, replies out.

A node sets itself up once per process (`runners.node_setup.build_node`: the base model,
the node's data, its state directory) and keeps it for every later message of the run, so
a base is loaded once per process, not every round. Whether that is once per run depends
on the runtime: Flower's simulation runtime keeps its actors (and this module's state)
for the whole run; a SuperNode of flwr 1.42 starts a fresh ClientApp process for every
message, so there the base is loaded for every message (flwrlabs/flower#3670). Replies
report ``metrics["node_loads"]``, the number of times this node has been set up in the
run, counted in its state directory across processes, so the cost is visible either way.
"""

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedvlm.client import EvalRoundConfig, Node, RoundConfig, evaluate, train
from fedvlm.runners.flower.records import pack, unpack
from fedvlm.runners.flower.run_config import config_from_run_config, run_dir_of
from fedvlm.runners.federation import LoadedModel
from fedvlm.runners.node_setup import build_node

app = ClientApp()


class _Loaded:
    """What this process keeps for the current run (one run at a time): the loaded base
    model, shared by every node the process serves (Flower's simulation runs several
    virtual nodes in one actor), and each node's context and set-up count."""

    run_id: int | None = None
    model: LoadedModel | None = None
    nodes: dict[int, Node] = {}
    setups: dict[int, int] = {}


def node_for(context: Context) -> Node:
    if _Loaded.run_id != context.run_id:
        _Loaded.run_id, _Loaded.model, _Loaded.nodes, _Loaded.setups = context.run_id, None, {}, {}
    if context.node_id not in _Loaded.nodes:
        cfg = config_from_run_config(context.run_config)
        node_config = dict(context.node_config)
        node_config.setdefault("state-dir", str(run_dir_of(context.run_config) / "clients"))
        node = build_node(cfg, node_config, _Loaded.model)
        if _Loaded.model is None:
            _Loaded.model = LoadedModel(node.model, None, node.task, node.plan, node.initial_adapter, node.base)
        _Loaded.nodes[context.node_id] = node
        _Loaded.setups[context.node_id] = node.store.bump(f"setups.run_{context.run_id}")
    return _Loaded.nodes[context.node_id]


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Who this node is: its client id and training-set size."""
    node = node_for(context)
    content = pack({}, {}, client={"client_id": node.client_id}, metrics={"train_size": len(node.train_rows)})
    return Message(content, reply_to=msg)


@app.train()
def train_message(msg: Message, context: Context) -> Message:
    node = node_for(context)
    payload, extras = unpack(msg.content)
    update = train(payload, extras, RoundConfig.from_record(dict(msg.content["config"])), node)
    metrics = {**update.metrics, "node_loads": _Loaded.setups[context.node_id]}
    return Message(pack(update.state, update.extras, client={"client_id": node.client_id}, metrics=metrics), reply_to=msg)


@app.evaluate()
def evaluate_message(msg: Message, context: Context) -> Message:
    node = node_for(context)
    payload, _ = unpack(msg.content)
    metrics = evaluate(payload, EvalRoundConfig.from_record(dict(msg.content["config"])), node)
    return Message(RecordDict({}) if not metrics else pack({}, {}, client={"client_id": node.client_id}, metrics=metrics),
                   reply_to=msg)
