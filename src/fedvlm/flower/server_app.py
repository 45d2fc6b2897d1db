"""The fedvlm ServerApp: fedvlm's own round loop (``engine.simulate.run_rounds``: strategy,
validation, evaluation, checkpoints, metrics) reaching the clients through Flower's Grid.

Faults: a node whose reply is an error, or that does not answer before
``federated.round_timeout`` seconds, is left out of that round's aggregation and named in
the round's ``failed`` record of metrics.jsonl; the run goes on while at least
``federated.min_clients`` answered.

Secure aggregation (``federated.secure_aggregation=secaggplus``): a round's training runs
through Flower's SecAgg+ workflow (`fedvlm.flower.secagg`); the server learns the weighted
mean of the updates only.
"""

import re
import time

from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from fedvlm.algorithm_config import algorithm_options
from fedvlm.algorithms.registry import SECURE_AGGREGATION
from fedvlm.client import EvalRoundConfig
from fedvlm.config import Config, config_text
from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import FedvlmError
from fedvlm.fileio import write_atomic
from fedvlm.engine import rundir
from fedvlm.engine.federation import build_federation
from fedvlm.flower.grid import push, short_reason
from fedvlm.flower.records import nested_metrics, pack, unpack, update_from_reply
from fedvlm.flower.run_config import config_from_run_config, run_dir_of
from fedvlm.engine.simulate import LATE, run_rounds
from fedvlm.reporting.report import write_report

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = config_from_run_config(context.run_config)
    run_dir = run_dir_of(context.run_config)
    run_dir.mkdir(parents=True, exist_ok=True)  # (a run started by hand with `flwr run`)
    resume = bool(context.run_config.get("resume", False)) and rundir.latest_round(run_dir) is not None
    stopped = run_dir / rundir.STOPPED_FILE
    stopped.unlink(missing_ok=True)
    try:
        run_on_grid(cfg, grid, run_dir, resume)
    except FedvlmError as e:  # `flwr run` does not pass it on: leave the one line where fedvlm finds it
        write_atomic(stopped, f"{e}\n")
        raise


def _order(cid: str):
    return (0, int(cid), "") if cid.isdigit() else (1, 0, cid)


class FlowerClients:
    """How the server reaches clients on Flower: one message per sampled client."""

    def __init__(self, grid: Grid, nodes: dict[str, int], timeout: float | None, min_clients: int, state_key: str = "",
                 job: str = ""):
        self.grid, self.nodes, self.timeout, self.min_clients = grid, nodes, timeout, min_clients
        self.state_key, self.job = state_key, job
        self.sizes: dict[str, int] = {}  # each client's training-set size, from its first query
        self.secure = None  # SecAgg+: (its options, federated.weighting)

    def _send(self, message_type: str, contents: dict) -> tuple[dict, dict[str, str]]:
        return self._push(message_type, contents)()

    def _push(self, message_type: str, contents: dict):
        """Push one message per client; returns the function that collects the replies as
        (client id -> reply content, client id -> why it failed)."""
        for content in contents.values():
            content["run"] = ConfigRecord({"state_key": self.state_key, "job": self.job})
        out = [Message(content, dst_node_id=self.nodes[cid], message_type=message_type) for cid, content in contents.items()]
        replies = push(self.grid, out, self.timeout)
        # a reply is the client's its message went to (an error Flower makes for a dead
        # node may come from another node id)
        client_of_message = dict(zip(replies.ids, contents))

        def collect() -> tuple[dict, dict[str, str]]:
            answered, failed = {}, {}
            for reply in replies():
                cid = client_of_message.get(reply.metadata.reply_to_message_id)
                if cid is None:
                    continue  # not a reply to this round's messages
                if reply.has_error():
                    failed[cid] = f"error: {short_reason(reply.error.reason)}"
                else:
                    answered[cid] = reply.content
            for cid in contents:
                if cid not in answered and cid not in failed:
                    failed[cid] = LATE
            return answered, failed

        return collect

    def train(self, messages: dict[str, tuple], round_num: int) -> tuple[list[ClientUpdate], dict[str, str]]:
        if self.secure is not None:
            return self._train_securely(messages, round_num)
        contents = {cid: pack(p, e, config=c.to_record(), options=c.options) for cid, (p, e, c) in messages.items()}
        answered, failed = self._send("train", contents)
        # aggregate in the order the clients were sampled, whatever order replies came in
        updates = [update_from_reply(answered[cid]) for cid in messages if cid in answered]
        return updates, failed

    def _train_securely(self, messages: dict[str, tuple], round_num: int):
        """The round's training through Flower's SecAgg+ (`fedvlm.flower.secagg`)."""
        from fedvlm.flower.secagg import train_securely

        options, weighting = self.secure
        if any(extras for _, extras, _ in messages.values()):
            raise FedvlmError(f"round {round_num}: SecAgg+ sends the adapter only; this round's messages carry extras")
        run = {"state_key": self.state_key, "job": self.job}
        contents = {cid: (p, c.to_record(), c.options, run) for cid, (p, _, c) in messages.items()}
        weights = {cid: float(self.sizes[cid]) if weighting == "data_size" else 1.0 for cid in messages}
        return train_securely(self.grid, self.nodes, contents, weights, options, self.timeout, round_num, LATE)

    def evaluate(self, shared: AdapterState, config: EvalRoundConfig, extras: dict | None = None):
        """Start every node's local evaluation (``extras[client id]``: what it evaluates its
        own model with); returns the function that collects the results (the nodes evaluate
        while the server evaluates its own)."""
        collect = self._push("evaluate", {cid: pack(shared, (extras or {}).get(cid, {}), config=config.to_record())
                                          for cid in self.nodes})

        def results() -> dict[str, dict]:
            answered, _ = collect()
            return {cid: nested_metrics(dict(answered[cid]["metrics"])) for cid in sorted(answered, key=_order) if "metrics" in answered[cid]}

        return results

    def _ask(self, ask: str, round_num: int, shared: AdapterState | None = None,
             extras: dict | None = None) -> dict[str, AdapterState]:
        """Every node's arrays in reply to a query (nodes that fail are left out)."""
        contents = {cid: pack(shared or {}, (extras or {}).get(cid, {}), config={"ask": ask, "round": round_num})
                    for cid in self.nodes}
        answered, _ = self._send("query", contents)
        return {cid: unpack(answered[cid])[0] for cid in sorted(answered, key=_order)}

    def kept(self, round_num: int) -> dict[str, AdapterState]:
        """Client id -> the trained arrays it keeps to itself, as of after ``round_num``."""
        return self._ask("kept", round_num)

    def personalized(self, shared: AdapterState, round_num: int, extras: dict | None = None):
        """(client id, its own model after ``round_num``, with ``extras[client id]``) for
        every node that answers."""
        return self._ask("personalized", round_num, shared, extras).items()


