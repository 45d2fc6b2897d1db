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
This module reads the run directory and writes the Markdown; the plots are drawn by
`fedvlm.reporting.plots`.
"""

from pathlib import Path
from typing import Any

import yaml

from fedvlm.reporting.html import write_html
from fedvlm.algorithms.registry import VARIANTS
from fedvlm.errors import DataError
from fedvlm.fileio import write_atomic
from fedvlm.reporting.plots import PLOT_NAMES, write_plots
from fedvlm.reporting.safety import left_out, privacy, secure_aggregation
from fedvlm.reporting.records import (  # noqa: F401 (read_metrics, read_baselines: re-exported)
    BASELINES_FILE,
    METRICS_FILE,
    MetricsFileError,
    read_baselines,
    read_metrics,
    centralized_accuracy,
    final_round,
    global_accuracy,
    local_pooled_accuracy,
    mean_client_loss,
    number,
    centralized_personalized,
    final_personalized,
    local_personalized,
    personalized_accuracy,
    question_types,
)

CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"

CENTRALIZED_LABEL = "centralized (same samples)"
LOCAL_LABEL = "local-only (mean over clients, local test / pooled test)"
MISSING = "-"


# ---------------------------------------------------------------------------- reading


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


# ------------------------------------------------------------------------- formatting


def format_pct(value: Any) -> str:
    """Accuracy in [0, 1] as a percentage with one decimal: 0.713 -> ``"71.3"``."""
    v = number(value)
    return MISSING if v is None else f"{100 * v:.1f}"


def format_mb(num_bytes: Any) -> str:
    """Bytes as megabytes (10^6) with two decimals: 1_234_567 -> ``"1.23"``."""
    v = number(num_bytes)
    return MISSING if v is None else f"{v / 1e6:.2f}"


def format_seconds(value: Any) -> str:
    """Seconds with one decimal."""
    v = number(value)
    return MISSING if v is None else f"{v:.1f}"


def format_loss(value: Any) -> str:
    """Loss with three decimals."""
    v = number(value)
    return MISSING if v is None else f"{v:.3f}"


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


def _pct_pm(pair: tuple[float, float] | None) -> str:
    return MISSING if pair is None else f"{format_pct(pair[0])} ± {format_pct(pair[1])}"


def summary_table(metrics: list[dict], baselines: dict | None = None) -> str:
    """Markdown table: zero-shot, one row per round, then the baselines when present.

    Columns: row label, pooled accuracy (%), one accuracy column per question type (%),
    mean client training loss, MB up, MB down, seconds. Missing values show as ``-``.
    The local-only row shows ``local / pooled`` in the accuracy column.
    """
    baselines = baselines or {}
    types = question_types(metrics, baselines)
    text = [m for m in TEXT_COLUMNS if any(m in (r.get("eval") or {}) for r in metrics)]
    own = any(personalized_accuracy(r) is not None for r in metrics)
    private = any("privacy" in r for r in metrics)
    header = ["", "accuracy %", *(["personalized % (mean ± std)"] if own else []), *(TEXT_COLUMNS[m] for m in text), *(f"{t} %" for t in types), "mean loss",
              "MB up", "MB down", "seconds", *(["ε"] if private else [])]
    rows = []
    for record in metrics:
        ev = record.get("eval") or {}
        by_type = ev.get("by_type") or {}
        label = "zero-shot" if record["round"] == 0 else f"round {record['round']}"
        rows.append([
            label,
            format_pct(ev.get("accuracy")),
            *([_pct_pm(personalized_accuracy(record))] if own else []),
            *(_text_cell(m, ev.get(m)) for m in text),
            *(format_pct(by_type.get(t)) for t in types),
            format_loss(mean_client_loss(record)),
            format_mb(record.get("bytes_up")),
            format_mb(record.get("bytes_down")),
            format_seconds(record.get("seconds")),
            *([_epsilon(record)] if private else []),
        ])
    central = baselines.get("centralized")
    if isinstance(central, dict):
        by_type = central.get("by_type") or {}
        rows.append([
            CENTRALIZED_LABEL,
            format_pct(central.get("accuracy")),
            *([_pct_pm(centralized_personalized(baselines))] if own else []),
            *(_text_cell(m, central.get(m)) for m in text),
            *(format_pct(by_type.get(t)) for t in types),
            MISSING, MISSING, MISSING,
            format_seconds(central.get("seconds")),
            *([MISSING] if private else []),
        ])
    local = baselines.get("local")
    if isinstance(local, dict):
        rows.append([
            LOCAL_LABEL,
            f"{format_pct(local.get('mean_local'))} / {format_pct(local.get('mean_pooled'))}",
            *([_pct_pm(local_personalized(baselines))] if own else []),
            *(MISSING for _ in text),
            *(MISSING for _ in types),
            MISSING, MISSING, MISSING,
            format_seconds(local.get("seconds")),
            *([MISSING] if private else []),
        ])
    return markdown_table(header, rows)


def _epsilon(record: dict) -> str:
    v = number((record.get("privacy") or {}).get("epsilon"))
    return "0" if record["round"] == 0 else MISSING if v is None else f"{v:.2f}"


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
        ("client weights", get("federated", "weighting")),
        ("seed", get("run", "seed")),
        ("answers scored", scoring(get("eval", "answer_span"), get("eval", "references"))),
        ("LoRA variant", get("federated", "aggregation")),
        ("privacy", None if get("federated", "privacy") in (None, "none") else get("federated", "privacy")),
        ("secure aggregation", None if get("federated", "secure_aggregation") in (None, "none")
         else get("federated", "secure_aggregation")),
        ("evaluated on", None if not get("data", "validation_size")
         else f"{get('data', 'validation_size')} validation rows held out of the training split (not the test split)"),
    ]
    lines = [f"- **{name}**: `{value}`" for name, value in items if value is not None]
    variant = VARIANTS.get(get("federated", "aggregation"))
    if variant is not None and variant.personalized:
        lines.append("- **pooled accuracy** is the server's reference (the mean of the clients' own arrays, no "
                     "mixer), not a model this method deploys: its numbers are the personalized ones")
    return lines


TEXT_COLUMNS = {"exact_match": "EM %", "rouge_l": "ROUGE-L %", "bleu": "BLEU", "loss": "eval loss"}


def _text_cell(name: str, value: Any) -> str:
    if name in ("exact_match", "rouge_l"):
        return format_pct(value)
    v = number(value)
    return MISSING if v is None else (f"{v:.1f}" if name == "bleu" else f"{v:.3f}")


def lead(metrics: list[dict], metric: str) -> list[str]:
    """The bullet ``eval.metric`` puts first where it is not accuracy: its zero-shot and
    final values on the pooled test."""
    if metric == "accuracy":
        return []
    values = [(r["round"], (r.get("eval") or {}).get(metric)) for r in metrics]
    values = [(n, v) for n, v in values if number(v) is not None]
    if not values:
        return [f"- **{metric}**: not recorded (text metrics are computed for text-only generative models)"]
    (first_round, first), (last_round, last) = values[0], values[-1]
    label = TEXT_COLUMNS.get(metric, metric).replace(" %", "")
    return [f"- **{label}** (eval.metric): {_text_cell(metric, last)} at round {last_round} "
            f"({_text_cell(metric, first)} at round {first_round})"]


def headline(metrics: list[dict], baselines: dict | None = None) -> list[str]:
    """Markdown bullet lines: zero-shot and final accuracy, and gaps to baselines. (No "best
    round": a round picked by its test accuracy would be a number selected on the test set.)"""
    baselines = baselines or {}
    lines = []
    zero = next((global_accuracy(r) for r in metrics if r["round"] == 0), None)
    if zero is not None:
        lines.append(f"- **zero-shot accuracy**: {format_pct(zero)}%")
    final = final_round(metrics)
    if final is not None and final[0] >= 1:
        text = f"- **final accuracy**: {format_pct(final[1])}% (round {final[0]}"
        if zero is not None:
            text += f", {100 * (final[1] - zero):+.1f} points vs zero-shot"
        lines.append(text + ")")
        central = centralized_accuracy(baselines)
        if central is not None:
            lines.append(f"- **gap to centralized**: {100 * (final[1] - central):+.1f} points "
                         f"(centralized {format_pct(central)}%)")
        own = final_personalized(metrics)
        if own is not None:
            lines.append(f"- **personalized accuracy** (each client's own model on its local test): "
                         f"{_pct_pm(own)}% (mean ± std over clients, round {final[0]})")
        local = local_pooled_accuracy(baselines)
        if local is not None:
            lines.append(f"- **gain over local-only** (pooled test): {100 * (final[1] - local):+.1f} "
                         f"points (local-only {format_pct(local)}%)")
    return lines


def speed(metrics: list[dict]) -> list[str]:
    """The bullet on speed: the share of the clients' training time spent waiting for
    batches, and the pooled evaluation's questions per second (last round)."""
    clients = [c for r in metrics for c in (r.get("clients") or {}).values() if number(c.get("data_seconds")) is not None]
    trained = sum(c["seconds"] for c in clients)
    rates = [r["eval_speed"]["questions_per_second"] for r in metrics
             if number((r.get("eval_speed") or {}).get("questions_per_second")) is not None]
    parts = []
    if trained > 0:
        parts.append(f"training waited for batches {100 * sum(c['data_seconds'] for c in clients) / trained:.1f}% of its time")
    if rates:
        parts.append(f"evaluation {rates[-1]:.0f} questions/s")
    return [f"- **speed**: {'; '.join(parts)}"] if parts else []


def scoring(span: str | None, references: str | None) -> str:
    """How the run scored answers, in words: the official VQA evaluation, or which of
    fedvlm's friendlier readings (not comparable to it)."""
    span, references = span or "first_line", references or "processed"  # (runs before both options existed)
    if (span, references) == ("whole", "official"):
        return "the official VQA evaluation (vqaEval.py) of each whole generated answer"
    parts = {"whole": "each whole generated answer", "first_line": "each generated answer's first line (eval.answer_span=first_line)",
             "first_clause": "each generated answer's first clause (eval.answer_span=first_clause)"}[span]
    refs = "references processed like the prediction (eval.references=processed)" if references == "processed" \
        else "references as vqaEval.py reads them"
    return f"{parts}, {refs}: not the official VQA evaluation, not comparable to it"
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
        metric = (config.get("eval") or {}).get("metric", "accuracy") if isinstance(config, dict) else "accuracy"
        parts += (lead(metrics, metric) + headline(metrics, baselines) + left_out(metrics) + privacy(metrics)
                  + secure_aggregation(metrics)
                  + speed(metrics))
        parts += ["", summary_table(metrics, baselines), ""]
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
    """Write ``run_dir/report.md``, ``run_dir/report.html`` and ``run_dir/plots/*.png``;
    return the markdown report's path.

    Works on partial runs: plots without data are skipped and the report says so.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise DataError(f"{run_dir} is not a fedvlm run directory (no {CONFIG_FILE}); no report written")
    metrics = read_metrics(run_dir)
    baselines = read_baselines(run_dir)
    config = read_config(run_dir)
    plots = write_plots(metrics, baselines, run_dir / PLOTS_DIR)
    name = (config.get("run") or {}).get("name") if isinstance(config.get("run"), dict) else None
    text = render_report(name or run_dir.name, config, metrics, baselines, plots)
    path = run_dir / REPORT_FILE
    write_atomic(path, text)
    write_html(path)  # report.html beside it: the same, plots inline, one file
    return path
