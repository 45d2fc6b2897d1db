"""``fedvlm flower worker SOCKET``: a long-running process on a node that keeps the base
model loaded for the whole run, so an ephemeral ClientApp (one process per message, as
flwr 1.42's SuperNode starts them) does not reload it every round.

The ClientApp (node config ``worker='SOCKET'``) forwards each message over a Unix socket
only this user can open and waits for the reply. Messages are a JSON header and the arrays
as safetensors bytes: nothing is unpickled. The stdlib's ``multiprocessing.connection``
carries them (its ``send_bytes``/``recv_bytes``, not its pickling ``send``/``recv``).
"""

import json
import os
from multiprocessing.connection import Client, Listener
from pathlib import Path

from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedvlm.errors import FedvlmError
from fedvlm.flower.messages import Reply, Request


def _send(conn, header: dict, groups: dict) -> None:
    conn.send_bytes(json.dumps({**header, "groups": list(groups)}).encode())
    for arrays in groups.values():
        conn.send_bytes(save_arrays(arrays) if arrays else b"")


def _receive(conn) -> tuple[dict, dict]:
    header = json.loads(conn.recv_bytes())
    groups = {name: (load_arrays(blob) if (blob := conn.recv_bytes()) else {}) for name in header.pop("groups")}
    return header, groups


def _groups(arrays, extras: dict) -> dict:
    """A message's arrays as named groups on the socket (extras as ``extras.<name>``)."""
    return {"arrays": arrays, **{f"extras.{k}": v for k, v in extras.items()}}


def _ungroup(groups: dict) -> tuple:
    """The arrays and the extras of `_groups`' output."""
    return groups.get("arrays", {}), {k[len("extras."):]: v for k, v in groups.items() if k.startswith("extras.")}


def ask(socket_path: str, req: Request) -> Reply:
    """Send ``req`` to the node's worker and return its reply."""
    try:
        conn = Client(socket_path, family="AF_UNIX")
    except OSError as e:
        raise FedvlmError(f"node config 'worker': no fedvlm worker at {socket_path} ({e.strerror})") from None
    with conn:
        header = {k: getattr(req, k) for k in ("kind", "run_id", "node_id", "run_config", "node_config", "config", "options", "state_key")}
        _send(conn, header, _groups(req.arrays, req.extras))
        header, groups = _receive(conn)
    if "error" in header:
        raise FedvlmError(f"fedvlm worker at {socket_path}: {header['error']}")
    return Reply(header["client_id"], header["metrics"], *_ungroup(groups))


def serve(socket_path: str, max_requests: int | None = None) -> None:
    """Answer requests on ``socket_path`` until stopped (or ``max_requests``, for tests)."""
    path = Path(socket_path)
    if path.exists():
        raise FedvlmError(f"{path} exists (another worker, or a stale socket: remove it first)")
    from fedvlm.flower.node_handler import NodeHandler

    handler, served = NodeHandler(), 0
    old_mask = os.umask(0o077)  # the socket: this user only
    try:
        listener = Listener(str(path), family="AF_UNIX")
    finally:
        os.umask(old_mask)
    with listener:
        while max_requests is None or served < max_requests:
            with listener.accept() as conn:
                header, groups = _receive(conn)
                arrays, extras = _ungroup(groups)
                req = Request(**header, arrays=arrays, extras=extras)
                try:
                    reply = handler.handle(req)
                except Exception as e:  # the ClientApp reports it, and the server leaves the node out
                    _send(conn, {"error": f"{type(e).__name__}: {e}"[:500]}, {})
                else:
                    _send(conn, {"client_id": reply.client_id, "metrics": reply.metrics},
                          _groups(reply.arrays, reply.extras))
            served += 1
