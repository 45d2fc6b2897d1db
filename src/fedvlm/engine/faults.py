"""Who misbehaves in a round: ``federated.faults`` and ``federated.attacks``.

Each entry names a ``kind`` (`fedvlm.client.faults`) and, optionally, the ``clients`` and
``rounds`` it applies to (all, if not given) and a ``probability`` (1 if not given);
attacks take a ``scale`` too (1 if not given), and a backdoor its ``target`` answer. In every round each client draws one number
per list from its own stream (`Stream.FAULTS` or `Stream.ATTACKS`, by round), so who
misbehaves does not depend on the order clients run in or on the engine; the first entry
that matches a client applies.
"""

from typing import Any

import numpy as np

from fedvlm.client.faults import ATTACKS
from fedvlm.errors import ConfigError
from fedvlm.seeds import Stream, seed_for

_KEYS = {"kind", "clients", "rounds", "probability", "scale", "target"}  # scale, target: attacks only


def check_entries(key: str, entries: list, kinds: tuple[str, ...], num_clients: int) -> None:
    """One line naming ``key`` and the entry at fault, unless every entry is well formed."""
    for i, entry in enumerate(entries):
        where = f"config key '{key}[{i}]'"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{where}: expected a mapping with a 'kind' ({', '.join(kinds)}), got {entry!r}")
        if entry["kind"] not in kinds:
            raise ConfigError(f"{where}: unknown kind {entry['kind']!r} (valid: {', '.join(kinds)})")
        allowed = _KEYS - {"scale", "target"} if kinds is not ATTACKS else _KEYS - ({"target"} if entry["kind"] != "backdoor" else set())
        unknown = set(entry) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} (valid: {', '.join(sorted(allowed))})")
        if entry["kind"] == "backdoor" and (not isinstance(entry.get("target"), str) or not entry["target"].strip()):
            raise ConfigError(f"{where}: a backdoor needs 'target', the answer its trigger should produce "
                              f"(e.g. target: 'yes'), got {entry.get('target')!r}")
        clients = entry.get("clients", [])
        if not isinstance(clients, list) or any(str(c) not in {str(k) for k in range(num_clients)} for c in clients):
            raise ConfigError(f"{where}: 'clients' expected a list of client ids 0..{num_clients - 1}, got {clients!r}")
        rounds_ = entry.get("rounds", [])
        if not isinstance(rounds_, list) or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rounds_):
            raise ConfigError(f"{where}: 'rounds' expected a list of round numbers >= 1, got {rounds_!r}")
        p = entry.get("probability", 1.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ConfigError(f"{where}: 'probability' expected 0 < p <= 1, got {p!r}")
        scale = entry.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
            raise ConfigError(f"{where}: 'scale' expected a positive number, got {scale!r}")


def assigned(entries: list[dict[str, Any]], stream: Stream, run_seed: int, round_num: int,
             client_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Client id -> the entry it follows in ``round_num`` (clients that behave are absent).
    ``client_ids`` are every client of the run, in their fixed order."""
    if not entries:
        return {}
    draws = np.random.default_rng(seed_for(run_seed, stream, round_num)).random(len(client_ids))
    out = {}
    for cid, draw in zip(client_ids, draws):
        for entry in entries:
            clients, rounds = [str(c) for c in entry.get("clients", [])], entry.get("rounds", [])
            if (not clients or cid in clients) and (not rounds or round_num in rounds) and draw < entry.get("probability", 1.0):
                out[cid] = entry
                break
    return out
