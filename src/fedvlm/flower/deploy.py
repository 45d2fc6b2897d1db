"""Helpers for a multi-machine deployment on Flower's own SuperLink and SuperNodes: the TLS
certificates of the SuperLink and the SuperNodes' authentication keys.

Flower ships no command that makes these (its examples call openssl from a shell script),
so fedvlm writes them with ``cryptography``, which flwr itself depends on: an EC P-384
certificate authority, a SuperLink certificate signed by it for the given hosts, and per
SuperNode an EC key pair in the OpenSSH formats ``flower-supernode
--auth-supernode-private-key`` and ``flwr supernode register`` read.
"""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedvlm.errors import ConfigError

DAYS = 365


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def refuse_existing(*paths: Path) -> None:
    """Before writing any of a set of keys or certificates: one line if one exists already."""
    for path in paths:
        if path.exists():
            raise ConfigError(f"{path} exists; fedvlm never overwrites a certificate or key (remove it first)")


def _write_new(path: Path, data: bytes, private: bool = False) -> None:
    """Create ``path`` (never replace it) with its final mode from the start: a private key
    is this user's only (0600) before a byte of it is written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise ConfigError(f"{path} exists; fedvlm never overwrites a certificate or key (remove it first)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certificates(out_dir: Path, hosts: list[str]) -> dict[str, Path]:
    """``ca.crt`` (give it to every SuperNode and to ``flwr``), ``ca.key`` (keep it
    offline), and the SuperLink's ``server.pem`` / ``server.key`` valid for ``hosts``."""
    if not hosts:
        raise ConfigError("--host: name at least one address the SuperNodes use to reach the SuperLink")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {n: out_dir / n for n in ("ca.crt", "ca.key", "server.pem", "server.key")}
    refuse_existing(*paths.values())
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now, not_valid_after=now + datetime.timedelta(days=DAYS))
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedvlm CA")).issuer_name(_name("fedvlm CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    _write_new(paths["ca.crt"], ca.public_bytes(pem))
    _write_new(paths["ca.key"], ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), private=True)
    _write_new(paths["server.pem"], cert.public_bytes(pem))
    _write_new(paths["server.key"], key.private_bytes(pem, pkcs8, serialization.NoEncryption()), private=True)
    return paths


def make_node_key(out_dir: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's key pair: ``<name>`` (private, stays on the node) and ``<name>.pub``
    (registered on the SuperLink with ``flwr supernode register <name>.pub <connection>``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / name, out_dir / f"{name}.pub"
    refuse_existing(private, public)
    key = ec.generate_private_key(ec.SECP384R1())
    openssh = serialization.PrivateFormat.OpenSSH
    _write_new(private, key.private_bytes(serialization.Encoding.PEM, openssh, serialization.NoEncryption()), private=True)
    _write_new(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


APP_TOML = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedvlm-app"
version = "1.0.0"
description = "fedvlm's ServerApp and ClientApp"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedvlm"

[tool.flwr.app.components]
serverapp = "fedvlm.flower.server_app:app"
clientapp = "fedvlm.flower.client_app:app"

[tool.flwr.app.config]
config = ""
overrides = ""
run_dir = ""
resume = false
"""


def write_app(out_dir: Path) -> Path:
    """The Flower app directory ``flwr run`` takes: only a pyproject.toml naming fedvlm's
    ServerApp and ClientApp (fedvlm itself is installed on every machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pyproject.toml").write_text(APP_TOML)
    return out_dir
