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
import signal
import threading
from multiprocessing.connection import Client, Listener
from pathlib import Path

from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedvlm.errors import FedvlmError, error_reason
from fedvlm.flower.messages import Reply, Request


def _send(conn, header: dict, groups: dict) -> None:
    conn.send_bytes(json.dumps({**header, "groups": list(groups)}).encode())
    for arrays in groups.values():
        conn.send_bytes(save_arrays(arrays) if arrays else b"")


# The largest message part a worker or a ClientApp reads (a header, or one group of arrays):
# well above a 7B model's LoRA adapter at rank 64 in float32 (about 0.7 GB).
MAX_PART_BYTES = 4 << 30
_HEADER_BYTES = 64 << 20


def _receive(conn) -> tuple[dict, dict]:
    """A message off ``conn``; ``ValueError`` if it is not one (a header that is not a JSON
    object naming its groups, a part past its size bound), ``EOFError`` if it ends early."""
    try:
        header = json.loads(conn.recv_bytes(_HEADER_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"a message header that is not JSON ({e})") from None
    except OSError as e:  # multiprocessing says "bad message length" past the bound
        raise ValueError(f"a message header past {_HEADER_BYTES} bytes ({e})") from None
    names = header.pop("groups", None) if isinstance(header, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("a message header without its list of array groups")
    groups = {}
    for name in names:
        try:
            blob = conn.recv_bytes(MAX_PART_BYTES)
        except OSError as e:
            raise ValueError(f"array group {name!r} past {MAX_PART_BYTES} bytes ({e})") from None
        try:
            groups[name] = load_arrays(blob) if blob else {}
        except Exception as e:  # safetensors' own error for a truncated or corrupt blob
            raise ValueError(f"array group {name!r} is not safetensors ({type(e).__name__})") from None
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
        header = {k: getattr(req, k) for k in ("kind", "run_id", "node_id", "run_config", "node_config", "config", "options", "state_key", "job")}
        _send(conn, header, _groups(req.arrays, req.extras))
        try:
            header, groups = _receive(conn)
        except (ValueError, EOFError) as e:
            raise FedvlmError(f"fedvlm worker at {socket_path}: no valid reply ({e or 'connection closed'})") from None
    if "error" in header:
        raise FedvlmError(f"fedvlm worker at {socket_path}: {header['error']}")
    return Reply(header["client_id"], header["metrics"], *_ungroup(groups))


def _clear_stale(path: Path) -> None:
    """Remove ``path`` if it is a socket no process listens on (a worker killed before it
    could remove its own); anything else there is one line."""
    if not path.exists():
        return
    if path.is_socket():
        try:
            Client(str(path), family="AF_UNIX").close()
        except ConnectionRefusedError:
            path.unlink()
            return
        except OSError:
            pass
    raise FedvlmError(f"{path} exists and is not a stale fedvlm worker socket (another worker listens there, or it is "
                      "another file): choose another path")


def serve(socket_path: str, max_requests: int | None = None) -> None:
    """Answer requests on ``socket_path`` until stopped (SIGTERM or Ctrl-C remove the socket;
    a stale one left by a killed worker is replaced) or ``max_requests`` (for tests). A
    message that is malformed, truncated or past its size bound gets an error reply where
    the connection still allows one; the worker goes on serving."""
    path = Path(socket_path)
    _clear_stale(path)
    from fedvlm.flower.node_handler import NodeHandler

    handler, served = NodeHandler(), 0
    old_mask = os.umask(0o077)  # the socket: this user only
    try:
        listener = Listener(str(path), family="AF_UNIX")
    finally:
        os.umask(old_mask)
    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        with listener:
            while max_requests is None or served < max_requests:
                with listener.accept() as conn:
                    _answer(conn, handler)
                served += 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop(signum, frame):
    raise SystemExit(0)  # leaves the listener's with-block, which removes the socket


def _answer(conn, handler) -> None:
    try:
        header, groups = _receive(conn)
        arrays, extras = _ungroup(groups)
        req = Request(**header, arrays=arrays, extras=extras)
    except EOFError:  # the ClientApp went away mid-message: nobody to answer
        return
    except (ValueError, TypeError) as e:
        _try_send(conn, {"error": f"malformed message: {e}"[:500]}, {})
        return
    try:
        reply = handler.handle(req)
    except Exception as e:  # the ClientApp reports it, and the server leaves the node out
        _try_send(conn, {"error": error_reason(e)}, {})
    else:
        _try_send(conn, {"client_id": reply.client_id, "metrics": reply.metrics}, _groups(reply.arrays, reply.extras))


def _try_send(conn, header: dict, groups: dict) -> None:
    try:
        _send(conn, header, groups)
    except OSError:  # the ClientApp went away before its reply
        pass
