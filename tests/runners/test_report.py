"""Tests for fedvlm.reporting.report on small synthetic run directories."""

import base64
from html.parser import HTMLParser
import json
from pathlib import Path

import pytest

from fedvlm.errors import DataError

from fedvlm.reporting import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TYPES = ("color", "shape", "yes/no")


def _round_record(rnd: int, clients: list[str]) -> dict:
    """A training round: ``clients`` took part; all three are evaluated locally."""
    acc = 0.5 + 0.1 * rnd + 0.013
    return {
        "round": rnd,
        "seconds": 20.0 + rnd + 0.04,
        "bytes_up": 1_000_000 * rnd + 234_567,
        "bytes_down": 2_000_000 + 345_678 * rnd,
        "clients": {
            c: {"loss": 2.0 - 0.3 * rnd + 0.1 * int(c), "examples": 480, "steps": 15, "seconds": 4.1}
            for c in clients
        },
        "eval": {
            "accuracy": acc,
            "num_examples": 1000,
            "by_type": {t: acc - 0.05 * i for i, t in enumerate(TYPES)},
            "clients": {c: {"accuracy": acc + 0.02 * int(c), "num_examples": 120} for c in "012"},
        },
    }


ZERO_SHOT = {
    "round": 0,
    "eval": {"accuracy": 0.2, "num_examples": 1000, "by_type": {"color": 0.1, "shape": 0.25, "yes/no": 0.5}},
}
METRICS = [
    ZERO_SHOT,
    _round_record(1, ["0", "1", "2"]),
    _round_record(2, ["0", "2"]),  # client 1 not sampled in round 2
    _round_record(3, ["0", "1", "2"]),
]
BASELINES = {
    "centralized": {"accuracy": 0.9, "by_type": {"color": 0.95, "shape": 0.85, "yes/no": 0.9},
                    "examples": 7680, "seconds": 80.1},
    "local": {
        "clients": {c: {"accuracy_local": 0.8, "accuracy_pooled": 0.6, "examples": 1920} for c in "012"},
        "mean_local": 0.8, "mean_pooled": 0.6, "seconds": 90.0,
    },
}
CONFIG = """\
run: {name: demo, seed: 0}
model: {path: embedded}
partition: {method: dirichlet, num_clients: 3, alpha: 0.5}
federated: {strategy: fedavg, rounds: 3, fraction: 1.0}
"""


def _write_run(run_dir: Path, metrics: list[dict], baselines: dict | None = None,
               config: str | None = CONFIG) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(m) for m in metrics]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")  # trailing blank line
    if baselines is not None:
        (run_dir / "baselines.json").write_text(json.dumps(baselines))
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    return run_dir


