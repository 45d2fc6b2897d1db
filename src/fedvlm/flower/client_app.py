"""The fedvlm ClientApp: Flower messages in, the client unit (``fedvlm.client``) run on this
node, replies out.

The node's model is set up once per process and kept for every later message of the run.
Flower's simulation runtime keeps its actors for the whole run, so there the base loads
once. A SuperNode of flwr 1.42 starts a fresh ClientApp process for every message
(flwrlabs/flower#3670); with node config ``worker='<socket path>'`` the ClientApp forwards
each message to a long-running ``fedvlm flower worker`` on the node, which keeps the base
loaded for the whole run instead. ``metrics["node_loads"]`` shows which happened.

With ``federated.secure_aggregation=secaggplus``, Flower's ``secaggplus_mod`` masks the
train reply (``fedvlm.flower.secagg``).
"""

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedvlm.errors import FedvlmError, error_reason
from fedvlm.flower.messages import Request
from fedvlm.flower.records import pack, unpack
from fedvlm.flower.secagg import is_secure, read_fitins, secure_aggregation_mod, secure_reply
from fedvlm.flower.worker import ask

app = ClientApp(mods=[secure_aggregation_mod])  # SecAgg+'s exchanges through Flower's secaggplus_mod


class _Handler:
    """This process's node set-up, kept across the messages of a run; made on first use,
    so a ClientApp that forwards to a worker never imports torch."""

    handler = None

    @classmethod
    def get(cls):
        if cls.handler is None:
            from fedvlm.flower.node_handler import NodeHandler

            cls.handler = NodeHandler()
        return cls.handler


def _handle(kind: str, msg: Message, context: Context) -> Message:
    secure = kind == "train" and is_secure(msg.content)
    if secure:  # SecAgg+'s masked-upload stage: fedvlm's message inside the FitIns
        arrays, config, options, run, terms = read_fitins(msg.content)
        extras = {}
    else:
        arrays, extras = unpack(msg.content)
        config = dict(msg.content["config"]) if "config" in msg.content else {}
        options = dict(msg.content["options"]) if "options" in msg.content else {}
        run = msg.content["run"] if "run" in msg.content else {}
    node_config = dict(context.node_config)
    state_key, job = str(run.get("state_key", "")), str(run.get("job", ""))
    req = Request(kind, context.run_id, context.node_id, dict(context.run_config), node_config, config, options,
                  state_key, job, arrays, extras)
    if "worker" in node_config:
        reply = ask(str(node_config["worker"]), req)
    else:
        try:
            reply = _Handler.get().handle(req)
        except Exception as e:  # Flower reports str(e): the same line the simulator names a client by
            raise FedvlmError(error_reason(e)) from e
    if secure:
        return Message(secure_reply(reply, arrays, terms), reply_to=msg)
    if not reply.metrics:
        return Message(RecordDict({}), reply_to=msg)
    return Message(pack(reply.arrays, reply.extras, client={"client_id": reply.client_id}, metrics=reply.metrics),
                   reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Who this node is: its client id and training-set size."""
    return _handle("query", msg, context)


@app.train()
def train_message(msg: Message, context: Context) -> Message:
    return _handle("train", msg, context)


@app.evaluate()
def evaluate_message(msg: Message, context: Context) -> Message:
    return _handle("evaluate", msg, context)
