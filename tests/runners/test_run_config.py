"""The Flower run config fedvlm reads and writes: snake_case keys, overrides as a JSON list
(a value with spaces stays one override), a TOML file instead of a quoted string."""

import tomllib

import pytest

from fedvlm.errors import ConfigError
from fedvlm.flower.run_config import config_from_run_config, overrides_of, run_dir_of, write_run_config


def test_the_run_config_file_reads_back_as_the_values_written(tmp_path):
    overrides = ["train.lr=0.001", "data.system_prompt=You are a radiologist. Answer \"yes\" or 'no'."]
    path = write_run_config(tmp_path / "run.toml", overrides=overrides, run_dir=tmp_path / "runs" / "a b", resume=True)
    values = tomllib.loads(path.read_text())
    assert values == {"config": "", "overrides": values["overrides"], "run_dir": str(tmp_path / "runs" / "a b"),
                      "resume": True}
    assert overrides_of(values) == overrides
    assert run_dir_of(values) == tmp_path / "runs" / "a b"
    cfg = config_from_run_config(values)
    assert cfg.train.lr == 0.001 and cfg.data.system_prompt == "You are a radiologist. Answer \"yes\" or 'no'."


@pytest.mark.parametrize("bad", ["train.lr=0.1 train.batch_size=4", '{"train.lr": 1}', "[1, 2]"])
def test_overrides_that_are_not_a_json_list_of_strings_are_one_line(bad):
    with pytest.raises(ConfigError, match="run config 'overrides': expected a JSON list"):
        overrides_of({"overrides": bad})


def test_a_run_config_without_a_run_dir_is_one_line():
    with pytest.raises(ConfigError, match="run config 'run_dir'"):
        run_dir_of({"config": ""})