def _cells(table: str, label: str) -> list[str]:
    """The stripped cells of the table row whose first cell is ``label``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{table}")


def _header(table: str) -> list[str]:
    return [c.strip() for c in table.splitlines()[0].strip().strip("|").split("|")]


# ------------------------------------------------------------------------ read_metrics


def test_read_metrics_skips_blank_lines_and_sorts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n" + json.dumps(METRICS[2]) + "\n   \n" + json.dumps(METRICS[0]) + "\n"
    )
    assert [m["round"] for m in report.read_metrics(run)] == [0, 2]


def test_read_metrics_malformed_line_names_file_and_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(METRICS[0]) + "\n\n{\"round\": 1, oops\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 3\b"):
        report.read_metrics(run)


def test_read_metrics_missing_round_is_an_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"eval": {}}\n')
    with pytest.raises(ValueError, match="line 1"):
        report.read_metrics(run)


# ----------------------------------------------------------------------- summary_table


def test_summary_table_rows_in_order_with_baselines():
    table = report.summary_table(METRICS, BASELINES)
    labels = [_cells(table, lbl)[0] for lbl in ("zero-shot", "round 1", "round 2", "round 3")]
    lines = table.splitlines()
    order = [next(i for i, ln in enumerate(lines) if f"| {lbl} " in ln) for lbl in labels]
    order += [next(i for i, ln in enumerate(lines) if report.CENTRALIZED_LABEL in ln),
              next(i for i, ln in enumerate(lines) if report.LOCAL_LABEL in ln)]
    assert order == sorted(order)
    assert len(lines) == 2 + 4 + 2  # header, rule, 4 metric rows, 2 baseline rows
    assert "centralized (same samples)" in table
    assert "local-only (mean over clients, local test / pooled test)" in table


def test_summary_table_numbers():
    table = report.summary_table(METRICS, BASELINES)
    header = _header(table)
    for t in TYPES:
        assert f"{t} %" in header
    col = {name: i for i, name in enumerate(header)}

    for rec in METRICS[1:]:
        row = _cells(table, f"round {rec['round']}")
        ev = rec["eval"]
        assert row[col["accuracy %"]] == f"{100 * ev['accuracy']:.1f}"
        for t in TYPES:
            assert row[col[f"{t} %"]] == f"{100 * ev['by_type'][t]:.1f}"
        losses = [c["loss"] for c in rec["clients"].values()]
        assert row[col["mean loss"]] == f"{sum(losses) / len(losses):.3f}"
        assert row[col["MB up"]] == f"{rec['bytes_up'] / 1e6:.2f}"
        assert row[col["MB down"]] == f"{rec['bytes_down'] / 1e6:.2f}"
        assert row[col["seconds"]] == f"{rec['seconds']:.1f}"

    # Hand-checked spot values: 0.713 -> "71.3"; round 2 has clients 0 and 2 only.
    assert _cells(table, "round 2")[col["accuracy %"]] == "71.3"
    assert _cells(table, "round 2")[col["mean loss"]] == f"{(1.4 + 1.6) / 2:.3f}"

    zero = _cells(table, "zero-shot")
    assert zero[col["accuracy %"]] == "20.0"
    assert zero[col["color %"]] == "10.0"
    assert zero[col["mean loss"]] == report.MISSING
    assert zero[col["MB up"]] == report.MISSING

    central = _cells(table, report.CENTRALIZED_LABEL)
    assert central[col["accuracy %"]] == "90.0"
    assert central[col["shape %"]] == "85.0"
    assert central[col["seconds"]] == "80.1"
    local = _cells(table, report.LOCAL_LABEL)
    assert local[col["accuracy %"]] == "80.0 / 60.0"
    assert local[col["seconds"]] == "90.0"


def test_summary_table_without_baselines():
    table = report.summary_table(METRICS, {})
    assert "centralized" not in table
    assert "local-only" not in table
    assert report.summary_table(METRICS, None) == table


def test_summary_table_only_one_baseline():
    table = report.summary_table(METRICS, {"local": BASELINES["local"]})
    assert "local-only" in table
    assert "centralized" not in table


def test_summary_table_union_of_types():
    metrics = [
        {"round": 0, "eval": {"accuracy": 0.1, "by_type": {"color": 0.1}}},
        {"round": 1, "eval": {"accuracy": 0.2, "by_type": {"shape": 0.3}}},
    ]
    table = report.summary_table(metrics, {})
    header = _header(table)
    assert "color %" in header and "shape %" in header
    col = header.index("shape %")
    assert _cells(table, "zero-shot")[col] == report.MISSING
    assert _cells(table, "round 1")[col] == "30.0"


# ------------------------------------------------------------------------ write_report


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def test_write_report_full_run(tmp_path):
    run = _write_run(tmp_path / "run", METRICS, BASELINES)
    path = report.write_report(run)
    assert path == run / "report.md"
    text = path.read_text()
    for name in ("accuracy", "client_accuracy", "loss", "bytes"):
        assert f"plots/{name}.png" in text
        _assert_png(run / "plots" / f"{name}.png")
    assert "| round 3 " in text
    assert "best round" not in text  # a round picked on the test set is not reported
    # a config from before eval.references (and with no eval section): fedvlm's old reading, named as such
    assert "answers scored**: `each generated answer's first line (eval.answer_span=first_line), references processed" in text
    assert "not the official VQA evaluation" in text
    official = _write_run(tmp_path / "official", METRICS, BASELINES,
                          config=CONFIG + "eval: {answer_span: whole, references: official}\n")
    assert "answers scored**: `the official VQA evaluation (vqaEval.py)" in report.write_report(official).read_text()
    assert "final accuracy**: 81.3%" in text
    assert "`embedded`" in text and "dirichlet (alpha 0.5)" in text
    assert text.startswith("# Run report: demo")


def test_write_report_zero_shot_only(tmp_path):
    run = _write_run(tmp_path / "run", [ZERO_SHOT], baselines=None, config="run: {name: z}\n")
    text = report.write_report(run).read_text()
    assert "zero-shot" in text
    assert "final accuracy" not in text
    _assert_png(run / "plots" / "accuracy.png")
    for name in ("client_accuracy", "loss", "bytes"):
        assert not (run / "plots" / f"{name}.png").exists()
        assert f"plots/{name}.png" not in text


@pytest.mark.parametrize("config", [None, "missing dir"])
def test_write_report_refuses_a_directory_that_is_not_a_run(tmp_path, config):
    run = tmp_path / "run"
    if config is None:
        _write_run(run, [ZERO_SHOT], baselines=None, config=None)
    before = sorted(p.name for p in run.iterdir()) if run.exists() else None
    with pytest.raises(DataError, match="not a fedvlm run directory"):
        report.write_report(run)
    assert (sorted(p.name for p in run.iterdir()) if run.exists() else None) == before


def test_write_report_without_baselines_or_eval_clients(tmp_path):
    metrics = [ZERO_SHOT] + [_round_record(r, ["0", "1", "2"]) for r in (1, 2)]
    for m in metrics[1:]:
        del m["eval"]["clients"]
    run = _write_run(tmp_path / "run", metrics)
    text = report.write_report(run).read_text()
    assert "centralized" not in text.split("## Plots")[0]
    assert not (run / "plots" / "client_accuracy.png").exists()
    for name in ("accuracy", "loss", "bytes"):
        _assert_png(run / "plots" / f"{name}.png")


def test_write_report_empty_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run: {name: e}\n")
    text = report.write_report(run).read_text()
    assert "no metrics recorded yet" in text


def test_the_speed_line_sums_the_clients_data_wait_and_gives_the_last_evaluation_rate():
    metrics = [
        {**ZERO_SHOT, "eval_speed": {"seconds": 10.0, "questions_per_second": 100.0}},
        {"round": 1, "clients": {"0": {"seconds": 4.0, "data_seconds": 0.2}, "1": {"seconds": 6.0, "data_seconds": 0.3}},
         "eval_speed": {"seconds": 4.0, "questions_per_second": 250.0}, "eval": {"accuracy": 0.5}},
    ]
    # (0.2 + 0.3) / (4 + 6) = 5.0%; the last round's 250 questions/s
    assert report.speed(metrics) == ["- **speed**: training waited for batches 5.0% of its time; evaluation 250 questions/s"]
    assert report.speed(METRICS) == []  # older records: no line


class _Page(HTMLParser):
    """What a browser would show of report.html: its tables' cells and its images."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append((attrs.get("alt"), attrs.get("src", "")))
        elif tag in ("link", "script") or (tag == "a" and attrs.get("href", "").startswith("http")):
            self.links.append(tag)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None


def test_report_html_holds_every_table_and_plot_of_the_report(tmp_path):
    run = _write_run(tmp_path / "run", METRICS, BASELINES)
    text = report.write_report(run).read_text()
    page = _Page()
    page.feed((run / "report.html").read_text())
    # every markdown table, row for row and cell for cell (markup stripped)
    md_tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            if current is None:
                current = []
                md_tables.append(current)
            current.append([c.strip().replace("**", "").replace("`", "") for c in line.strip().strip("|").split("|")])
        elif not line.startswith("|"):
            current = None
    assert len(page.tables) == len(md_tables) >= 1
    assert page.tables == md_tables
    # every plot inline as a PNG, nothing fetched from elsewhere
    plots = [line for line in text.splitlines() if line.startswith("![")]
    assert len(page.images) == len(plots) == 4
    for _, src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.links == []
