"""FedProx and SCAFFOLD client-side hooks against hand-computed numbers."""

import numpy as np
import pytest
import torch

from fedvlm.algorithms.fedprox.server import FedProx
from fedvlm.algorithms.scaffold.server import Scaffold, ScaffoldOptions
from fedvlm.core.types import ClientUpdate
from fedvlm.algorithms.fedprox.client import ProximalTerm
from fedvlm.train.local import train_local
from fedvlm.algorithms.scaffold.client import ScaffoldCorrection


def _params(values):
    return {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32)) for k, v in values.items()}


def test_proximal_term_value_and_gradient():
    params = _params({"w": [1.0, 3.0]})
    term = ProximalTerm(params, {"w": np.array([0.0, 1.0], dtype=np.float32)}, mu=0.5)
    loss = term.extra_loss(None)
    # mu/2 * ((1-0)^2 + (3-1)^2) = 0.25 * 5
    assert loss.item() == pytest.approx(1.25)
    loss.backward()
    # gradient mu * (w - w_g)
    assert params["w"].grad.tolist() == pytest.approx([0.5, 1.0])


class _Quadratic(torch.nn.Module):
    """loss = sum((w - target)^2) / 2; the batch carries only a dummy input_ids."""

    def __init__(self, w, target, scale=1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.target = torch.tensor(target)
        self.scale = scale

    def forward(self, input_ids):
        return type("Out", (), {"loss": self.scale * 0.5 * ((self.w - self.target) ** 2).sum()})()


def _train(model, hooks, steps=5, lr=0.1):
    batches = [[{"input_ids": torch.zeros(1, 1)}] for _ in range(steps)]
    return train_local(model, batches, lr_at=lambda s: lr, first_step=0, weight_decay=0.0,
                       max_grad_norm=0.0, hooks=hooks)


def test_proximal_term_pulls_towards_global():
    free = _Quadratic([0.0], [10.0])
    prox = _Quadratic([0.0], [10.0])
    _train(free, [])
    _train(prox, [ProximalTerm({"w": prox.w}, {"w": np.zeros(1, dtype=np.float32)}, mu=10.0)])
    assert 0 < prox.w.item() < free.w.item()


def test_scaffold_correction_is_a_no_op_when_control_variates_agree():
    a, b = _Quadratic([0.0, 1.0], [3.0, -2.0]), _Quadratic([0.0, 1.0], [3.0, -2.0])
    c = {"w": np.array([0.3, -0.1], dtype=np.float32)}
    _train(a, [])
    _train(b, [ScaffoldCorrection({"w": b.w}, c, dict(c))])
    assert torch.equal(a.w, b.w)


def test_scaffold_correction_steps_and_new_control():
    model = _Quadratic([0.0], [0.0], scale=0.0)  # zero gradient: only the correction moves w
    c, c_i = {"w": np.array([1.0], dtype=np.float32)}, {"w": np.array([0.25], dtype=np.float32)}
    hook = ScaffoldCorrection({"w": model.w}, c, c_i)
    _train(model, [hook], steps=4, lr=0.1)
    # each step w -= lr (c - c_i) = 0.1 * 0.75 -> 4 steps: -0.3
    assert model.w.item() == pytest.approx(-0.3)
    assert hook.lr_sum == pytest.approx(0.4)
    y = {"w": model.w.detach().numpy().copy()}
    new = hook.new_control({"w": np.zeros(1, dtype=np.float32)}, y)
    # c_i+ = c_i - c + (x - y) / sum(lr) = 0.25 - 1 + 0.3 / 0.4 = 0
    assert new["w"][0] == pytest.approx(0.0, abs=1e-6)


def test_scaffold_server_update():
    s = Scaffold(num_clients=4, options=ScaffoldOptions(server_lr=1.0))
    state = s.initialize({"w": np.zeros(2, dtype=np.float32)})
    updates = [
        ClientUpdate("0", {"w": np.array([1.0, 0.0], np.float32)}, 10, extras={"dc": {"w": np.array([4.0, 0.0], np.float32)}}),
        ClientUpdate("1", {"w": np.array([0.0, 2.0], np.float32)}, 30, extras={"dc": {"w": np.array([0.0, 8.0], np.float32)}}),
    ]
    new = s.aggregate(1, state, updates)
    np.testing.assert_allclose(new.global_state["w"], [0.25, 1.5])  # example-weighted mean of y
    np.testing.assert_allclose(new.buffers["c"]["w"], [1.0, 2.0])  # (1/N) sum dc, N = 4 (no sizes: the paper's)
    ins = s.configure(2, new, ["0", "1", "2", "3"], np.random.default_rng(0))
    assert all(np.array_equal(i.extras["c"]["w"], [1.0, 2.0]) for i in ins.values())


def test_scaffold_averages_c_with_the_models_weights():
    # four clients of 10, 30, 20 and 20 rows (80 in all); clients 0 and 1 sampled:
    # c = 10/80 * [4, 0] + 30/80 * [0, 8] = [0.5, 3.0], with the model's data-size weights
    sizes = {"0": 10, "1": 30, "2": 20, "3": 20}
    updates = [
        ClientUpdate("0", {"w": np.array([1.0, 0.0], np.float32)}, 10, extras={"dc": {"w": np.array([4.0, 0.0], np.float32)}}),
        ClientUpdate("1", {"w": np.array([0.0, 2.0], np.float32)}, 30, extras={"dc": {"w": np.array([0.0, 8.0], np.float32)}}),
    ]
    s = Scaffold(num_clients=4, client_sizes=sizes)
    new = s.aggregate(1, s.initialize({"w": np.zeros(2, dtype=np.float32)}), updates)
    np.testing.assert_allclose(new.buffers["c"]["w"], [0.5, 3.0])
    # uniform weighting: the paper's 1/N, [1, 2]
    s = Scaffold(num_clients=4, client_sizes=sizes, weighting="uniform")
    new = s.aggregate(1, s.initialize({"w": np.zeros(2, dtype=np.float32)}), updates)
    np.testing.assert_allclose(new.buffers["c"]["w"], [1.0, 2.0])


def test_fedprox_sends_mu_and_averages_like_fedavg():
    from fedvlm.algorithms.fedprox.server import FedProxOptions
    from fedvlm.algorithm_config import options_record
    from fedvlm.config import load_config

    s = FedProx(options=FedProxOptions(mu=0.1))
    state = s.initialize({"w": np.zeros(1, dtype=np.float32)})
    # mu reaches every client in the round's options record
    assert options_record(load_config(None, ["federated.strategy=fedprox", "federated.mu=0.1"])) == {"mu": 0.1}
    new = s.aggregate(1, state, [ClientUpdate("0", {"w": np.array([2.0], np.float32)}, 1),
                                 ClientUpdate("1", {"w": np.array([4.0], np.float32)}, 3)])
    np.testing.assert_allclose(new.global_state["w"], [3.5])


def test_scaffold_of_a_lower_rank_client_corrects_and_estimates_only_its_own_components():
    # A rank-1 client inside a rank-3 adapter: it owns A's row 0 and B's column 0.
    key_a, key_b = "m.lora_A.weight", "m.lora_B.weight"
    a = torch.nn.Parameter(torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    b = torch.nn.Parameter(torch.zeros(2, 3))
    c = {key_a: np.full((3, 2), 2.0, np.float32), key_b: np.full((2, 3), 4.0, np.float32)}
    c_i = {key_a: np.full((3, 2), 0.5, np.float32), key_b: np.full((2, 3), 1.0, np.float32)}
    from fedvlm.train.rank_mask import within_rank

    owned = within_rank({key_a: (3, 2), key_b: (2, 3)}, 1)
    hook = ScaffoldCorrection({key_a: a, key_b: b}, c, c_i, owned)
    for _ in range(2):
        hook.after_step(None, 0.5)  # two steps at lr 0.5
    # owned entries move by -sum(lr) (c - c_i): A row 0: 1 - 1.0 * 1.5 = -0.5; B col 0: -3
    assert a.detach().numpy().tolist() == [[-0.5, -0.5], [0.0, 0.0], [0.0, 0.0]]
    assert b.detach().numpy().tolist() == [[-3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]]
    x = {key_a: np.array([[1.0, 1.0], [9.0, 9.0], [9.0, 9.0]], np.float32), key_b: np.zeros((2, 3), np.float32)}
    y = {key_a: a.detach().numpy().copy(), key_b: b.detach().numpy().copy()}
    new = hook.new_control(x, y)
    # owned: c_i - c + (x - y) / 1.0 -> A: 0.5 - 2 + 1.5 = 0; B: 1 - 4 + 3 = 0
    np.testing.assert_allclose(new[key_a][0], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(new[key_b][:, 0], [0.0, 0.0], atol=1e-6)
    # not owned: c_i unchanged (dc = 0), whatever x holds there
    np.testing.assert_array_equal(new[key_a][1:], c_i[key_a][1:])
    np.testing.assert_array_equal(new[key_b][:, 1:], c_i[key_b][:, 1:])


def test_scaffold_new_control_without_any_step_keeps_c_i():
    w = torch.nn.Parameter(torch.zeros(1))
    c_i = {"w": np.array([0.5], np.float32)}
    hook = ScaffoldCorrection({"w": w}, {"w": np.array([1.0], np.float32)}, c_i)
    assert hook.new_control({"w": np.zeros(1, np.float32)}, {"w": np.zeros(1, np.float32)})["w"].tolist() == [0.5]
