"""Apps that SuperNodes run only when a key their owner trusts has signed them, checked by
Flower's own verification.

Flower's mechanism: ``flwr app review`` signs an app's FAB (its SHA-256 and a timestamp)
with the reviewer's Ed25519 key and files the signature on Flower Hub; a SuperLink asked to
run a Hub app (``flwr run @publisher/name==x.y.z``) fetches the FAB with its signatures from
the Hub's ``/hub/fetch-fab``; a SuperNode started with ``--trusted-entities`` (key id ->
public key) runs a FAB only if a trusted key's signature over it verifies, and answers every
message of any other run with Flower's "The FAB could not be verified". A FAB sent from a
local app directory carries no signatures, so a federation that keeps its app off the public
Hub, or has no internet, is left without the mechanism.

This module fills the Hub's two parts with files, and Flower does the rest unchanged:
`sign_fab` makes the signature ``flwr app review`` makes, with Flower's own functions, and
`AppIndex` answers Flower Hub's ``/hub/fetch-fab`` for a directory of signed FABs, so a
SuperLink whose ``FLWR_SUPERGRID_API_URL`` points at it fetches them as it fetches Hub apps.
(No library serves that protocol; Flower's server for it is its closed platform.) The index
needs no trust: it cannot forge a signature, and each node checks every one itself.
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.common.config import get_fab_config, get_metadata_from_config
from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign, load_private_key, sign_message

from fedvlm.errors import ConfigError
from fedvlm.fileio import write_atomic
from fedvlm.flower.deploy import _write_new, refuse_existing

FETCH = "/hub/fetch-fab"  # Flower Hub's endpoint a SuperLink asks for an app spec's FAB
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_key_id(key_id: str) -> None:
    if not KEY_ID.match(key_id):
        raise ConfigError(f"key id {key_id!r}: expected letters, digits, '_', '.' or '-'")


def make_signing_key(out_dir: Path, name: str) -> tuple[Path, Path]:
    """An app signer's Ed25519 key pair: ``<name>`` (private, OpenSSH format as ``flwr app
    review`` reads it; it stays with the signer) and ``<name>.trusted.yaml``, the line a
    SuperNode's ``--trusted-entities`` file holds for it (``<name>: ssh-ed25519 ...``)."""
    _check_key_id(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    private, trusted = out_dir / name, out_dir / f"{name}.trusted.yaml"
    refuse_existing(private, trusted)
    key = ed25519.Ed25519PrivateKey.generate()
    openssh = serialization.PrivateFormat.OpenSSH
    _write_new(private, key.private_bytes(serialization.Encoding.PEM, openssh, serialization.NoEncryption()), private=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_new(trusted, f"{name}: {public.decode()}\n".encode())
    return private, trusted


def fab_app(fab: bytes, path: Path) -> tuple[str, str]:
    """``("@publisher/name", "x.y.z")`` of a FAB, as Flower reads them; a one-line error
    naming ``path`` if it is not one."""
    try:
        fab_id, version = get_metadata_from_config(get_fab_config(fab))
    except Exception as e:  # zipfile, TOML or Flower's validation: all mean "not a FAB"
        raise ConfigError(f"{path}: expected a FAB built by `flwr build` ({type(e).__name__}: {e})") from None
    return f"@{fab_id}", version


def signatures_path(fab_path: Path) -> Path:
    return fab_path.with_name(fab_path.name + ".signatures.json")


def read_signatures(fab_path: Path) -> list[dict]:
    path = signatures_path(fab_path)
    if not path.exists():
        return []
    try:
        signatures = json.loads(path.read_text())
    except ValueError:
        signatures = None
    if not isinstance(signatures, list) or not all(isinstance(s, dict) for s in signatures):
        raise ConfigError(f"{path}: expected a JSON list of signatures (written by `fedvlm flower sign-app`)")
    return signatures


def sign_fab(fab_path: Path, private_key: Path, key_id: str) -> Path:
    """Sign ``fab_path`` as ``flwr app review`` does (Ed25519 over the signing time and the
    FAB's SHA-256, Flower's ``create_message_to_sign``) and add the signature, under
    ``key_id`` (the name nodes trust it by), to ``<fab>.signatures.json`` beside it; an
    earlier signature by the same key id is replaced. Returns that file."""
    _check_key_id(key_id)
    if not fab_path.is_file():
        raise ConfigError(f"{fab_path}: no such FAB (build one with `flwr build --app DIR`)")
    fab = fab_path.read_bytes()
    fab_app(fab, fab_path)
    try:
        key = load_private_key(private_key)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--key {private_key}: expected an Ed25519 OpenSSH private key "
                          f"(fedvlm flower signing-key) ({e})") from None
    signed_at = int(time.time())
    signature = sign_message(key, create_message_to_sign(hashlib.sha256(fab).digest(), signed_at))
    entry = {"public_key_id": key_id, "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
             "signed_at": signed_at}
    signatures = [s for s in read_signatures(fab_path) if s.get("public_key_id") != key_id] + [entry]
    out = signatures_path(fab_path)
    write_atomic(out, json.dumps(signatures, indent=1) + "\n")
    return out


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class AppIndex:
    """The FABs of ``directory`` (``*.fab``, each with its signatures), served as Flower Hub
    serves apps: ``POST /hub/fetch-fab`` with ``{"app_id", "app_version"}`` (no version: the
    latest) answers ``{"fab_url", "verifications"}``, and the FAB is a ``GET`` of that URL.
    The directory is read at every request, so a FAB signed or added later is served."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0):
        if not Path(directory).is_dir():
            raise ConfigError(f"{directory}: no such directory of signed FABs")
        self.directory = Path(directory)
        index = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if self.path != FETCH:
                    return self._reply(404, b'{"detail": "not found"}')
                try:
                    request = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length", 0)), 1 << 16)))
                    app_id, version = str(request["app_id"]), request.get("app_version")
                except (ValueError, KeyError, TypeError):
                    return self._reply(400, b'{"detail": "expected JSON with app_id"}')
                try:
                    status, answer = index.fetch(app_id, version, f"http://{self.headers.get('Host', 'localhost')}")
                except ConfigError as e:  # a broken signatures file: say which, to the SuperLink's error
                    status, answer = 500, {"detail": str(e)}
                self._reply(status, json.dumps(answer).encode())

            def do_GET(self):
                fab = index.fabs().get(self.path.removeprefix("/fab/")) if self.path.startswith("/fab/") else None
                if fab is None:
                    return self._reply(404, b'{"detail": "not found"}')
                self._reply(200, fab.read_bytes(), "application/octet-stream")

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]

    def fabs(self) -> dict[str, Path]:
        return {p.name: p for p in sorted(self.directory.glob("*.fab")) if p.is_file()}

    def fetch(self, app_id: str, version: str | None, base_url: str) -> tuple[int, dict]:
        """Flower Hub's answer to a SuperLink asking for ``app_id`` (``@publisher/name``) at
        ``version``: ``(200, {"fab_url", "verifications"})``, or ``(404, {"detail": ...})``
        with the versions there are, as the Hub says it."""
        found = {}
        for name, path in self.fabs().items():
            try:
                found_id, found_version = fab_app(path.read_bytes(), path)
            except ConfigError:
                continue
            if found_id == app_id:
                found[found_version] = name
        if version not in found and (version is not None or not found):
            return 404, {"detail": {"available_app_versions": sorted(found, key=_version_key)}}
        name = found[version if version is not None else max(found, key=_version_key)]
        return 200, {"fab_url": f"{base_url}/fab/{name}", "verifications": read_signatures(self.directory / name)}

    def serve_in_background(self) -> "AppIndex":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
