"""LoRA variants and compression through the real simulator on the embedded model."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedvlm.config import load_config
from fedvlm.core.types import state_nbytes
from fedvlm.engine.simulate import run_simulation
from tiny import TINY_RUN


def _run(tmp_path_factory, *overrides):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [*TINY_RUN, *overrides])
    fed = run_simulation(cfg, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return fed, run_dir, records


def _final(run_dir, name="final"):
    return load_file(str(run_dir / "adapters" / name / "adapter_model.safetensors"))


def test_ffa_keeps_a_at_its_init_and_sends_only_b(tmp_path_factory):
    fed, run_dir, records = _run(tmp_path_factory, "federated.aggregation=ffa")
    final = _final(run_dir)
    a_keys = [k for k in final if ".lora_A." in k]
    assert a_keys and all(np.array_equal(final[k], fed.initial_adapter[k]) for k in a_keys)
    assert all(not np.array_equal(final[k], fed.initial_adapter[k]) for k in final if k not in a_keys)
    shared = {k: v for k, v in fed.initial_adapter.items() if ".lora_A." not in k}
    assert records[1]["bytes_up"] == records[1]["bytes_down"] == 2 * state_nbytes(shared)


def test_fedsa_keeps_b_on_clients_and_personalizes(tmp_path_factory):
    fed, run_dir, records = _run(tmp_path_factory, "federated.aggregation=fedsa")
    p0, p1 = _final(run_dir, "personalized/0"), _final(run_dir, "personalized/1")
    a_keys = [k for k in p0 if ".lora_A." in k]
    b_keys = [k for k in p0 if ".lora_B." in k]
    assert all(np.array_equal(p0[k], p1[k]) for k in a_keys)  # A is shared
    assert any(not np.array_equal(p0[k], p1[k]) for k in b_keys)  # B is each client's own
    shared = {k: v for k, v in fed.initial_adapter.items() if ".lora_B." not in k}
    assert records[1]["bytes_up"] == 2 * state_nbytes(shared)
    assert (run_dir / "clients" / "0" / "local.round_0002.safetensors").is_file()


@pytest.mark.parametrize("bits,factor", [("int8", 3.0), ("int4", 5.0)])
def test_compression_counts_serialized_bytes(tmp_path_factory, bits, factor):
    fed, run_dir, records = _run(tmp_path_factory, f"federated.compression={bits}")
    plain = 2 * state_nbytes(fed.initial_adapter)
    assert records[1]["bytes_down"] == plain
    # per-block scales cost a little: 8-bit is a bit under 4x smaller, 4-bit under 8x
    assert plain / factor > records[1]["bytes_up"] > plain / (8 if bits == "int4" else 4)
    assert all(np.isfinite(v).all() for v in _final(run_dir).values())


def test_svd_aggregation_logs_truncation_error_and_restarts_components_past_the_server_rank(tmp_path_factory):
    import torch

    from fedvlm.models.adapter import set_adapter_state, set_trainable, trainable_by_state_key

    fed, run_dir, records = _run(tmp_path_factory, "federated.aggregation=svd", "federated.server_rank=4")
    assert all(r["truncation_error"] > 0 for r in records[1:])
    final = _final(run_dir)
    lora_a = [k for k in final if ".lora_A." in k]
    for a_key in lora_a:
        b_key = a_key.replace(".lora_A.", ".lora_B.")
        # rank 4 inside the clients' rank-8 shape; components 4..7 back at the seeded init
        assert final[a_key].shape[0] == 8
        np.testing.assert_array_equal(final[a_key][4:], fed.initial_adapter[a_key][4:])
        assert np.all(final[b_key][:, 4:] == 0) and np.any(final[b_key][:, :4] != 0)
    # ... so they still learn: B's columns past the server rank get non-zero gradients.
    set_adapter_state(fed.model, final)
    set_trainable(fed.model, list(final))
    fed.model.zero_grad(set_to_none=True)
    fed.model(**fed.task.training_batch(fed.train_ds[fed.clients["0"].train[:8]])).loss.backward()
    params = trainable_by_state_key(fed.model)
    for a_key in lora_a:
        grad = params[a_key.replace(".lora_A.", ".lora_B.")].grad
        assert torch.count_nonzero(grad[:, 4:]) > 0, a_key


@pytest.mark.parametrize("aggregation", ["flora", "fedex"])
def test_merged_base_exports_an_adapter_stock_peft_reproduces(tmp_path_factory, aggregation):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from fedvlm.algorithms.flora.client import MergedBase

    fed, run_dir, records = _run(tmp_path_factory, f"federated.aggregation={aggregation}")
    path = fed.model.peft_config["default"].base_model_name_or_path
    rows = fed.test_ds[fed.pooled_test[:4]]
    batch = fed.task.training_batch(rows)
    from fedvlm.models.adapter import set_adapter_state
    from fedvlm.engine import rundir

    # what fedvlm evaluated: the base with the merged updates plus the last LoRA
    state, _, _ = rundir.load_checkpoint(run_dir)
    merged = MergedBase(fed.model, aggregation)
    merged.apply(state.buffers["base_delta"])
    set_adapter_state(fed.model, state.global_state)
    with torch.no_grad():
        ours = fed.model(**batch).logits
    merged.apply({})
    stock = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(path), str(run_dir / "adapters" / "final"))
    stock.eval()
    with torch.no_grad():
        theirs = stock(**batch).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    rank = state.buffers["base_delta"][next(k for k in state.buffers["base_delta"] if ".lora_A." in k)].shape[0]
    assert stock.peft_config["default"].r == rank + 8
    assert records[2]["bytes_down"] > records[1]["bytes_down"]  # round 2 also ships round 1's merge


def test_merged_base_refuses_a_quantized_model():
    from fedvlm.errors import ModelError
    from fedvlm.algorithms.flora.client import MergedBase

    import torch

    class Quantized(torch.nn.Module):
        is_loaded_in_4bit = True

    with pytest.raises(ModelError, match="full-precision"):
        MergedBase(Quantized(), "flora")


@pytest.mark.parametrize("aggregation", ["naive", "svd"])
def test_heterogeneous_client_ranks(tmp_path_factory, aggregation):
    fed, run_dir, records = _run(tmp_path_factory, f"federated.aggregation={aggregation}", "lora.client_ranks={1: 2}")
    full = state_nbytes(fed.initial_adapter)
    lora_a = [k for k in fed.initial_adapter if ".lora_A." in k]
    lora_bytes = sum(fed.initial_adapter[k].nbytes + fed.initial_adapter[k.replace("lora_A", "lora_B")].nbytes for k in lora_a)
    r1 = records[1]
    assert r1["clients"]["1"]["rank"] == 2 and r1["clients"]["0"]["rank"] == 8
    # client 1 sends a quarter of the LoRA factors (rank 2 of 8) plus the full projector
    assert r1["bytes_up"] == full + (full - lora_bytes) + lora_bytes // 4
    final = _final(run_dir)
    a = final[lora_a[0]]
    assert a.shape[0] == 8 and np.abs(a[2:]).sum() > 0  # the rank-8 client fills the rest


def test_flora_clients_sampled_late_catch_up_on_the_base_from_what_they_are_sent(tmp_path_factory, monkeypatch):
    """One client of three per round: a client's node applies the increments it receives
    and trains on the base the server had after the previous round (rank 8 per round)."""
    from fedvlm.algorithms.flora import client as merged_base

    seen, real_init = [], merged_base.BaseIncrements.__init__

    def recording_init(self, node, config, extras, start):
        real_init(self, node, config, extras, start)
        sent = next((a.shape[0] for k, a in extras["base_increment"].items() if ".lora_A." in k), 0)
        seen.append((node.client_id, config.round, sent, node.base.applied[0]))

    monkeypatch.setattr(merged_base.BaseIncrements, "__init__", recording_init)
    _run(tmp_path_factory, "federated.aggregation=flora", "partition.num_clients=3", "federated.rounds=4",
         "federated.fraction=0.34")
    assert [r for _, r, _, _ in seen] == [1, 2, 3, 4]
    assert [applied for *_, applied in seen] == [0, 8, 16, 24]  # the server's delta after round r-1
    last = {}
    for cid, r, sent, applied in seen:  # what it was sent is exactly what it lacked
        assert sent == applied - last.get(cid, 0)
        last[cid] = applied
    assert any(sent > 8 for _, _, sent, _ in seen)  # some client missed a round and caught up


def test_fedsa_clients_evaluate_their_own_b_with_the_shared_a(tmp_path_factory, monkeypatch):
    """Personalized evaluation runs in the client unit: the node overlays the server's
    shared arrays on the B it kept; the server never reads a client's store for it."""
    from fedvlm.client import evaluation as client_evaluate_module

    seen, real_set = [], client_evaluate_module.set_adapter_state

    def recording_set(model, state):
        seen.append({k: v.copy() for k, v in state.items()})
        real_set(model, state)

    monkeypatch.setattr(client_evaluate_module, "set_adapter_state", recording_set)
    fed, run_dir, records = _run(tmp_path_factory, "federated.aggregation=fedsa")
    last = seen[-len(fed.clients):]  # the final round's local evaluations, in client order
    for cid, state in zip(fed.clients, last):
        own = _final(run_dir, f"personalized/{cid}")
        assert all(np.array_equal(state[k], own[k]) for k in own if ".lora_B." in k)
    b_keys = [k for k in last[0] if ".lora_B." in k]
    assert any(not np.array_equal(last[0][k], last[1][k]) for k in b_keys)
    assert set(records[-1]["eval"]["clients"]) == set(fed.clients)
