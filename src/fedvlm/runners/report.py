"""Turn a run directory into a Markdown summary and a few plots.

Inputs, all inside ``run_dir``:

- ``metrics.jsonl``: one JSON object per line; ``round`` 0 is the zero-shot evaluation,
  later rounds carry ``clients`` (training stats of the sampled clients), ``bytes_up``,
  ``bytes_down``, ``seconds`` and ``eval`` (pooled accuracy, ``by_type``, optional
  per-client local-test accuracy under ``eval.clients``).
- ``baselines.json`` (optional): ``centralized`` and/or ``local`` results.
- ``config.yaml`` (optional): the resolved config, used only for the report header.

Outputs: ``report.md`` and ``plots/{accuracy,client_accuracy,loss,bytes}.png``. Everything
works on a partial run (only round 0, no baselines): plots without data are skipped.

Plots use the object API (``matplotlib.figure.Figure``) only, never pyplot's global state,
so this module is safe to call from any thread or a headless process.
"""

import json
import math
from pathlib import Path
from typing import Any

import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure

from fedvlm.errors import DataError

METRICS_FILE = "metrics.jsonl"
BASELINES_FILE = "baselines.json"
CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
PLOT_NAMES = ("accuracy", "client_accuracy", "loss", "bytes")

CENTRALIZED_LABEL = "centralized (same samples)"
LOCAL_LABEL = "local-only (mean over clients, local test / pooled test)"
MISSING = "-"


class MetricsFileError(DataError, ValueError):
    """A metrics or baselines file is malformed (a ``ValueError`` and a ``DataError``)."""


# ---------------------------------------------------------------------------- reading


def read_metrics(run_dir: Path) -> list[dict]:
    """Read ``run_dir/metrics.jsonl`` into a list of records sorted by round.

    Blank lines are skipped. A line that is not a JSON object with an integer ``round``
    raises ``MetricsFileError`` (a ``ValueError``) naming the file and the 1-based line
    number. If a round appears twice (e.g. a resumed run re-logged it) the later line
    wins. A missing file gives an empty list.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    by_round: dict[int, dict] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsFileError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise MetricsFileError(f"{path}: line {lineno}: expected a JSON object")
            rnd = record.get("round")
            if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0:
                raise MetricsFileError(
                    f"{path}: line {lineno}: expected a non-negative integer 'round', got {rnd!r}"
                )
            by_round[rnd] = record
    return [by_round[r] for r in sorted(by_round)]


def read_baselines(run_dir: Path) -> dict:
    """Read ``run_dir/baselines.json``; ``{}`` when absent. Malformed JSON raises ``MetricsFileError``."""
    path = Path(run_dir) / BASELINES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MetricsFileError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise MetricsFileError(f"{path}: expected a JSON object at the top")
    return data


def read_config(run_dir: Path) -> dict:
    """Read ``run_dir/config.yaml`` as a plain dict (no validation); ``{}`` when absent or unreadable."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------- small helpers


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, non-numeric, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_pct(value: Any) -> str:
    """Accuracy in [0, 1] as a percentage with one decimal: 0.713 -> ``"71.3"``."""
    v = _number(value)
    return MISSING if v is None else f"{100 * v:.1f}"


def format_mb(num_bytes: Any) -> str:
    """Bytes as megabytes (10^6) with two decimals: 1_234_567 -> ``"1.23"``."""
    v = _number(num_bytes)
    return MISSING if v is None else f"{v / 1e6:.2f}"


def format_seconds(value: Any) -> str:
    """Seconds with one decimal."""
    v = _number(value)
    return MISSING if v is None else f"{v:.1f}"


def format_loss(value: Any) -> str:
    """Loss with three decimals."""
    v = _number(value)
    return MISSING if v is None else f"{v:.3f}"


def client_sort_key(client_id: str) -> tuple:
    """Sort client ids numerically when they are numbers ("2" before "10")."""
    return (0, int(client_id), "") if client_id.isdigit() else (1, 0, client_id)


def mean_client_loss(record: dict) -> float | None:
    """Unweighted mean training loss over the clients that took part in this round."""
    losses = [
        _number(stats.get("loss"))
        for stats in (record.get("clients") or {}).values()
        if isinstance(stats, dict)
    ]
    losses = [v for v in losses if v is not None]
    return sum(losses) / len(losses) if losses else None


