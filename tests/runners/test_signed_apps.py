"""Signed apps (``fedvlm.flower.signed_apps``) checked by Flower's own code: the SuperLink's
fetch of a Hub app (``request_download_link`` and ``_format_verification``) against our app
index, and the SuperNode's ``_verify_fab`` against the node's trusted entities. A whole
deployment whose nodes run the signed app and refuse it unsigned:
tests/runners/test_flower_deploy.py."""

import hashlib
import json

import pytest
import requests
import yaml
from flwr.cli.build import build_fab_from_disk
from flwr.superlink.servicer.control.control_handlers import _format_verification
from flwr.supercore.fab import Fab
from flwr.supercore.utils import request_download_link
from flwr.supernode.start_client_internal import _verify_fab

from fedvlm.cli import main
from fedvlm.errors import ConfigError
from fedvlm.flower.deploy import make_node_key, write_app
from fedvlm.flower.signed_apps import AppIndex, make_signing_key, sign_fab

SPEC = "@fedvlm/fedvlm-app"


@pytest.fixture
def fab(tmp_path):
    """fedvlm's app as Flower's ``flwr build`` bundles it, in a directory of apps."""
    apps = tmp_path / "apps"
    apps.mkdir()
    path = apps / "fedvlm.fedvlm-app.1.0.0.fab"
    path.write_bytes(build_fab_from_disk(write_app(tmp_path / "app")))
    return path


def _trusted(path) -> dict:
    return yaml.safe_load(path.read_text())


def _fetched(index: AppIndex, spec_version=None) -> Fab:
    """The FAB and verifications a SuperLink gets for the app spec from ``index``, by
    Flower's own client code, as ``control_handlers._get_remote_fab`` builds them."""
    url, verifications, _ = request_download_link(SPEC, spec_version, f"http://127.0.0.1:{index.port}/hub/fetch-fab", "fab_url")
    content = requests.get(url, timeout=10).content
    return Fab(hashlib.sha256(content).hexdigest(), content, _format_verification(verifications or []))


def test_a_signed_fab_verifies_on_a_node_that_trusts_the_key_and_on_no_other(tmp_path, fab):
    owner, owner_trusted = make_signing_key(tmp_path / "keys", "owner")
    _, other_trusted = make_signing_key(tmp_path / "keys", "other")
    index = AppIndex(fab.parent).serve_in_background()
    try:
        unsigned = _fetched(index)
        assert unsigned.content == fab.read_bytes()
        assert not _verify_fab(unsigned, _trusted(owner_trusted))  # no signature: refused

        sign_fab(fab, owner, "owner")
        signed = _fetched(index, "1.0.0")
        assert signed.verifications["valid_license"] == "Valid"
        assert _verify_fab(signed, _trusted(owner_trusted))
        assert not _verify_fab(signed, _trusted(other_trusted))  # a node trusting another signer
        # the other key's public key under the owner's id: the signature does not verify
        assert not _verify_fab(signed, {"owner": _trusted(other_trusted)["other"]})

        tampered = bytearray(signed.content)
        tampered[len(tampered) // 2] ^= 1
        assert not _verify_fab(Fab("", bytes(tampered), signed.verifications), _trusted(owner_trusted))

        # a second signer adds a signature; re-signing replaces the signer's own
        other = tmp_path / "keys" / "other"
        sign_fab(fab, other, "other")
        sign_fab(fab, owner, "owner")
        signatures = json.loads((fab.parent / (fab.name + ".signatures.json")).read_text())
        assert sorted(s["public_key_id"] for s in signatures) == ["other", "owner"]
        both = _fetched(index)
        assert _verify_fab(both, _trusted(owner_trusted)) and _verify_fab(both, _trusted(other_trusted))

        # an app the index does not hold: Flower's client says which versions there are
        with pytest.raises(ValueError, match="Available app versions for @fedvlm/fedvlm-app: 1.0.0"):
            request_download_link(SPEC, "2.0.0", f"http://127.0.0.1:{index.port}/hub/fetch-fab", "fab_url")
        with pytest.raises(ValueError, match="not found"):
            request_download_link("@someone/else", None, f"http://127.0.0.1:{index.port}/hub/fetch-fab", "fab_url")
        assert requests.get(f"http://127.0.0.1:{index.port}/fab/..%2Fapp%2Fpyproject.toml", timeout=10).status_code == 404
        (fab.parent / (fab.name + ".signatures.json")).write_text("{broken")
        with pytest.raises(ValueError, match="status 500.*signatures.json: expected a JSON list"):
            request_download_link(SPEC, None, f"http://127.0.0.1:{index.port}/hub/fetch-fab", "fab_url")
    finally:
        index.close()


def test_bad_signing_inputs_are_one_line_and_overwrite_nothing(tmp_path, fab):
    owner, trusted = make_signing_key(tmp_path / "keys", "owner")
    before = owner.read_bytes()
    with pytest.raises(ConfigError, match="owner exists; fedvlm never overwrites"):
        make_signing_key(tmp_path / "keys", "owner")
    assert owner.read_bytes() == before and owner.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="key id 'a/b'"):
        make_signing_key(tmp_path / "keys", "a/b")
    node_key, _ = make_node_key(tmp_path / "keys", "node0")  # an EC key, not Ed25519
    with pytest.raises(ConfigError, match="--key .*node0: expected an Ed25519 OpenSSH private key"):
        sign_fab(fab, node_key, "node0")
    not_a_fab = tmp_path / "notes.fab"
    not_a_fab.write_text("hello")
    with pytest.raises(ConfigError, match="notes.fab: expected a FAB built by `flwr build`"):
        sign_fab(not_a_fab, owner, "owner")
    with pytest.raises(ConfigError, match="missing.fab: no such FAB"):
        sign_fab(tmp_path / "missing.fab", owner, "owner")
    (fab.parent / (fab.name + ".signatures.json")).write_text("{broken")
    with pytest.raises(ConfigError, match="signatures.json: expected a JSON list of signatures"):
        sign_fab(fab, owner, "owner")
    assert main(["flower", "app-index", str(tmp_path / "nowhere")]) == 2


def test_the_cli_makes_a_key_and_signs_under_the_key_files_name(tmp_path, fab, capsys):
    assert main(["flower", "signing-key", str(tmp_path / "keys"), "review-board"]) == 0
    assert main(["flower", "sign-app", str(fab), "--key", str(tmp_path / "keys" / "review-board")]) == 0
    assert "--trusted-entities" in capsys.readouterr().out
    signatures = json.loads((fab.parent / (fab.name + ".signatures.json")).read_text())
    assert [s["public_key_id"] for s in signatures] == ["review-board"]
    trusted = _trusted(tmp_path / "keys" / "review-board.trusted.yaml")
    assert _verify_fab(Fab("", fab.read_bytes(), _format_verification(signatures)), trusted)
