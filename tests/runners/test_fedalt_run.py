"""FedALT through the real simulator on the embedded model: only the own LoRA travels up
(exact bytes), only the rest of world comes down, the own LoRA and mixer persist in each
client's store, every client's personalized evaluation is summarized, and the exported
personalized model reproduces the client's own logits when loaded back with stock peft
plus `load_personalized`."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from tiny import TINY_RUN

from fedvlm.algorithms.fedalt.client import personal_layers
from fedvlm.client.unit import start_state
from fedvlm.config import load_config
from fedvlm.core.lora import A_SUFFIX, B_SUFFIX
from fedvlm.core.types import state_nbytes
from fedvlm.errors import ConfigError
from fedvlm.models.adapter import set_adapter_state
from fedvlm.models.load import load_base
from fedvlm.algorithms.fedalt.export import load_personalized
from fedvlm.engine import rundir
from fedvlm.engine.client import node_of
from fedvlm.reporting.report import write_report
from fedvlm.engine.simulate import run_simulation
from fedvlm.train.collate import to_device


def _run(tmp_path_factory, *overrides):
    run_dir = tmp_path_factory.mktemp("fedalt")
    cfg = load_config(None, [*TINY_RUN, "federated.aggregation=fedalt", *overrides])
    fed = run_simulation(cfg, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return cfg, fed, run_dir, records


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    return _run(tmp_path_factory)


def _store(run_dir, cid, name, round_num):
    return load_file(str(run_dir / "clients" / cid / f"{name}.round_{round_num:04d}.safetensors"))


def _fresh_row(run_dir, cid, round_num):
    """With two clients, a client's rest of world after ``round_num`` is, by hand, the other
    client's own LoRA factors of that round: (S - own_k) / (K - 1) = own_other."""
    other = _store(run_dir, "1" if cid == "0" else "0", "local", round_num)
    return {k: v for k, v in other.items() if k.endswith((A_SUFFIX, B_SUFFIX))}


def test_clients_evaluate_and_export_with_the_freshly_aggregated_rest_of_world(learned):
    """As the reference code: after round 2 a client's model mixes the rest of world made of
    round 2's own LoRAs, not the one it trained against (made of round 1's)."""
    cfg, _, run_dir, _ = learned
    rounds = cfg.federated.rounds
    for cid in ("0", "1"):
        exported = load_file(str(run_dir / "adapters" / "personalized" / cid / "fedalt" / "rest_of_world.safetensors"))
        fresh, trained_against = _fresh_row(run_dir, cid, rounds), _store(run_dir, cid, "fedalt_row", rounds)
        assert exported.keys() == fresh.keys()
        assert all(np.array_equal(exported[k], fresh[k]) for k in fresh)
        assert any(not np.array_equal(exported[k], trained_against[k]) for k in fresh)


def test_only_the_own_lora_goes_up_and_only_the_rest_of_world_comes_down(learned):
    _, fed, run_dir, records = learned
    lora = {k: v for k, v in fed.initial_adapter.items() if k.endswith((A_SUFFIX, B_SUFFIX))}
    for record in records[1:]:
        for metrics in record["clients"].values():
            assert metrics["bytes_up"] == state_nbytes(fed.initial_adapter)  # own LoRA + projector, no mixer
            assert metrics["bytes_down"] == state_nbytes(lora)  # the rest of world's LoRA factors only
    # what the server holds of client 0 is exactly what client 0 keeps as its own
    own = load_file(str(run_dir / "checkpoint" / "round_0002" / "buffer.own.0.safetensors"))
    kept = _store(run_dir, "0", "local", 2)
    assert own.keys() == kept.keys() and all(np.array_equal(own[k], kept[k]) for k in own)


def test_own_lora_and_mixer_persist_between_rounds(learned):
    _, _, run_dir, _ = learned
    for cid in ("0", "1"):
        m1, m2 = _store(run_dir, cid, "fedalt_mixer", 1), _store(run_dir, cid, "fedalt_mixer", 2)
        assert m1.keys() == m2.keys() and all(k.endswith(".fedalt_gate.weight") for k in m1)
        assert all(m1[k].any() for k in m1)  # a mixer (nn.Linear's default start, then trained)
        assert any(not np.array_equal(m1[k], m2[k]) for k in m1)
    # round 2's rest of world for client 0 is client 1's round-1 own LoRA (two clients)
    row = _store(run_dir, "0", "fedalt_row", 2)
    other = _store(run_dir, "1", "local", 1)
    assert all(np.array_equal(row[k], other[k]) for k in row)
    # each client's own LoRA is its own: no averaging came down
    p0, p1 = (load_file(str(run_dir / "adapters" / "personalized" / c / "adapter_model.safetensors")) for c in "01")
    assert any(not np.array_equal(p0[k], p1[k]) for k in p0)