def global_accuracy(record: dict) -> float | None:
    """Pooled-test accuracy of the global model recorded in this round, if any."""
    return _number((record.get("eval") or {}).get("accuracy"))


def question_types(metrics: list[dict], baselines: dict | None = None) -> list[str]:
    """Sorted union of question types seen in any round's ``eval.by_type`` (and the centralized baseline)."""
    seen: set[str] = set()
    for record in metrics:
        seen.update((record.get("eval") or {}).get("by_type") or {})
    seen.update(((baselines or {}).get("centralized") or {}).get("by_type") or {})
    return sorted(seen)


def client_ids(metrics: list[dict], section: str) -> list[str]:
    """Sorted ids of all clients seen under ``section`` ("clients" or "eval.clients")."""
    seen: set[str] = set()
    for record in metrics:
        seen.update(_section(record, section))
    return sorted(seen, key=client_sort_key)


def _section(record: dict, section: str) -> dict:
    """``record["clients"]`` or ``record["eval"]["clients"]`` as a dict (``{}`` when absent)."""
    if section == "clients":
        node = record.get("clients")
    else:
        node = (record.get("eval") or {}).get("clients")
    return node if isinstance(node, dict) else {}


def best_round(metrics: list[dict]) -> tuple[int, float] | None:
    """(round, accuracy) of the best training round (round >= 1); earliest wins ties. None if no such round."""
    best = None
    for record in metrics:
        acc = global_accuracy(record)
        if record["round"] >= 1 and acc is not None and (best is None or acc > best[1]):
            best = (record["round"], acc)
    return best


def final_round(metrics: list[dict]) -> tuple[int, float] | None:
    """(round, accuracy) of the last record that has a pooled accuracy, or None."""
    for record in reversed(metrics):
        acc = global_accuracy(record)
        if acc is not None:
            return record["round"], acc
    return None


# -------------------------------------------------------------------------- the table


def markdown_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    """A Markdown table padded so it also reads well in a terminal.

    Columns from index ``right_from`` on are right-aligned (numbers).
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    widths = [max(w, 3) for w in widths]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i >= right_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w - 1) + ":" if i >= right_from else "-" * w for i, w in enumerate(widths)
    ]
    return "\n".join([line(header), "| " + " | ".join(rule) + " |", *map(line, rows)])


def summary_table(metrics: list[dict], baselines: dict | None = None) -> str:
    """Markdown table: zero-shot, one row per round, then the baselines when present.

    Columns: row label, pooled accuracy (%), one accuracy column per question type (%),
    mean client training loss, MB up, MB down, seconds. Missing values show as ``-``.
    The local-only row shows ``local / pooled`` in the accuracy column.
    """
    baselines = baselines or {}
    types = question_types(metrics, baselines)
    header = ["", "accuracy %", *(f"{t} %" for t in types), "mean loss", "MB up", "MB down", "seconds"]
    rows = []
    for record in metrics:
        ev = record.get("eval") or {}
        by_type = ev.get("by_type") or {}
        label = "zero-shot" if record["round"] == 0 else f"round {record['round']}"
        rows.append([
            label,
            format_pct(ev.get("accuracy")),
            *(format_pct(by_type.get(t)) for t in types),
            format_loss(mean_client_loss(record)),
            format_mb(record.get("bytes_up")),
            format_mb(record.get("bytes_down")),
            format_seconds(record.get("seconds")),
        ])
    central = baselines.get("centralized")
    if isinstance(central, dict):
        by_type = central.get("by_type") or {}
        rows.append([
            CENTRALIZED_LABEL,
            format_pct(central.get("accuracy")),
            *(format_pct(by_type.get(t)) for t in types),
            MISSING, MISSING, MISSING,
            format_seconds(central.get("seconds")),
        ])
    local = baselines.get("local")
    if isinstance(local, dict):
        rows.append([
            LOCAL_LABEL,
            f"{format_pct(local.get('mean_local'))} / {format_pct(local.get('mean_pooled'))}",
            *(MISSING for _ in types),
            MISSING, MISSING, MISSING,
            format_seconds(local.get("seconds")),
        ])
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------ plots


def _new_figure(width: float = 8.0, height: float = 4.8) -> Figure:
    """A fresh, unattached figure (no pyplot state)."""
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _legend(ax, count: int) -> None:
    """Legend outside the axes on the right, in columns when there are many entries."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
              ncol=1 if count <= 14 else 2, frameon=False)


