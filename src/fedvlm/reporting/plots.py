"""The plots of a run report, written as PNG files by `write_plots`.

``accuracy``, ``client_accuracy``, ``loss`` and ``bytes`` (see `PLOT_NAMES`), drawn from the
per-round records of ``metrics.jsonl`` and the optional baselines. A plot without data is
skipped (its function returns None and writes nothing).

Plots use the object API (``matplotlib.figure.Figure``) only, never pyplot's global state,
so this module is safe to call from any thread or a headless process.
"""

import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from fedvlm.reporting.records import (
    centralized_accuracy,
    client_ids,
    client_section,
    global_accuracy,
    local_pooled_accuracy,
    mean_client_loss,
    number,
    question_types,
)

PLOT_NAMES = ("accuracy", "client_accuracy", "loss", "bytes")


def write_plots(metrics: list[dict], baselines: dict | None, plots_dir: Path) -> dict[str, Path | None]:
    """Write the four plots into ``plots_dir``; maps plot name -> path, or None if skipped (no data)."""
    plots_dir = Path(plots_dir)
    return {
        "accuracy": plot_accuracy(metrics, baselines, plots_dir / "accuracy.png"),
        "client_accuracy": plot_client_accuracy(metrics, plots_dir / "client_accuracy.png"),
        "loss": plot_loss(metrics, plots_dir / "loss.png"),
        "bytes": plot_bytes(metrics, plots_dir / "bytes.png"),
    }


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
        pts = [(r["round"], number(((r.get("eval") or {}).get("by_type") or {}).get(t))) for r in metrics]
        pts = [(x, 100 * y) for x, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), linewidth=1, alpha=0.75, marker=".", label=t)
            entries += 1
    central = centralized_accuracy(baselines)
    if central is not None:
        ax.axhline(100 * central, linestyle="--", color="tab:red", linewidth=1.5,
                   label="centralized (same samples)")
        entries += 1
    local = local_pooled_accuracy(baselines)
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
            stats = client_section(record, section).get(cid)
            value = number(stats.get(field)) if isinstance(stats, dict) else None
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
        (r["round"], number(r.get("bytes_up")) or 0.0, number(r.get("bytes_down")) or 0.0)
        for r in metrics
        if number(r.get("bytes_up")) is not None or number(r.get("bytes_down")) is not None
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
