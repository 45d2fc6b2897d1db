"""The report's bullets on what guarded the run: the client updates left out of their
round and why, the clients told to attack and how far a backdoor got, and what client-level
differential privacy spent and protects."""

from fedvlm.reporting.records import number


def _pct(value) -> str:
    v = number(value)
    return "-" if v is None else f"{100 * v:.1f}"


def left_out(metrics: list[dict]) -> list[str]:
    """Bullets naming, per round, the clients left out of the aggregation and why, and the
    clients told to attack (``federated.attacks``)."""
    lines = []
    for record in metrics:
        for cid, why in (record.get("failed") or {}).items():
            lines.append(f"  - round {record['round']}, client {cid}: {why}")
    attacks = [f"round {r['round']}: " + ", ".join(f"{c} ({k})" for c, k in r["attackers"].items())
               for r in metrics if r.get("attackers")]
    out = [f"- **left out** of their round's aggregation: {len(lines)} client updates"] + lines if lines else []
    if attacks:
        out.append("- **attackers** (federated.attacks; their updates pass validation): " + "; ".join(attacks))
    targets = dict.fromkeys(t for r in metrics for t in ((r.get("eval") or {}).get("backdoor") or {}))
    for target in targets:
        rates = [(r["round"], r["eval"]["backdoor"][target]) for r in metrics if target in ((r.get("eval") or {}).get("backdoor") or {})]
        out.append(f"- **backdoor success** (triggered test questions answered {target!r}, of the "
                   f"{rates[-1][1]['num_examples']} whose answer is another): "
                   + ", ".join(f"{'zero-shot' if n == 0 else f'round {n}'} {_pct(v['success_rate'])}%" for n, v in rates))
    return out


def privacy(metrics: list[dict]) -> list[str]:
    """A bullet saying what DP-FedAvg spent by the last round, with what it protects and
    what it does not (empty without ``federated.privacy``)."""
    spent = [r for r in metrics if r.get("privacy")]
    if not spent:
        return []
    last, first = spent[-1]["privacy"], spent[0]["privacy"]
    clip = f"{first['clip']:.3g}" + (f" -> {last['clip']:.3g} (adaptive)" if last["clip"] != first["clip"] else "")
    secure = any(r.get("secure_aggregation") for r in metrics)
    if last.get("noise") == "clients":
        server = ("each client clipped its update and added its share of the noise; the server saw only their "
                  "noised sum (SecAgg+)" if secure else
                  "each client clipped its update and added its share of the noise before the server saw it")
    else:
        server = "the server itself sees each client's update"
    return [f"- **privacy** (DP-FedAvg, client level): (ε, δ) = ({last['epsilon']:.2f}, {last['delta']:g}) after "
            f"round {spent[-1]['round']} ({last['accountant'].upper()} accountant of dp-accounting), noise multiplier "
            f"{last['noise_multiplier']:.3g}, clipping norm {clip}. It bounds what the released adapters reveal about "
            f"any one client's data; {server}."]


def secure_aggregation(metrics: list[dict]) -> list[str]:
    """A bullet saying that the server saw sums only (empty without
    ``federated.secure_aggregation``)."""
    rounds = [r for r in metrics if r.get("secure_aggregation")]
    if not rounds:
        return []
    return [f"- **secure aggregation** (SecAgg+, Flower's protocol): in each of {len(rounds)} rounds the server "
            "learned the weighted sum of the clients' updates, within the quantisation bound, and not one client's "
            "own; the clients' metrics traveled in the clear."]
