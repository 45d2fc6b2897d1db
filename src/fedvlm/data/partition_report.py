"""Describe a federated partition: per-client label counts, as a table or a heat-map.

`label_histograms` counts each label on each client of a partition from
`fedvlm.data.partition.partition_indices`; `format_partition_table` and
`plot_partition_heatmap` show those counts (the ``fedvlm partition`` command).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from fedvlm.data.partition import label_codes


def label_histograms(
    dataset: datasets.Dataset, partitions: list[list[int]], label_column: str
) -> tuple[list[str], np.ndarray]:
    """Count each label on each client.

    Returns:
        (labels, counts): the dataset's distinct labels, sorted, as strings; and an int
        array of shape (clients, labels) with counts[c, j] = rows of labels[j] on client c.
    """
    uniques, codes = label_codes(dataset, label_column, "label_column")
    counts = np.zeros((len(partitions), len(uniques)), dtype=np.int64)
    for client, rows in enumerate(partitions):
        if len(rows):
            counts[client] = np.bincount(codes[np.asarray(rows)], minlength=len(uniques))
    return [str(u) for u in uniques], counts


def format_partition_table(labels: list[str], counts: np.ndarray, max_labels: int = 20) -> str:
    """A fixed-width text table: per client its size, number of labels and label counts.

    Only the `max_labels` most frequent labels get a column; the rest are summed into
    "(other)". A last row gives the totals.
    """
    counts = np.asarray(counts)
    _check_shapes(labels, counts)
    shown, shown_counts = _top_labels(labels, counts, max_labels)
    header = ["client", "size", "labels", *shown]
    body = [
        [str(client), str(int(row.sum())), str(int((counts[client] > 0).sum()))]
        + [str(int(v)) for v in shown_counts[client]]
        for client, row in enumerate(counts)
    ]
    body.append(
        ["total", str(int(counts.sum())), str(int((counts.sum(axis=0) > 0).sum()))]
        + [str(int(v)) for v in shown_counts.sum(axis=0)]
    )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


def plot_partition_heatmap(
    labels: list[str],
    counts: np.ndarray,
    path: str | Path,
    max_labels: int = 40,
    title: str | None = None,
) -> None:
    """Write a PNG heat-map of label counts, clients (rows) x labels (columns).

    Each cell is annotated with its count. Only the `max_labels` most frequent labels
    get a column (the rest are summed into "(other)"). The figure is drawn with the Agg
    canvas directly, without pyplot, so no global matplotlib state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(counts)
    _check_shapes(labels, counts)
    shown, shown_counts = _top_labels(labels, counts, max_labels)
    num_clients, num_labels = shown_counts.shape

    fig = Figure(figsize=(min(2 + 0.6 * num_labels, 30), min(1.5 + 0.45 * num_clients, 30)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shown_counts, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="examples")
    ax.set_xticks(range(num_labels), labels=shown, rotation=60, ha="right")
    ax.set_yticks(range(num_clients), labels=[str(c) for c in range(num_clients)])
    ax.set_xlabel("label")
    ax.set_ylabel("client")
    if title:
        ax.set_title(title)
    threshold = shown_counts.max() / 2 if shown_counts.size else 0
    for client in range(num_clients):
        for j in range(num_labels):
            value = int(shown_counts[client, j])
            ax.text(
                j, client, str(value), ha="center", va="center", fontsize=7,
                color="black" if value > threshold else "white",
            )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def _check_shapes(labels: list[str], counts: np.ndarray) -> None:
    """counts must be a 2-D (clients x labels) array matching `labels`."""
    if counts.ndim != 2 or counts.shape[1] != len(labels):
        raise ValueError(
            f"counts must have shape (clients, {len(labels)}) to match labels, got {counts.shape}"
        )


def _top_labels(
    labels: list[str], counts: np.ndarray, max_labels: int
) -> tuple[list[str], np.ndarray]:
    """Keep the `max_labels` most frequent label columns (in label order), sum the rest."""
    if len(labels) <= max_labels:
        return list(labels), counts
    totals = counts.sum(axis=0)
    keep = np.sort(np.argsort(-totals, kind="stable")[:max_labels])
    rest = np.setdiff1d(np.arange(len(labels)), keep)
    shown = [labels[j] for j in keep] + ["(other)"]
    return shown, np.column_stack([counts[:, keep], counts[:, rest].sum(axis=1)])
