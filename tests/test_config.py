import pytest

from fedvlm.config import load_config
from fedvlm.errors import ConfigError


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["train.lr=1e-3", "partition.num_clients=3", "lora.target_modules=[q_proj,v_proj]"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.partition.num_clients == 3
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "override,names",
    [
        ("train.lrr=1", "train.lrr"),
        ("trian.lr=1", "trian"),
        ("train.lr=abc", "train.lr"),
        ("partition.method=random", "partition.method"),
        ("federated.rounds=0", "federated.rounds"),
        ("federated.fraction=1.5", "federated.fraction"),
        ("data.pooled_test_size=1.5", "data.pooled_test_size"),
        ("run.baselines=[central]", "run.baselines"),
        ("lora.client_ranks={9: 2}", "lora.client_ranks.9"),
        ("lora.client_ranks={0: 20}", "lora.client_ranks.0"),
        ("lora.client_ranks={0: two}", "lora.client_ranks.0"),
        ("federated.mu=0.1", "federated.mu"),
        ("federated.server_rank=4", "federated.server_rank"),
    ],
)
def test_bad_key_or_value_names_it(override, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config(None, [override])


def test_combinations_that_cannot_work_are_refused():
    for overrides, names in [
        (["federated.aggregation=svd", "federated.strategy=fedadam"], "federated.aggregation"),
        (["federated.aggregation=flora", "federated.strategy=scaffold"], "federated.aggregation"),
        (["federated.aggregation=ffa", "lora.client_ranks={0: 2}"], "lora.client_ranks"),
    ]:
        with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
            load_config(None, overrides)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2}")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_shipped_config_validates():
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs"
    # bench grids have their own schema, validated in tests/runners/test_bench.py
    configs = sorted(p for p in root.rglob("*.yaml") if "bench" not in p.relative_to(root).parts)
    assert configs
    for path in configs:
        load_config(path)
