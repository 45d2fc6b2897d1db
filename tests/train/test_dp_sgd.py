"""DP-SGD on a client (opacus): each example's gradient clipped to C, their sum noised
with standard deviation z C and averaged over the expected batch; Poisson batches; the
client's epsilon as an independent accountant computes it; a run that resumes exactly."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedvlm.config import load_config
from fedvlm.errors import ConfigError
from fedvlm.train import dp_sgd
from fedvlm.train.batches import poisson_plan
from fedvlm.train.local import train_local
from tiny import TINY_RUN


class Line(torch.nn.Module):
    """y = w . x, squared error: example i's gradient is 2 (w . x_i - y_i) x_i."""

    def __init__(self, n):
        super().__init__()
        self.lin = torch.nn.Linear(n, 1, bias=False)
        torch.nn.init.zeros_(self.lin.weight)

    def forward(self, input_ids, labels):
        return SimpleNamespace(loss=((self.lin(input_ids).squeeze(-1) - labels) ** 2).mean())


def _private_sgd_step(model, batch, z, clip, expected):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    sampled, optimizer = dp_sgd.private(model, optimizer, z, clip, expected, torch.Generator().manual_seed(0))
    sampled(**batch).loss.backward()
    optimizer.step()
    sampled.cleanup()


def test_each_examples_gradient_is_clipped_and_the_sum_averaged_over_the_expected_batch():
    model = Line(2)
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    y = torch.tensor([-1.0, -1.0])
    # at w = 0: gradients 2 * (0 - (-1)) * x = (6, 8) (norm 10: clipped to (0.6, 0.8)) and (0.6, 0.8) (norm 1: kept)
    _private_sgd_step(model, {"input_ids": x, "labels": y}, 1e-12, 1.0, 4)
    np.testing.assert_allclose(model.lin.weight.detach().numpy()[0], -np.array([1.2, 1.6]) / 4, atol=1e-6)
    assert not hasattr(model.lin.weight, "grad_sample")  # the model is left as it was found


def test_the_noise_has_standard_deviation_z_C_over_the_expected_batch():
    model = Line(200_000)
    batch = {"input_ids": torch.zeros(1, 200_000), "labels": torch.zeros(1)}  # zero gradient: noise alone
    _private_sgd_step(model, batch, 2.0, 0.5, 5)  # std 2 * 0.5 / 5 = 0.2
    w = model.lin.weight.detach().numpy()
    assert abs(w.std() - 0.2) < 0.002 and abs(w.mean()) < 0.002


def test_an_empty_poisson_batch_still_steps_on_noise():
    model = Line(1000)
    train_local(model, [[]], lr_at=lambda s: 1e-3, first_step=0, weight_decay=0.0, max_grad_norm=1.0,
                dp=dp_sgd.DPSGD(1.0, 1.0, 4, seed=0))
    assert model.lin.weight.abs().sum() > 0 and not hasattr(model.lin.weight, "grad_sample")


def test_poisson_batches_keep_each_row_with_probability_q_and_replay():
    plan = poisson_plan(range(1000), 0.1, 200, 50, [7, 15, 3])
    sizes = [len(step[0]) if step else 0 for step in plan]
    assert abs(np.mean(sizes) - 100) < 3 and np.std(sizes) > 5  # Binomial(1000, 0.1): sd 9.5
    assert poisson_plan(range(1000), 0.1, 10, 60, [7, 15, 3]) == plan[10:20]  # a step's batch depends on it alone


def test_epsilon_agrees_with_an_independent_accountant():
    import dp_accounting
    from dp_accounting import rdp

    for z, q, steps in ((1.1, 0.01, 1000), (0.7, 0.05, 300), (2.0, 1.0, 10)):
        accountant = rdp.RdpAccountant()
        event = dp_accounting.GaussianDpEvent(z) if q == 1 else dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
        assert dp_sgd.epsilon(z, q, steps, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=0.03)
    z = dp_sgd.noise_for(3.0, 0.05, 300, 1e-5)
    assert dp_sgd.epsilon(z, 0.05, 300, 1e-5) == pytest.approx(3.0, rel=0.01)


def test_a_client_with_dp_sgd_reports_its_epsilon_and_the_run_resumes_exactly(tmp_path):
    from fedvlm.cli import main

    job = [*TINY_RUN, "train.dp_sgd=true", "train.dp_sgd_clients=[1]", f"run.output_dir={tmp_path}"]
    assert main(["run", *job, "train.dp_sgd_target_epsilon=8", "run.name=target"]) == 0
    records = [json.loads(line) for line in (tmp_path / "target" / "metrics.jsonl").read_text().splitlines()]
    assert all("dp_sgd" not in r["clients"]["0"] for r in records[1:])  # client 0 trains without it
    spent = [r["clients"]["1"]["dp_sgd"]["epsilon"] for r in records[1:]]
    assert 0 < spent[0] < spent[1] <= 8.0 and spent[1] > 7.5  # the target, spent over the client's schedule
    # a fixed noise multiplier does not depend on the run's length: a run cut after round 1
    # and resumed ends with the same bytes (Poisson batches and noise are seeded)
    fixed = [*job, "train.dp_sgd_noise_multiplier=0.8"]
    assert main(["run", *fixed, "run.name=whole"]) == 0
    assert main(["run", *fixed, "federated.rounds=1", "run.name=split"]) == 0
    assert main(["run", "--resume", str(tmp_path / "split"), "federated.rounds=2"]) == 0
    final = "adapters/final/adapter_model.safetensors"
    a, b = load_file(str(tmp_path / "whole" / final)), load_file(str(tmp_path / "split" / final))
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides, match", [
    (["train.dp_sgd=true"], r"'train.dp_sgd_noise_multiplier': expected a noise multiplier or train.dp_sgd_target_epsilon"),
    (["train.dp_sgd=true", "train.dp_sgd_noise_multiplier=-1"], r"'train.dp_sgd_noise_multiplier': expected a positive"),
    (["train.dp_sgd=true", "train.dp_sgd_noise_multiplier=1", "train.grad_accum=2"], r"'train.grad_accum': DP-SGD steps on one Poisson batch"),
    (["train.dp_sgd=true", "train.dp_sgd_noise_multiplier=1", "train.dp_sgd_clients=[5]"], r"'train.dp_sgd_clients': expected a list of client ids 0..1"),
    (["train.dp_sgd=true", "train.dp_sgd_noise_multiplier=1", "federated.strategy=fedprox", "federated.mu=0.1"], r"'federated.strategy': fedprox adds a term"),
    (["train.dp_sgd_noise_multiplier=1"], r"'train.dp_sgd_noise_multiplier': needs train.dp_sgd=true"),
])
def test_what_dp_sgd_refuses_is_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, [*TINY_RUN, *overrides])
    assert "\n" not in str(e.value)
