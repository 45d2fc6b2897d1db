"""`fedvlm merge` and warm starts, on adapters trained by a real tiny run."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedvlm.cli import main
from fedvlm.config import load_config
from fedvlm.core.lora import dense_delta
from fedvlm.engine.simulate import run_simulation
from tiny import TINY_RUN


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    fed = run_simulation(load_config(None, TINY_RUN), run_dir)
    return fed, run_dir / "adapters"


def _weights(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_merge_one_adapter_weight_one_is_unchanged(trained, tmp_path):
    _, adapters = trained
    assert main(["merge", str(adapters / "final"), "--method", "naive", "--weights", "1", "--out", str(tmp_path / "m")]) == 0
    a, b = _weights(adapters / "final"), _weights(tmp_path / "m")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_merge_naive_and_svd_weighted(trained, tmp_path):
    _, adapters = trained
    r1, r2 = adapters / "round_0001", adapters / "round_0002"
    assert main(["merge", str(r1), str(r2), "--method", "naive", "--sizes", "100", "300", "--out", str(tmp_path / "n")]) == 0
    w1, w2, n = _weights(r1), _weights(r2), _weights(tmp_path / "n")
    for k in n:
        np.testing.assert_allclose(n[k], 0.25 * w1[k] + 0.75 * w2[k], atol=1e-6)
    assert main(["merge", str(r1), str(r2), "--method", "svd", "--rank", "16", "--out", str(tmp_path / "s")]) == 0
    s = _weights(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] / cfg["r"] == 16 / 8  # clients' alpha/r kept
    d1, d2, ds = dense_delta(w1, 2.0), dense_delta(w2, 2.0), dense_delta(s, 2.0)
    for layer in ds:  # rank 16 holds the exact mean of two rank-8 updates
        np.testing.assert_allclose(ds[layer], 0.5 * d1[layer] + 0.5 * d2[layer], atol=1e-5)


def test_merged_adapter_loads_in_stock_peft(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    fed, adapters = trained
    main(["merge", str(adapters / "round_0001"), str(adapters / "final"), "--method", "svd", "--out", str(tmp_path / "m")])
    base = AutoModelForImageTextToText.from_pretrained(fed.model.peft_config["default"].base_model_name_or_path)
    model = PeftModel.from_pretrained(base, str(tmp_path / "m"))
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    merged = _weights(tmp_path / "m")
    some = next(k for k in merged if "lora_A" in k)
    assert torch.equal(loaded[some], torch.from_numpy(merged[some]))


def test_merge_errors_name_the_problem(trained, tmp_path, capsys):
    _, adapters = trained
    assert main(["merge", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["merge", str(adapters / "final"), "--weights", "1", "2", "--out", str(tmp_path / "o")]) == 2
    assert "weights" in capsys.readouterr().err


def test_warm_start_from_adapter(trained, tmp_path):
    fed, adapters = trained
    cfg = load_config(None, [*TINY_RUN, f"lora.init_adapter={adapters / 'final'}", "federated.rounds=1"])
    run_dir = tmp_path / "warm"
    run_dir.mkdir()
    warm = run_simulation(cfg, run_dir, fed=None)
    final = _weights(adapters / "final")
    assert all(np.array_equal(warm.initial_adapter[k], final[k]) for k in final)
    bad = load_config(None, [*TINY_RUN, f"lora.init_adapter={adapters / 'final'}", "lora.r=4"])
    from fedvlm.errors import ModelError
    from fedvlm.engine.federation import build_federation
    with pytest.raises(ModelError, match="lora.init_adapter"):
        build_federation(bad)
