"""FedALT against hand-computed numbers: the leave-one-out rest of world (uniform and
data-size weighted, a client never heard from, sampling), what each client receives, and
the mixing layer's output and gates on a real PEFT LoRA layer."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from fedvlm.algorithms.fedalt.server import FedALT, FedALTOptions
from fedvlm.core.types import ClientUpdate
from fedvlm.algorithms.fedalt.layers import MixedLoRA

A, B, HEAD = "m.lora_A.weight", "m.lora_B.weight", "head.weight"


def _own(a: float, b: float, head: float = 0.0) -> dict:
    return {A: np.full((1, 2), a, np.float32), B: np.full((2, 1), b, np.float32), HEAD: np.full(2, head, np.float32)}


def _after_round_one(strategy, sizes=(10, 20, 30)):
    state = strategy.initialize(_own(0.0, 0.0))
    updates = [ClientUpdate(str(k), _own(a, b, head=9.0), n) for k, (a, b, n) in
               enumerate(zip((1.0, 3.0, 8.0), (2.0, 4.0, 12.0), sizes))]
    return strategy.aggregate(1, state, updates)


def _rows(strategy, state, clients=("0", "1", "2", "3")):
    instructions = strategy.configure(2, state, list(clients), np.random.default_rng(0))
    return instructions, {c: i.extras["row"] for c, i in instructions.items()}


def test_uniform_rest_of_world_is_the_mean_of_the_other_clients():
    strategy = FedALT()
    instructions, rows = _rows(strategy, _after_round_one(strategy))
    # own A: 1, 3, 8; own B: 2, 4, 12
    assert rows["0"][A][0, 0] == pytest.approx((3 + 8) / 2) and rows["0"][B][0, 0] == pytest.approx((4 + 12) / 2)
    assert rows["1"][A][0, 0] == pytest.approx((1 + 8) / 2) and rows["1"][B][0, 0] == pytest.approx((2 + 12) / 2)
    assert rows["2"][A][0, 0] == pytest.approx((1 + 3) / 2) and rows["2"][B][0, 0] == pytest.approx((2 + 4) / 2)
    # a client the server has not heard from gets the mean of everyone it has
    assert rows["3"][A][0, 0] == pytest.approx(4.0) and rows["3"][B][0, 0] == pytest.approx(6.0)
    # only the rest of world comes down: no own arrays, no non-LoRA module
    assert all(i.payload == {} and set(i.extras) == {"row"} for i in instructions.values())
    assert set(rows["0"]) == {A, B}


def test_data_size_weighted_rest_of_world():
    strategy = FedALT(options=FedALTOptions(fedalt_weighting="data_size"))
    _, rows = _rows(strategy, _after_round_one(strategy, sizes=(1, 2, 3)))
    assert rows["0"][A][0, 0] == pytest.approx((2 * 3 + 3 * 8) / 5)  # 6.0
    assert rows["1"][A][0, 0] == pytest.approx((1 * 1 + 3 * 8) / 4)  # 6.25
    assert rows["2"][A][0, 0] == pytest.approx((1 * 1 + 2 * 3) / 3)  # 2.333...
    assert rows["3"][A][0, 0] == pytest.approx((1 + 6 + 24) / 6)


def test_before_anyone_reports_the_rest_of_world_is_zero_and_a_client_keeps_its_last_upload():
    strategy = FedALT()
    state = strategy.initialize(_own(0.5, 0.5))
    _, rows = _rows(strategy, state, ("0", "1"))
    assert all(not r[A].any() and not r[B].any() for r in rows.values())
    # round 1: only client 0 trained; round 2: only client 1, whose rest of world is 0's
    state = strategy.aggregate(1, state, [ClientUpdate("0", _own(1.0, 2.0), 5)])
    _, rows = _rows(strategy, state, ("0", "1"))
    assert not rows["0"][A].any()  # nobody else yet
    assert rows["1"][A][0, 0] == 1.0
    state = strategy.aggregate(2, state, [ClientUpdate("1", _own(5.0, 6.0), 5)])
    _, rows = _rows(strategy, state, ("0", "1"))
    assert rows["0"][A][0, 0] == 5.0 and rows["1"][A][0, 0] == 1.0  # 0's round-1 upload still counts
    assert state.global_state[A][0, 0] == pytest.approx(3.0)  # the reference: mean of the latest own LoRAs


def _peft_layer(seed=0):
    torch.manual_seed(seed)
    base = torch.nn.Sequential()
    base.add_module("m", torch.nn.Linear(4, 3, bias=False))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["m"], init_lora_weights=False))
    return model


def test_the_mixed_layer_computes_the_papers_formula_and_gates_sum_to_one():
    model = _peft_layer()
    layer = model.base_model.model.m
    name = next(n for n, m in model.named_modules() if m is layer)
    a_row, b_row = np.arange(8, dtype=np.float32).reshape(2, 4) / 10, np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    gate = np.array([[0.5, -1.0, 0.0, 2.0], [1.0, 0.0, -0.5, 0.0]], np.float32)
    mixed = MixedLoRA(model, {f"{name}.lora_A.weight": a_row, f"{name}.lora_B.weight": b_row},
                      {f"{name}.fedalt_gate.weight": gate})
    x = torch.tensor([[[1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 1.0, 1.0]]])  # 1 sequence, 2 tokens
    with torch.no_grad():
        out = model(x)
        w0 = layer.base_layer.weight
        a_own, b_own = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        s = 4 / 2
        logits = x @ torch.from_numpy(gate).T
        g = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
        row = x @ torch.from_numpy(a_row).T @ torch.from_numpy(b_row).T
        own = x @ a_own.T @ b_own.T
        expected = x @ w0.T + s * (g[..., :1] * row + g[..., 1:] * own)
    assert torch.allclose(out, expected, atol=1e-6)
    gates = mixed.gates(name, x)
    assert torch.allclose(gates.sum(-1), torch.ones(1, 2)) and not torch.allclose(gates[0, 0], gates[0, 1])
    mixed.remove()
    with torch.no_grad():  # the plain LoRA layer again
        assert torch.allclose(model(x), x @ w0.T + s * (x @ a_own.T @ b_own.T), atol=1e-6)
    assert "fedalt_gates" not in dict(model.named_children())


def test_fixed_mixing_is_half_and_half_and_the_penalty_is_the_absolute_cosine():
    model = _peft_layer()
    name = next(n for n, m in model.named_modules() if m is model.base_model.model.m)
    a_own = model.base_model.model.m.lora_A["default"].weight.detach().numpy()
    a_row = np.stack([a_own[0], -a_own[1]])  # cos(vec a_own, vec a_row) = (|a0|^2 - |a1|^2) / |a|^2
    b_row = np.ones((3, 2), np.float32)
    mixed = MixedLoRA(model, {f"{name}.lora_A.weight": a_row, f"{name}.lora_B.weight": b_row}, fixed=True)
    x = torch.randn(2, 5, 4)
    assert torch.equal(mixed.gates(name, x), torch.full((2, 5, 2), 0.5))
    n0, n1 = (a_own[0] ** 2).sum(), (a_own[1] ** 2).sum()
    assert mixed.orthogonality().item() == pytest.approx(abs(n0 - n1) / (n0 + n1), rel=1e-5)
    assert mixed.mixer_state() == {}
    mixed.remove()
    # an empty rest of world (B = 0, nobody else has reported) adds no penalty
    empty = MixedLoRA(model, {f"{name}.lora_A.weight": a_row, f"{name}.lora_B.weight": 0 * b_row})
    assert empty.orthogonality().item() == 0.0
    empty.remove()


def test_a_fresh_mixer_starts_as_nn_linears_default_from_the_clients_seed():
    """The reference code's mixer is a plain nn.Linear: Kaiming-uniform with a = sqrt(5),
    i.e. each weight uniform in +-1/sqrt(d_in); not zeros (an exact half-and-half split)."""
    model = _peft_layer()
    name = next(n for n, m in model.named_modules() if m is model.base_model.model.m)
    row = {f"{name}.lora_A.weight": np.ones((2, 4), np.float32), f"{name}.lora_B.weight": np.ones((3, 2), np.float32)}
    first = MixedLoRA(model, row, init_seed=11)
    w = first.mixer_state()[f"{name}.fedalt_gate.weight"]
    first.remove()
    assert w.shape == (2, 4) and np.abs(w).max() <= 1 / np.sqrt(4) and np.abs(w).min() > 0
    expected = torch.empty(2, 4)
    torch.nn.init.uniform_(expected, -0.5, 0.5, generator=torch.Generator().manual_seed(11))  # kaiming_uniform_(a=sqrt 5), fan_in 4
    np.testing.assert_allclose(w, expected.numpy(), atol=1e-7)
    again = MixedLoRA(model, row, init_seed=11)
    assert np.array_equal(again.mixer_state()[f"{name}.fedalt_gate.weight"], w)  # the same seed, the same start
    x = torch.tensor([[[1.0, 2.0, 0.0, -1.0]]])
    assert not torch.allclose(again.gates(name, x), torch.full((1, 1, 2), 0.5))
    again.remove()
