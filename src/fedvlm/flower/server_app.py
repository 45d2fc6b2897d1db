"""The fedvlm ServerApp: fedvlm's own round loop (``engine.simulate.run_rounds``: strategy,
validation, evaluation, checkpoints, metrics) reaching the clients through Flower's Grid.

Faults: a node whose reply is an error, or that does not answer before
``federated.round_timeout`` seconds, is left out of that round's aggregation and named in
the round's ``failed`` record of metrics.jsonl; the run goes on while at least
``federated.min_clients`` answered.
"""

import re
import time

from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from fedvlm.client import EvalRoundConfig
from fedvlm.config import Config, config_text
from fedvlm.core.types import AdapterState, ClientUpdate
from fedvlm.errors import FedvlmError
from fedvlm.fileio import write_atomic
from fedvlm.engine import rundir
from fedvlm.engine.federation import build_federation
from fedvlm.flower.records import nested_metrics, pack, unpack, update_from_reply
from fedvlm.flower.run_config import config_from_run_config, run_dir_of
from fedvlm.engine.simulate import LATE, run_rounds
from fedvlm.reporting.report import write_report

app = ServerApp()

# Grid.send_and_receive of flwr 1.42 pulls replies every 3 s on a deployment; a round
# exchanges messages at least twice (train, evaluate), so fedvlm polls more often.
POLL_SECONDS = 0.2


def push(grid: Grid, messages: list[Message], timeout: float | None):
    """Grid.send_and_receive in two halves: push ``messages`` now, and return the function
    that pulls their replies (every `POLL_SECONDS`, until each has one or ``timeout``
    seconds have passed since the push), so the server can work while the nodes do. The
    function's ``ids`` are the pushed messages' ids, in order."""
    ids = list(grid.push_messages(messages))
    waiting = set(ids)
    deadline = None if timeout is None else time.monotonic() + timeout

    def replies() -> list[Message]:
        pulled_all = []
        while waiting:
            pulled = list(grid.pull_messages(waiting))
            pulled_all += pulled
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if waiting and deadline is not None and time.monotonic() >= deadline:
                break
            if waiting:
                time.sleep(POLL_SECONDS)
        return pulled_all

    replies.ids = ids
    return replies


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_reason(reason: str) -> str:
    """The part of a node's error that says what went wrong. Flower's reason carries the
    whole remote traceback (through Ray's on the simulation runtime), ending in its own
    wrapper (``ClientAppException ... Message: <the error>``); the cause is that message,
    or else the last ``SomeError: message`` line. A deployed node reports
    ``<class 'X'>:<'message'>``, and a node's worker prefixes ``fedvlm worker at SOCKET:
    SomeError:``; the cause is the message inside."""
    text = _ANSI.sub("", reason or "")
    wrapped = re.findall(r"occurred\. Message: (.+)", text)
    if wrapped:
        return re.sub(r"'>'?$", "", wrapped[-1].strip()).strip()[:300]  # Ray's repr closes with '>
    bare = re.fullmatch(r"\s*<class '[^']+'>:<'(.*)'>\s*", text, re.DOTALL)
    if bare:
        return re.sub(r"^fedvlm worker at \S+: \w+: ", "", bare.group(1).strip())[:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Fault)\b[^:]*: \S", line)]
    return (causes[-1] if causes else lines[-1] if lines else "unknown error")[:300]


def _order(cid: str):
    return (0, int(cid), "") if cid.isdigit() else (1, 0, cid)


class FlowerClients:
    """How the server reaches clients on Flower: one message per sampled client."""

    def __init__(self, grid: Grid, nodes: dict[str, int], timeout: float | None, min_clients: int, state_key: str = "",
                 job: str = ""):
        self.grid, self.nodes, self.timeout, self.min_clients = grid, nodes, timeout, min_clients
        self.state_key, self.job = state_key, job
        self.sizes: dict[str, int] = {}  # each client's training-set size, from its first query

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
        contents = {cid: pack(p, e, config=c.to_record(), options=c.options) for cid, (p, e, c) in messages.items()}
        answered, failed = self._send("train", contents)
        # aggregate in the order the clients were sampled, whatever order replies came in
        updates = [update_from_reply(answered[cid]) for cid in messages if cid in answered]
        return updates, failed

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
    run_rounds(cfg, run_dir, fed, clients, list(nodes), resume)
    write_report(run_dir)  # a deployment's run directory is complete without `fedvlm report`