def test_personalized_evaluation_is_summarized_in_metrics_and_report(learned):
    _, _, run_dir, records = learned
    for record in records:
        accs = [m["accuracy"] for m in record["eval"]["clients"].values()]
        assert record["eval"]["personalized"] == pytest.approx(
            {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "clients": len(accs)})
    report = write_report(run_dir).read_text()
    assert "personalized % (mean ± std)" in report and "**personalized accuracy**" in report
    assert "server's reference" in report  # the pooled row is not FedALT's model


def test_the_exported_personalized_model_reproduces_the_clients_logits(learned):
    cfg, fed, run_dir, _ = learned
    node = node_of(fed, "1", rundir.ClientStore(run_dir / "clients"))
    batch = to_device(fed.task.training_batch(fed.train_ds[node.test_rows[:4]]), "cpu")
    set_adapter_state(fed.model, start_state(node, cfg.federated.rounds + 1))
    with personal_layers(node, cfg.federated.rounds + 1, _fresh_row(run_dir, "1", cfg.federated.rounds)), torch.no_grad():
        expected = fed.model(**batch).logits
    base, _, _ = load_base(cfg.model.path, seed=cfg.run.seed)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapters" / "personalized" / "1"))
    plain = model(**batch).logits.detach()
    assert load_personalized(model, run_dir / "adapters" / "personalized" / "1") is not None
    with torch.no_grad():
        theirs = model(**batch).logits
    assert torch.allclose(theirs, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3), "the mixing matters: own LoRA alone differs"


def test_fixed_mixing_keeps_no_mixer(tmp_path_factory):
    _, _, run_dir, records = _run(tmp_path_factory, "federated.fedalt_mixer=fixed", "federated.rounds=1")
    assert not list((run_dir / "clients").rglob("fedalt_mixer.*"))
    assert (run_dir / "adapters" / "personalized" / "0" / "fedalt" / "rest_of_world.safetensors").is_file()
    assert not (run_dir / "adapters" / "personalized" / "0" / "fedalt" / "mixer.safetensors").exists()
    assert np.isfinite([m["loss"] for m in records[1]["clients"].values()]).all()


def test_fedalt_trains_on_a_4bit_base(tmp_path_factory):
    _, fed, run_dir, records = _run(tmp_path_factory, "model.quantization=4bit", "federated.rounds=1")
    mixer = _store(run_dir, "0", "fedalt_mixer", 1)
    assert any(v.any() for v in mixer.values())
    own = _store(run_dir, "0", "local", 1)
    assert any(not np.array_equal(own[k], fed.initial_adapter[k]) for k in own if k.endswith(B_SUFFIX))
    assert np.isfinite([m["loss"] for m in records[1]["clients"].values()]).all()


@pytest.mark.parametrize("override, message", [
    ("federated.fedalt_mixer=mean", "fedalt_mixer"),
    ("federated.compression=int8", "federated.compression"),
    ("federated.weighting=uniform", "fedalt_weighting"),
    ("eval.local=false", "eval.local"),
])
def test_bad_fedalt_settings_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, ["federated.aggregation=fedalt", override])
    assert "\n" not in str(err.value)


def test_fedalt_settings_without_fedalt_are_refused():
    with pytest.raises(ConfigError, match="needs federated.aggregation=fedalt"):
        load_config(None, ["federated.fedalt_mixer=fixed"])


def test_fedalt_on_a_text_classifier(tmp_path_factory):
    """The mixing sits on PEFT's LoRA layers, whatever model holds them: the embedded text
    classifier (its head trained as the client's own, not mixed)."""
    _, fed, run_dir, records = _run(tmp_path_factory, "model.path=embedded-text", "data.source=crowdflower",
                                    "data.max_length=32", "federated.rounds=1")
    mixer = _store(run_dir, "1", "fedalt_mixer", 1)
    assert mixer and any(v.any() for v in mixer.values())
    row = _store(run_dir, "1", "fedalt_row", 1)
    assert set(row) == {k for k in fed.initial_adapter if k.endswith((A_SUFFIX, B_SUFFIX))}
    assert records[1]["eval"]["personalized"]["clients"] == 2
