"""What a node does with each kind of message, apart from how the message arrived: the
ClientApp calls it in its own process, or (node config ``worker``) forwards the message to
a long-running ``fedvlm flower worker`` on the same machine that calls it there.

A handler keeps what it has set up for the current run (one run at a time): the loaded base
model, shared by every node it serves (Flower's simulation runs several virtual nodes in
one actor), and each node's context. ``node_loads`` in every reply is the number of times
the node has been set up in this run, counted in its state directory across processes.

A node started with its own ``state-dir`` keeps each run's state in a subdirectory named by
the server's state key for the run (new for a fresh run, kept across resumes).
"""

from pathlib import Path

from fedvlm.fileio import is_one_directory_name

from fedvlm.client import EvalRoundConfig, Node, RoundConfig, evaluate, kept, personalized, train
from fedvlm.engine.federation import LoadedModel
from fedvlm.flower.messages import Reply, Request
from fedvlm.config import config_from_text
from fedvlm.flower.run_config import run_dir_of
from fedvlm.engine.node_setup import build_node, node_name


class SetupError(RuntimeError):
    """A node could not set itself up for the run (its message names the node)."""


class NodeHandler:
    def __init__(self):
        self.run_id, self.model, self.nodes, self.setups = None, None, {}, {}

    def node(self, req: Request) -> Node:
        if self.run_id != req.run_id:
            self.run_id, self.model, self.nodes, self.setups = req.run_id, None, {}, {}
        if req.node_id not in self.nodes:
            node_config = dict(req.node_config)
            if "state-dir" in node_config:  # a node's own directory, for every run it serves
                if not req.state_key or not is_one_directory_name(req.state_key):
                    raise ValueError(f"the server's state key {req.state_key!r} is not one directory name; "
                                     "this node keeps each run's state in one directory inside its own state-dir")
                node_config["state-dir"] = str(Path(node_config["state-dir"]) / req.state_key)
            else:  # a simulated node: under the run directory, as the in-process simulator
                node_config["state-dir"] = str(run_dir_of(req.run_config) / "clients")
            if not req.job:
                raise ValueError("the server sent no job (the run's config) with its message")
            try:
                node = build_node(config_from_text(req.job), node_config, self.model)
            except Exception as e:  # the server names the node by what its owner called it
                raise SetupError(f"client {node_name(node_config)} failed to set up: {e}") from e
            if self.model is None:
                self.model = LoadedModel(node.model, None, node.task, node.plan, node.initial_adapter, node.base)
            self.nodes[req.node_id] = node
            self.setups[req.node_id] = node.store.bump(f"setups.run_{req.run_id}")
        return self.nodes[req.node_id]

    def handle(self, req: Request) -> Reply:
        node = self.node(req)
        loads = {"node_loads": self.setups[req.node_id]}
        if req.kind == "query":  # who the node is; or what it keeps, or its whole own model
            ask = req.config.get("ask", "client")
            if ask == "kept":
                return Reply(node.client_id, loads, kept(int(req.config["round"]), node))
            if ask == "personalized":
                return Reply(node.client_id, loads, personalized(req.arrays, int(req.config["round"]), node, req.extras))
            if ask != "client":
                raise ValueError(f"unknown query {ask!r}")
            return Reply(node.client_id, {"train_size": len(node.train_rows), **loads})
        if req.kind == "train":
            update = train(req.arrays, req.extras, RoundConfig.from_record(req.config, req.options), node)
            return Reply(node.client_id, {**update.metrics, **loads}, update.state, update.extras)
        if req.kind == "evaluate":
            return Reply(node.client_id, evaluate(req.arrays, EvalRoundConfig.from_record(req.config), node, req.extras))
        raise ValueError(f"unknown message kind {req.kind!r}")