def _round_ticks(ax, rounds: list[int]) -> None:
    """Integer ticks on the round axis (at most ~12 labels)."""
    if not rounds:
        return
    lo, hi = min(rounds), max(rounds)
    step = max(1, math.ceil((hi - lo + 1) / 12))
    ax.set_xticks(list(range(lo, hi + 1, step)))
    ax.set_xlabel("round (0 = zero-shot)" if lo == 0 else "round")


def plot_accuracy(metrics: list[dict], baselines: dict | None, path: Path) -> Path | None:
    """Pooled accuracy per round (thick), per-type accuracy (thin), baselines as dashed lines.

    Returns ``path``, or None (nothing written) when no round has a pooled accuracy.
    """
    points = [(r["round"], global_accuracy(r)) for r in metrics]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return None
    baselines = baselines or {}
    fig = _new_figure()
    ax = fig.add_subplot()
    xs = [x for x, _ in points]
    ax.plot(xs, [100 * y for _, y in points], marker="o", linewidth=2.5, color="black",
            label="global (pooled test)", zorder=3)
    entries = 1
    for t in question_types(metrics):
        pts = [(r["round"], _number(((r.get("eval") or {}).get("by_type") or {}).get(t))) for r in metrics]
        pts = [(x, 100 * y) for x, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), linewidth=1, alpha=0.75, marker=".", label=t)
            entries += 1
    central = _number((baselines.get("centralized") or {}).get("accuracy"))
    if central is not None:
        ax.axhline(100 * central, linestyle="--", color="tab:red", linewidth=1.5,
                   label="centralized (same samples)")
        entries += 1
    local = _number((baselines.get("local") or {}).get("mean_pooled"))
    if local is not None:
        ax.axhline(100 * local, linestyle="--", color="tab:gray", linewidth=1.5,
                   label="local-only (pooled test)")
        entries += 1
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Global model accuracy")
    ax.grid(alpha=0.3)
    _round_ticks(ax, xs)
    _legend(ax, entries)
    return _save(fig, path)


def _colormap_colors(name: str) -> list:
    """The discrete colors of a qualitative matplotlib colormap, without pyplot."""
    return list(colormaps[name].colors)


def _per_client_lines(ax, metrics: list[dict], section: str, field: str, scale: float) -> list[int]:
    """Plot ``field`` of each client under ``section`` vs round; returns the rounds plotted."""
    ids = client_ids(metrics, section)
    colors = _colormap_colors("tab10" if len(ids) <= 10 else "tab20")
    rounds: set[int] = set()
    for i, cid in enumerate(ids):
        pts = []
        for record in metrics:
            stats = _section(record, section).get(cid)
            value = _number(stats.get(field)) if isinstance(stats, dict) else None
            if value is not None:
                pts.append((record["round"], scale * value))
        if pts:
            rounds.update(x for x, _ in pts)
            ax.plot(*zip(*pts), marker="o", markersize=3.5, linewidth=1.2,
                    color=colors[i % len(colors)],
                    label=f"client {cid}")
    return sorted(rounds)


def plot_client_accuracy(metrics: list[dict], path: Path) -> Path | None:
    """Each client's local-test accuracy of the global model per round (``eval.clients``).

    Returns ``path``, or None when no round has per-client evaluation.
    """
    if not client_ids(metrics, "eval.clients"):
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    rounds = _per_client_lines(ax, metrics, "eval.clients", "accuracy", 100.0)
    if not rounds:
        return None
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy on client's local test (%)")
    ax.set_title("Global model accuracy per client")
    ax.grid(alpha=0.3)
    _round_ticks(ax, rounds)
    _legend(ax, len(client_ids(metrics, "eval.clients")))
    return _save(fig, path)


