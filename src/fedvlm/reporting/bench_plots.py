"""The plots of a bench summary (`fedvlm.reporting.bench_report`), as PNG files.

Same conventions as a run's plots (`fedvlm.reporting.plots`, whose figure helpers these
reuse): the object API only (``matplotlib.figure.Figure``, never pyplot), and a plot
without data is skipped (None, nothing written).
"""

from pathlib import Path

import numpy as np

from fedvlm.reporting.plots import _colormap_colors, _legend, _new_figure, _round_ticks, _save

_MARKERS = "osD^vP*Xhp<>"
_LINESTYLES = ("-", "--", ":")


def _style(i: int) -> tuple:
    """Colour and line style of the ``i``-th algorithm: the 10 tab10 colours with solid
    lines, then their light tab20 partners with dashed lines."""
    pairs = _colormap_colors("tab20")  # dark, light, dark, light, ...
    palette = pairs[0::2] + pairs[1::2]
    return palette[i % len(palette)], _LINESTYLES[(i // 10) % len(_LINESTYLES)]


def mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Rounds logged by every seed, and the mean and population std (ddof=0) of the
    accuracy (%) over the seeds at those rounds."""
    rounds = sorted(set.intersection(*(set(c) for c in curves)))
    values = 100 * np.array([[c[r] for r in rounds] for c in curves], dtype=float)
    return rounds, values.mean(axis=0), values.std(axis=0)


def plot_accuracy_per_round(
    curves: dict[str, list[dict[int, float]]], title: str, path: Path, ylabel: str = "accuracy, pooled test (%)"
) -> Path | None:
    """Accuracy per round, one line per algorithm (mean over seeds) with a shaded ± std
    band. ``curves``: algorithm -> one ``{round: accuracy in [0, 1]}`` per finished seed.
    Returns ``path``, or None when no algorithm has a finished seed."""
    lines = {algorithm: mean_curve(cs) for algorithm, cs in curves.items() if cs}
    if not lines:
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    seen: set[int] = set()
    for i, (algorithm, (rounds, mean, std)) in enumerate(lines.items()):
        color, linestyle = _style(i)
        ax.plot(rounds, mean, marker="o", markersize=3, linewidth=1.5, color=color,
                linestyle=linestyle, label=f"{algorithm} (n={len(curves[algorithm])})")
        ax.fill_between(rounds, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        seen.update(rounds)
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _round_ticks(ax, sorted(seen))
    _legend(ax, len(lines))
    return _save(fig, path)


def plot_accuracy_vs_uplink(rows: list[dict], path: Path) -> Path | None:
    """Final accuracy (mean ± std over seeds) against total uplink MB, one marker per
    algorithm x partition: colour and text label = algorithm, marker shape = partition
    (both in the legend, as points with equal uplink pile up).

    ``rows`` as `fedvlm.reporting.bench_report.summary_rows` returns them. Returns ``path``,
    or None when no row has a finished seed.
    """
    points = [r for r in rows if r["final_accuracy_mean"] is not None and r["bytes_up"] is not None]
    if not points:
        return None
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    partitions = list(dict.fromkeys(r["partition"] for r in rows))
    fig = _new_figure(width=10.0, height=6.0)
    ax = fig.add_subplot()
    for r in points:
        color, _ = _style(algorithms.index(r["algorithm"]))
        marker = _MARKERS[partitions.index(r["partition"]) % len(_MARKERS)]
        x, y = r["bytes_up"] / 1e6, 100 * r["final_accuracy_mean"]
        ax.errorbar(x, y, yerr=100 * r["final_accuracy_std"], fmt=marker, color=color,
                    markersize=6, capsize=2, elinewidth=0.8)
        ax.annotate(r["algorithm"], (x, y), xytext=(4, 3), textcoords="offset points",
                    fontsize=6.5, color=color)
    for i, algorithm in enumerate(algorithms):
        ax.plot([], [], "-", linewidth=4, color=_style(i)[0], label=algorithm)
    for i, partition in enumerate(partitions):
        ax.plot([], [], _MARKERS[i % len(_MARKERS)], color="dimgray", label=f"partition {partition}")
    xs = [r["bytes_up"] / 1e6 for r in points]
    if min(xs) > 0 and max(xs) > 20 * min(xs):  # linear would squash the small ones at 0
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)  # so compression ratios read off the axis
    lo = min(100 * (r["final_accuracy_mean"] - r["final_accuracy_std"]) for r in points)
    hi = max(100 * (r["final_accuracy_mean"] + r["final_accuracy_std"]) for r in points)
    pad = max(2.0, 0.1 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    ax.set_xlabel("total uplink over all rounds (MB, mean over seeds)")
    ax.set_ylabel("final accuracy, pooled test (%)")
    ax.set_title("Final accuracy vs uplink")
    ax.grid(alpha=0.3)
    _legend(ax, len(algorithms) + len(partitions))
    return _save(fig, path)
