"""What a new user hit (issue: robust federation, "What a new user hit this week"): each a
one-line error before anything is written, or nothing already written lost."""

import json

import pytest

from fedvlm.config import load_config
from fedvlm.errors import ConfigError
from tiny import TINY_RUN


def test_a_key_given_twice_in_the_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  batch_size: 8\n  lr: 5.0\n")
    with pytest.raises(ConfigError, match=r"c.yaml is not valid YAML: key 'lr' appears twice in one mapping \(line 4\)"):
        load_config(path)
    path.write_text("train:\n  lr: 0.001\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"key 'train' appears twice"):
        load_config(path)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_number_that_is_not_finite_is_an_error(value):
    with pytest.raises(ConfigError, match=r"config key 'train.lr': expected a finite number"):
        load_config(None, [f"train.lr={value}"])
    with pytest.raises(ConfigError, match=r"config key 'federated.server_lr': expected a finite number"):
        load_config(None, ["federated.strategy=fedadam", f"federated.server_lr={value}"])


def test_eval_out_is_checked_before_the_evaluation_and_never_overwritten(tmp_path, capsys):
    from fedvlm.cli import main

    adapter = tmp_path / "missing-adapter"  # the --out check comes first: no adapter needed
    taken = tmp_path / "result.json"
    taken.write_text("keep me")
    for out, says in ((taken, "already exists"), (tmp_path / "no" / "r.json", "no directory")):
        assert main(["eval", str(adapter), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err.strip().splitlines()[-1]
    assert taken.read_text() == "keep me"


def test_a_resume_that_fails_leaves_config_yaml_as_it_was(tmp_path, capsys):
    from fedvlm.cli import main

    # a two-round run whose round 3, if it ever runs, loses both clients
    faults = "federated.faults=[{kind: raise, rounds: [3]}]"
    assert main(["run", *TINY_RUN, faults, f"run.output_dir={tmp_path}", "run.name=r"]) == 0
    run = tmp_path / "r"
    before = (run / "config.yaml").read_text()
    assert main(["run", "--resume", str(run), "federated.rounds=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "round 3: 0 of 2 clients answered" in err and "stopped after round 2" in err
    assert (run / "config.yaml").read_text() == before
    assert [json.loads(line)["round"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
