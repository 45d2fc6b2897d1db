"""FLoRA and FedEx-LoRA server math: the base delta carries the exact mean update."""

import dataclasses

import numpy as np

from fedvlm.core.lora import dense_delta
from fedvlm.algorithms.fedex.server import FedExLoRA
from fedvlm.algorithms.flora.server import FLoRA
from fedvlm.core.types import ClientUpdate

A, B, P = "m.q.lora_A.weight", "m.q.lora_B.weight", "m.proj.weight"


def _clients(seed=0):
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(str(k), {A: rng.normal(size=(2, 5)).astype(np.float32), B: rng.normal(size=(4, 2)).astype(np.float32),
                              P: rng.normal(size=3).astype(np.float32)}, n)
        for k, n in enumerate([1, 3])
    ]


def _mean_dw(updates, s):
    return 0.25 * s * updates[0].state[B] @ updates[0].state[A] + 0.75 * s * updates[1].state[B] @ updates[1].state[A]


def test_flora_stacks_exactly_and_restarts_lora():
    updates = _clients()
    strategy = FLoRA(lora_scaling=2.0, seed=1)
    state = strategy.initialize(updates[0].state)
    out = strategy.aggregate(1, state, updates)
    delta = out.buffers["base_delta"]
    assert delta[A].shape == (4, 5) and delta[B].shape == (4, 4)  # rank 2 clients x 2
    np.testing.assert_allclose(delta[B] @ delta[A], _mean_dw(updates, 2.0), atol=1e-5)
    assert np.all(out.global_state[B] == 0) and np.all(np.abs(out.global_state[A]) <= 1 / np.sqrt(5))
    np.testing.assert_allclose(out.global_state[P], 0.25 * updates[0].state[P] + 0.75 * updates[1].state[P], atol=1e-6)
    # a second round appends: rank grows, the product adds up
    again = strategy.aggregate(2, out, updates)
    assert again.buffers["base_delta"][A].shape == (8, 5)
    np.testing.assert_allclose(dense_delta(again.buffers["base_delta"], 1.0)["m.q"], 2 * _mean_dw(updates, 2.0), atol=1e-5)
    # each client is sent what it lacks: clients 0 and 1 trained on the round-1 delta (rows
    # 0-3), client 2 never took part and gets all 8 rows
    assert again.scalars["base_synced"] == {"0": 4, "1": 4}
    sent = strategy.configure(3, again, ["0", "1", "2"], np.random.default_rng(0))
    np.testing.assert_array_equal(sent["0"].extras["base_increment"][A], again.buffers["base_delta"][A][4:])
    np.testing.assert_array_equal(sent["0"].extras["base_increment"][B], again.buffers["base_delta"][B][:, 4:])
    assert sent["2"].extras["base_increment"][A].shape == (8, 5)
    # a client that already holds everything gets no arrays
    current = dataclasses.replace(again, scalars={"base_synced": {"0": 8}})
    assert strategy.configure(3, current, ["0"], np.random.default_rng(0))["0"].extras["base_increment"] == {}


def test_fedex_average_plus_residual_is_exact():
    updates = _clients(3)
    strategy = FedExLoRA(lora_scaling=0.5)
    out = strategy.aggregate(1, strategy.initialize(updates[0].state), updates)
    g, delta = out.global_state, out.buffers["base_delta"]
    assert delta[A].shape == (6, 5)  # (K + 1) r
    np.testing.assert_allclose(delta[B] @ delta[A] + 0.5 * g[B] @ g[A], _mean_dw(updates, 0.5), atol=1e-5)
    # the naive average alone is not exact here
    assert not np.allclose(0.5 * g[B] @ g[A], _mean_dw(updates, 0.5), atol=1e-3)


def test_identical_clients_leave_product_unchanged():
    u = _clients()[0]
    same = [ClientUpdate("0", u.state, 2), ClientUpdate("1", u.state, 7)]
    ex = FedExLoRA(lora_scaling=1.0)
    out = ex.aggregate(1, ex.initialize(u.state), same)
    np.testing.assert_allclose(out.buffers["base_delta"][B] @ out.buffers["base_delta"][A], 0, atol=1e-5)
    np.testing.assert_allclose(out.global_state[A], u.state[A], atol=1e-7)