def plot_loss(metrics: list[dict], path: Path) -> Path | None:
    """Each sampled client's training loss per round, plus the mean over clients (thick, dashed).

    Points of a client are joined across rounds it skipped. Returns None when no loss was recorded.
    """
    if not client_ids(metrics, "clients"):
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    rounds = _per_client_lines(ax, metrics, "clients", "loss", 1.0)
    if not rounds:
        return None
    mean = [(r["round"], mean_client_loss(r)) for r in metrics]
    mean = [(x, y) for x, y in mean if y is not None]
    ax.plot(*zip(*mean), color="black", linewidth=2.5, linestyle="--", marker="s",
            markersize=4, label="mean over clients", zorder=3)
    ax.set_ylabel("training loss (mean over local steps)")
    ax.set_title("Client training loss")
    ax.grid(alpha=0.3)
    _round_ticks(ax, rounds)
    _legend(ax, len(client_ids(metrics, "clients")) + 1)
    return _save(fig, path)


def plot_bytes(metrics: list[dict], path: Path) -> Path | None:
    """MB up and down per round (bars, left) and cumulative MB (lines, right).

    Returns None when no round recorded ``bytes_up`` or ``bytes_down``.
    """
    rows = [
        (r["round"], _number(r.get("bytes_up")) or 0.0, _number(r.get("bytes_down")) or 0.0)
        for r in metrics
        if _number(r.get("bytes_up")) is not None or _number(r.get("bytes_down")) is not None
    ]
    if not rows:
        return None
    rounds = [r for r, _, _ in rows]
    up = [u / 1e6 for _, u, _ in rows]
    down = [d / 1e6 for _, _, d in rows]
    fig = _new_figure(width=10.0, height=4.2)
    per_round, cumulative = fig.subplots(1, 2)
    width = 0.38
    per_round.bar([x - width / 2 for x in rounds], up, width=width, label="up (clients → server)",
                  color="tab:blue")
    per_round.bar([x + width / 2 for x in rounds], down, width=width,
                  label="down (server → clients)", color="tab:orange")
    per_round.set_ylim(0, 1.3 * max(up + down) if max(up + down) > 0 else 1.0)  # room for the legend
    per_round.set_ylabel("MB per round")
    per_round.set_title("Communication per round")
    cum_up, cum_down, total_up, total_down = [], [], 0.0, 0.0
    for u, d in zip(up, down):
        total_up, total_down = total_up + u, total_down + d
        cum_up.append(total_up)
        cum_down.append(total_down)
    cumulative.plot(rounds, cum_up, marker="o", label="up (cumulative)", color="tab:blue")
    cumulative.plot(rounds, cum_down, marker="o", label="down (cumulative)", color="tab:orange")
    cumulative.plot(rounds, [u + d for u, d in zip(cum_up, cum_down)], marker="o",
                    linestyle="--", color="black", label="total (cumulative)")
    cumulative.set_ylabel("MB (cumulative)")
    cumulative.set_title("Cumulative communication")
    cumulative.set_ylim(bottom=0)
    per_round.legend(fontsize="small", loc="upper center", ncol=2)
    cumulative.legend(fontsize="small", loc="upper left")
    for ax in (per_round, cumulative):
        ax.grid(alpha=0.3)
        _round_ticks(ax, rounds)
    return _save(fig, path)


# ----------------------------------------------------------------------------- report


def config_header(config: dict) -> list[str]:
    """Markdown bullet lines describing the run from the resolved config (``[]`` if empty)."""
    if not config:
        return []

    def get(section: str, key: str) -> Any:
        node = config.get(section)
        return node.get(key) if isinstance(node, dict) else None

    method = get("partition", "method")
    detail = {
        "dirichlet": ("alpha", get("partition", "alpha")),
        "pathological": ("labels per client", get("partition", "labels_per_client")),
        "overlap": ("overlap", get("partition", "overlap")),
        "natural": ("column", get("partition", "natural_column")),
    }.get(method)
    if method is not None and detail and detail[1] is not None:
        method = f"{method} ({detail[0]} {detail[1]})"
    fraction = get("federated", "fraction")
    clients = get("partition", "num_clients")
    if clients is not None and fraction is not None and fraction != 1:
        clients = f"{clients} (fraction {fraction} sampled per round)"
    items = [
        ("run", get("run", "name")),
        ("model", get("model", "path")),
        ("data", get("data", "source")),
        ("partition", method),
        ("clients", clients),
        ("strategy", get("federated", "strategy")),
        ("rounds", get("federated", "rounds")),
        ("local steps", get("train", "local_steps")),
        ("learning rate", get("train", "lr")),
        ("seed", get("run", "seed")),
    ]
    return [f"- **{name}**: `{value}`" for name, value in items if value is not None]


