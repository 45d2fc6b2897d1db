"""The bad-input catalogue: malformed configs, data files, model directories, adapters and
run directories. Each must stop with exit code 2 and one line that names the culprit, no
traceback, and leave every file that existed before byte-identical (nothing deleted,
nothing added)."""

import json
import shutil
from pathlib import Path

import pytest

from tiny import TINY_RUN
from tiny import finished_run as run_to_the_end
from fedvlm.cli import main
from fedvlm.models.load import embedded_model_path

FAST = TINY_RUN


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed 2-round run (its directory and adapters are copied into each case)."""
    return run_to_the_end(tmp_path_factory.mktemp("finished"))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _image(path: Path) -> str:
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return path.name


def _vqa_rows(ws: Path, n: int = 4, image: str | None = None) -> list[dict]:
    image = image or _image(ws / "red.png")
    return [{"image": image, "question": "what color is it?", "answer": "red"} for _ in range(n)]


def _copy_run(ws: Path, finished: Path) -> Path:
    run = ws / "runs" / "done"
    shutil.copytree(finished, run)
    return run


def _model_copy(ws: Path) -> Path:
    model = ws / "model"
    shutil.copytree(embedded_model_path(), model)
    return model


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each case: (id, setup(ws, finished) -> argv, text the error line must contain).
CASES = [
    # ---- config keys and values
    ("unknown-key", lambda ws, f: ["run", "train.lrr=1"], "train.lrr"),
    ("bad-type", lambda ws, f: ["run", "train.lr=abc"], "train.lr"),
    ("negative-seed", lambda ws, f: ["run", "run.seed=-1"], "run.seed"),
    ("dropout-above-one", lambda ws, f: ["run", "lora.dropout=2"], "lora.dropout"),
    ("negative-warmup", lambda ws, f: ["run", "train.warmup_steps=-1"], "train.warmup_steps"),
    ("zero-alpha", lambda ws, f: ["run", "lora.alpha=0"], "lora.alpha"),
    ("min-clients-above-clients", lambda ws, f: ["run", "federated.min_clients=9"], "federated.min_clients"),
    ("empty-run-name", lambda ws, f: ["run", "run.name="], "run.name"),
    ("dotdot-run-name", lambda ws, f: ["run", "run.name=.."], "run.name"),
    ("absolute-run-name", lambda ws, f: ["run", f"run.name={ws / 'elsewhere'}"], "run.name"),
    ("unknown-strategy", lambda ws, f: ["run", "federated.strategy=fedsgd"], "federated.strategy"),
    ("zero-fraction", lambda ws, f: ["run", "federated.fraction=0"], "federated.fraction"),
    ("unknown-weighting", lambda ws, f: ["run", "federated.weighting=size"], "federated.weighting"),
    ("unknown-answer-span", lambda ws, f: ["run", "eval.answer_span=word"], "eval.answer_span"),
    ("server-rank-above-r", lambda ws, f: ["run", "federated.aggregation=svd", "federated.server_rank=99"], "federated.server_rank"),
    ("option-the-strategy-lacks", lambda ws, f: ["run", "federated.mu=0.1"], "federated.mu"),
    ("zero-clients", lambda ws, f: ["run", "partition.num_clients=0"], "partition.num_clients"),
    ("zero-train-examples", lambda ws, f: ["run", "data.max_train_examples=0"], "data.max_train_examples"),
    ("rank-for-unknown-client", lambda ws, f: ["run", "lora.client_ranks={9: 2}"], "lora.client_ranks.9"),
    ("missing-config-file", lambda ws, f: ["run", str(ws / "nope.yaml")], "nope.yaml"),
    ("config-not-yaml", lambda ws, f: ["run", str(_write(ws / "bad.yaml", "run: [unclosed"))], "bad.yaml"),
    ("config-not-a-mapping", lambda ws, f: ["run", str(_write(ws / "list.yaml", "- a\n- b\n"))], "list.yaml"),
    ("more-cpus-per-flower-client-than-exist", lambda ws, f: [
        "run", *FAST, "run.engine=flower-sim", "run.flower_client_cpus=4096"], "run.flower_client_cpus"),
    ("config-unknown-section", lambda ws, f: ["run", str(_write(ws / "sec.yaml", "training: {lr: 1}\n"))], "training"),
    # ---- run directories
    ("overwrite-a-directory-that-is-no-run", lambda ws, f: [
        "run", *FAST, (_mkfile(ws / "runs" / "mine" / "thesis.tex"), "run.name=mine")[1], "run.overwrite=true"], "runs/mine"),
    ("existing-run-without-overwrite", lambda ws, f: ["run", *FAST, (_copy_run(ws, f), "run.name=done")[1]], "already exists"),
    ("overwrite-with-bad-data-keeps-the-old-run", lambda ws, f: [
        "run", *FAST, (_copy_run(ws, f), "run.name=done")[1], "run.overwrite=true", "data.source=/nope.jsonl"], "/nope.jsonl"),
    ("output-dir-under-a-file", lambda ws, f: ["run", f"run.output_dir={_mkfile(ws / 'afile')}/runs"], "run.output_dir"),
    # ---- resume
    ("resume-missing-dir", lambda ws, f: ["run", "--resume", str(ws / "gone")], "gone"),
    ("resume-not-a-run", lambda ws, f: ["run", "--resume", str((ws / "plain").mkdir() or ws / "plain")], "config.yaml"),
    ("resume-changes-rank", lambda ws, f: ["run", "--resume", str(_copy_run(ws, f)), "lora.r=4"], "lora.r"),
    ("resume-changes-lr", lambda ws, f: ["run", "--resume", str(_copy_run(ws, f)), "train.lr=0.5"], "train.lr"),
    ("resume-fewer-rounds-than-done", lambda ws, f: ["run", "--resume", str(_copy_run(ws, f)), "federated.rounds=1"], "federated.rounds"),
    ("resume-damaged-checkpoint-state", lambda ws, f: [
        "run", "--resume", str(_damage(_copy_run(ws, f), "checkpoint/round_0002/state.json", text="{not json"))], "state.json"),
    ("resume-truncated-checkpoint-arrays", lambda ws, f: [
        "run", "--resume", str(_damage(_copy_run(ws, f), "checkpoint/round_0002/global.safetensors"))], "global.safetensors"),
    ("resume-damaged-metrics", lambda ws, f: [
        "run", "--resume", str(_damage(_copy_run(ws, f), "metrics.jsonl", text='{"round": 0}\n{oops\n{"round": 1}\n'))], "metrics.jsonl"),
    ("resume-damaged-config", lambda ws, f: [
        "run", "--resume", str(_damage(_copy_run(ws, f), "config.yaml", text="run: [unclosed"))], "config.yaml"),
    # ---- data
    ("missing-data-file", lambda ws, f: ["run", *FAST, "data.source=/nope.jsonl"], "/nope.jsonl"),
    ("data-without-question-column", lambda ws, f: [
        "run", *FAST, f"data.source={_jsonl(ws / 'd.jsonl', [{'image': _image(ws / 'i.png'), 'answer': 'red'}])}"], "question"),
    ("data-line-not-json", lambda ws, f: ["run", *FAST, f"data.source={_write(ws / 'd.jsonl', '{oops}')}"], "d.jsonl"),
    ("data-image-missing", lambda ws, f: [
        "run", *FAST, f"data.source={_jsonl(ws / 'd.jsonl', _vqa_rows(ws, image='missing.png'))}"], "missing.png"),
    ("data-image-not-an-image", lambda ws, f: [
        "run", *FAST, f"data.source={_jsonl(ws / 'd.jsonl', _vqa_rows(ws, image=_write(ws / 'notes.png', 'hello').name))}"], "notes.png"),
    ("data-unknown-column-key", lambda ws, f: ["run", *FAST, "data.columns={foo: bar}"], "foo"),
    ("text-data-for-a-vision-model", lambda ws, f: ["run", *FAST, "data.source=crowdflower"], "data.source"),
    ("image-data-for-a-text-model", lambda ws, f: ["run", *FAST, "model.path=embedded-text"], "data.source"),
    ("unknown-partition-label-column", lambda ws, f: [
        "partition", *FAST, "partition.method=dirichlet", "partition.label_column=nope", "--out", str(ws / "h.png")], "nope"),
    # ---- model directories
    ("missing-model-dir", lambda ws, f: ["run", *FAST, f"model.path={ws / 'nomodel'}"], "nomodel"),
    ("model-dir-without-config", lambda ws, f: ["run", *FAST, f"model.path={(ws / 'empty').mkdir() or ws / 'empty'}"], "config.json"),
    ("model-truncated-weights", lambda ws, f: [
        "run", *FAST, f"model.path={_damage(_model_copy(ws), 'model.safetensors')}"], "model.safetensors"),
    ("unknown-model-family", lambda ws, f: ["run", *FAST, "model.family=nonsense"], "model.family"),
    # ---- adapters (merge)
    ("merge-missing-adapter", lambda ws, f: ["merge", str(ws / "noadapter"), "--out", str(ws / "m")], "noadapter"),
    ("merge-truncated-adapter", lambda ws, f: [
        "merge", str(_damage(_adapter(ws, f), "adapter_model.safetensors")), "--out", str(ws / "m")], "adapter_model.safetensors"),
    ("merge-adapter-config-not-json", lambda ws, f: [
        "merge", str(_damage(_adapter(ws, f), "adapter_config.json", text="{")), "--out", str(ws / "m")], "adapter_config.json"),
    ("merge-rank-zero", lambda ws, f: ["merge", str(_adapter(ws, f)), "--rank", "0", "--out", str(ws / "m")], "--rank"),
    ("merge-rank-above-total", lambda ws, f: ["merge", str(_adapter(ws, f)), "--rank", "1000", "--out", str(ws / "m")], "--rank"),
    ("merge-out-not-empty", lambda ws, f: ["merge", str(_adapter(ws, f)), "--out", str(_mkfile(ws / "m" / "x").parent)], "--out"),
    ("merge-weights-count", lambda ws, f: ["merge", str(_adapter(ws, f)), "--weights", "1", "2", "--out", str(ws / "m")], "weights"),
    # ---- report and bench
    ("report-missing-dir", lambda ws, f: ["report", str(ws / "norun")], "norun"),
    ("report-not-a-run", lambda ws, f: ["report", str(_mkfile(ws / "docs" / "a.txt").parent)], "docs"),
    ("bench-missing-file", lambda ws, f: ["bench", str(ws / "nobench.yaml")], "nobench.yaml"),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mkfile(path: Path) -> Path:
    return _write(path, "user data\n")


def _damage(root: Path, name: str, text: str | None = None) -> Path:
    target = root / name
    if text is None:
        _truncate(target)
    else:
        target.write_text(text)
    return root


def _adapter(ws: Path, finished: Path) -> Path:
    adapter = ws / "adapter"
    shutil.copytree(finished / "adapters" / "final", adapter)
    return adapter


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("setup,culprit", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, monkeypatch, capsys, finished_run, setup, culprit):
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path, finished_run)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedvlm: error: "), err
    assert "Traceback" not in err
    assert culprit in lines[0], lines[0]
    assert _snapshot(tmp_path) == before
