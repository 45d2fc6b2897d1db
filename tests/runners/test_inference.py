"""``fedvlm eval`` and ``fedvlm predict`` on saved adapters: a run's final adapter scores
what the run logged, a merged adapter and a FedALT client's personalized adapter load and
run, one question gets the answer the trained model gives, and bad input is one line."""

import json

import pytest
import torch
from PIL import Image
from tiny import TINY_RUN

from fedvlm.cli import main
from fedvlm.tools.inference import adapter_config, load_adapter_model
from fedvlm.train.tasks import build_task


@pytest.fixture(scope="module")
def fedalt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    assert main(["run", *TINY_RUN, "federated.aggregation=fedalt", f"run.output_dir={root}", "run.name=alt"]) == 0
    return root, root / "alt"


def _last_eval(run_dir):
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["eval"]


def test_eval_of_a_runs_final_adapter_gives_the_logged_numbers(fedalt_run, capsys):
    root, run = fedalt_run
    capsys.readouterr()
    assert main(["eval", str(run / "adapters" / "final"), "--out", str(root / "final.json")]) == 0
    result = json.loads((root / "final.json").read_text())
    logged = _last_eval(run)
    assert result["accuracy"] == logged["accuracy"] and result["by_type"] == logged["by_type"]
    assert result["num_examples"] == logged["num_examples"] == 24
    assert json.loads(capsys.readouterr().out) == result


def test_eval_runs_a_personalized_fedalt_adapter_and_a_merged_one(fedalt_run):
    root, run = fedalt_run
    personal = run / "adapters" / "personalized" / "0"
    assert main(["eval", str(personal), "data.pooled_test_size=8", "--out", str(root / "p.json")]) == 0
    assert json.loads((root / "p.json").read_text())["num_examples"] == 8
    merged = root / "merged"
    assert main(["merge", str(personal), str(run / "adapters" / "personalized" / "1"), "--out", str(merged)]) == 0
    # outside a run directory: the default config, the base from the adapter's own config
    assert main(["eval", str(merged), "data.pooled_test_size=8", "--out", str(root / "m.json")]) == 0
    result = json.loads((root / "m.json").read_text())
    assert result["num_examples"] == 8 and result["model"].endswith("tiny-llava")


def test_predict_answers_as_the_adapted_model_does(fedalt_run, capsys):
    root, run = fedalt_run
    image = root / "red.png"
    Image.new("RGB", (64, 64), (220, 40, 40)).save(image)
    personal = run / "adapters" / "personalized" / "1"
    capsys.readouterr()
    assert main(["predict", str(personal), "--image", str(image), "--question", "what color is the shape?"]) == 0
    printed = capsys.readouterr().out.strip()
    cfg = adapter_config(personal, None, [])
    model, processor, family = load_adapter_model(cfg, personal, None)
    assert hasattr(model, "fedalt_gates")  # the client's mixing is on
    task = build_task(family, processor)
    rows = {"image": [Image.open(image).convert("RGB")], "question": ["what color is the shape?"]}
    with torch.no_grad():
        assert printed == task.predict(model, rows, cfg.eval.max_new_tokens)[0]


@pytest.mark.parametrize("args, message", [
    (["eval", "{root}/nowhere"], "no adapter_config.json"),
    (["predict", "{run}/adapters/final", "--text", "hi"], "give --image PATH and --question TEXT"),
    (["predict", "{run}/adapters/final", "--image", "{root}/missing.png", "--question", "q"], "not a readable image"),
])
def test_bad_input_is_one_line(fedalt_run, capsys, args, message):
    root, run = fedalt_run
    capsys.readouterr()
    assert main([a.format(root=root, run=run) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_text_classifier_adapter_predicts_one_of_its_labels(tmp_path, capsys):
    assert main(["run", *TINY_RUN, "model.path=embedded-text", "data.source=crowdflower", "data.max_length=32",
                 f"run.output_dir={tmp_path}", "run.name=text"]) == 0
    final = tmp_path / "text" / "adapters" / "final"
    capsys.readouterr()
    assert main(["predict", str(final), "--text", "I love this airline, great crew!"]) == 0
    assert capsys.readouterr().out.strip() in {"negative", "neutral", "positive"}
    assert main(["eval", str(final), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == _last_eval(tmp_path / "text")["accuracy"]