def headline(metrics: list[dict], baselines: dict | None = None) -> list[str]:
    """Markdown bullet lines: zero-shot, best round, final accuracy, and gaps to baselines."""
    baselines = baselines or {}
    lines = []
    zero = next((global_accuracy(r) for r in metrics if r["round"] == 0), None)
    if zero is not None:
        lines.append(f"- **zero-shot accuracy**: {format_pct(zero)}%")
    best = best_round(metrics)
    if best is None:
        lines.append("- **best round**: none yet (no training round evaluated)")
    else:
        lines.append(f"- **best round**: round {best[0]} with {format_pct(best[1])}%")
    final = final_round(metrics)
    if final is not None and final[0] >= 1:
        text = f"- **final accuracy**: {format_pct(final[1])}% (round {final[0]}"
        if zero is not None:
            text += f", {100 * (final[1] - zero):+.1f} points vs zero-shot"
        lines.append(text + ")")
        central = _number((baselines.get("centralized") or {}).get("accuracy"))
        if central is not None:
            lines.append(f"- **gap to centralized**: {100 * (final[1] - central):+.1f} points "
                         f"(centralized {format_pct(central)}%)")
        local = _number((baselines.get("local") or {}).get("mean_pooled"))
        if local is not None:
            lines.append(f"- **gain over local-only** (pooled test): {100 * (final[1] - local):+.1f} "
                         f"points (local-only {format_pct(local)}%)")
    return lines


def write_plots(metrics: list[dict], baselines: dict | None, plots_dir: Path) -> dict[str, Path | None]:
    """Write the four plots into ``plots_dir``; maps plot name -> path, or None if skipped (no data)."""
    plots_dir = Path(plots_dir)
    return {
        "accuracy": plot_accuracy(metrics, baselines, plots_dir / "accuracy.png"),
        "client_accuracy": plot_client_accuracy(metrics, plots_dir / "client_accuracy.png"),
        "loss": plot_loss(metrics, plots_dir / "loss.png"),
        "bytes": plot_bytes(metrics, plots_dir / "bytes.png"),
    }


_PLOT_TITLES = {
    "accuracy": "Global accuracy (pooled test)",
    "client_accuracy": "Per-client accuracy (local test sets)",
    "loss": "Client training loss",
    "bytes": "Communication",
}


def render_report(
    title: str,
    config: dict,
    metrics: list[dict],
    baselines: dict | None,
    plots: dict[str, Path | None],
    plots_rel: str = PLOTS_DIR,
) -> str:
    """The report as Markdown text; ``plots`` as returned by ``write_plots``."""
    parts = [f"# Run report: {title}", ""]
    header = config_header(config)
    parts += ["## Configuration", "", *(header or ["_no config.yaml found_"]), ""]
    parts += ["## Results", ""]
    if metrics:
        parts += headline(metrics, baselines) + ["", summary_table(metrics, baselines), ""]
    else:
        parts += ["_no metrics recorded yet_", ""]
    parts += ["## Plots", ""]
    for name in PLOT_NAMES:
        parts += [f"### {_PLOT_TITLES[name]}", ""]
        path = plots.get(name)
        if path is None:
            parts += ["_not enough data yet_", ""]
        else:
            parts += [f"![{_PLOT_TITLES[name]}]({plots_rel}/{Path(path).name})", ""]
    return "\n".join(parts)


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/*.png``; return the report path.

    Works on partial runs: plots without data are skipped and the report says so.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    baselines = read_baselines(run_dir)
    config = read_config(run_dir)
    plots = write_plots(metrics, baselines, run_dir / PLOTS_DIR)
    name = (config.get("run") or {}).get("name") if isinstance(config.get("run"), dict) else None
    text = render_report(name or run_dir.name, config, metrics, baselines, plots)
    path = run_dir / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return path
