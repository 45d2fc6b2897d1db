"""The fedvlm ClientApp: Flower messages in, the client unit (``fedvlm.client``) run on this
node, replies out.

A node sets itself up once per run (`runners.node_setup.build_node`: the base model, the
node's data, its state directory) and keeps it for every later message of the run, so a
7B base is loaded once, not every round. This needs a ClientApp process that lives across
messages: Flower's simulation runtime (its actors keep module state) and a SuperNode with
a long-running ``flwr-clientapp``. Replies count the loads (``metrics["node_loads"]``).
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
    virtual nodes in one actor), and each node's context."""

    run_id: int | None = None
    model: LoadedModel | None = None
    nodes: dict[int, Node] = {}
    loads: int = 0


def node_for(context: Context) -> Node:
    if _Loaded.run_id != context.run_id:
        _Loaded.run_id, _Loaded.model, _Loaded.nodes = context.run_id, None, {}
    if context.node_id not in _Loaded.nodes:
        cfg = config_from_run_config(context.run_config)
        node_config = dict(context.node_config)
        node_config.setdefault("state-dir", str(run_dir_of(context.run_config) / "clients"))
        node = build_node(cfg, node_config, _Loaded.model)
        if _Loaded.model is None:
            _Loaded.loads += 1
            _Loaded.model = LoadedModel(node.model, None, node.task, node.plan, node.initial_adapter, node.base)
        _Loaded.nodes[context.node_id] = node
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
    metrics = {**update.metrics, "node_loads": _Loaded.loads}
    return Message(pack(update.state, update.extras, client={"client_id": node.client_id}, metrics=metrics), reply_to=msg)


@app.evaluate()
def evaluate_message(msg: Message, context: Context) -> Message:
    node = node_for(context)
    payload, _ = unpack(msg.content)
    metrics = evaluate(payload, EvalRoundConfig.from_record(dict(msg.content["config"])), node)
    return Message(RecordDict({}) if not metrics else pack({}, {}, client={"client_id": node.client_id}, metrics=metrics),
                   reply_to=msg)