def discover(grid: Grid, expected: int, state_key: str, job: str, wait: float = 600.0) -> tuple[dict[str, int], dict[str, int]]:
    """Client id -> node id of the ``expected`` nodes, once they are all connected, and
    client id -> its training-set size."""
    deadline = time.monotonic() + wait
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise FedvlmError(f"{len(node_ids)} of partition.num_clients={expected} nodes connected after {wait:.0f} s")
        time.sleep(1.0)
    run = {"state_key": state_key, "job": job}
    queries = [Message(pack({}, {}, run=run), dst_node_id=n, message_type="query") for n in node_ids]
    nodes, sizes = {}, {}
    for reply in push(grid, queries, None)():
        if reply.has_error():
            why = short_reason(reply.error.reason)
            named = re.match(r"^(?:\S+: )?(client \S+ failed to set up: .*)", why)
            raise FedvlmError(f"{named.group(1)} (node id {reply.metadata.src_node_id})" if named
                              else f"node {reply.metadata.src_node_id} failed to set up: {why}")
        cid = str(reply.content["client"]["client_id"])
        if cid in nodes:
            raise FedvlmError(f"nodes {nodes[cid]} and {reply.metadata.src_node_id} both call themselves client {cid}")
        nodes[cid] = reply.metadata.src_node_id
        sizes[cid] = int(nested_metrics(dict(reply.content["metrics"]))["train_size"])
    return dict(sorted(nodes.items(), key=lambda item: _order(item[0]))), sizes


def run_on_grid(cfg: Config, grid: Grid, run_dir, resume: bool = False) -> None:
    fed = build_federation(cfg)  # the server's model, pooled test set and initial adapter
    state_key = rundir.node_state_key(run_dir, resume)
    job = config_text(cfg)  # the nodes read the job from the messages, never from a file the server names
    nodes, sizes = discover(grid, cfg.partition.num_clients, state_key, job)
    clients = FlowerClients(grid, nodes, cfg.federated.round_timeout, cfg.federated.min_clients, state_key, job)
    clients.sizes = sizes
    if cfg.federated.secure_aggregation != "none":
        clients.secure = (algorithm_options(cfg, SECURE_AGGREGATION[cfg.federated.secure_aggregation]), cfg.federated.weighting)
    run_rounds(cfg, run_dir, fed, clients, list(nodes), resume)
    write_report(run_dir)  # a deployment's run directory is complete without `fedvlm report`
