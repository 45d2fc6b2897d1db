"""Sample-level differential privacy for one client's local training: DP-SGD (Abadi et al.
2016, https://arxiv.org/abs/1607.00133) through opacus, on the client's trainable
parameters (its LoRA factors and any trained connector).

Each step draws a Poisson batch (every row of the client with probability ``q =
batch_size / n``, what opacus' accountant assumes), opacus computes each example's
gradient, clips it to ``max_grad_norm`` and adds Gaussian noise of standard deviation
``z max_grad_norm`` to their sum before AdamW steps. The client's epsilon after ``steps``
such steps comes from opacus' RDP accountant; `noise_for` finds the ``z`` that spends a
target epsilon over the client's whole schedule. Why opacus: the field's maintained
per-example-gradient library (its grad samplers cover ``nn.Linear``, which LoRA's factors
and the connectors are).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DPSGD:
    """A client's DP-SGD settings for one round."""

    noise_multiplier: float  # z
    max_grad_norm: float  # C, each example's gradient bound
    expected_batch_size: int  # q n: opacus averages the noised sum over it
    seed: int  # the noise's generator seed (the client's and the round's)
    rate: float = 1.0  # q, each row's chance to be in a step's Poisson batch


def sample_rate(batch_size: int, num_examples: int) -> float:
    """``q``: the chance each of the client's rows has to be in a step's batch."""
    return min(1.0, batch_size / max(1, num_examples))


def epsilon(noise_multiplier: float, rate: float, steps: int, delta: float) -> float:
    """The client's epsilon after ``steps`` DP-SGD steps (opacus' RDP accountant)."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, rate, steps)]
    return float(accountant.get_epsilon(delta))


def noise_for(target_epsilon: float, rate: float, steps: int, delta: float) -> float:
    """The noise multiplier that spends ``target_epsilon`` over ``steps`` steps."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=rate,
                                      steps=steps, accountant="rdp"))


def private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, noise_multiplier: float, max_grad_norm: float,
            expected_batch_size: int, generator: torch.Generator):
    """``model`` with per-example gradients and ``optimizer`` clipping and noising them."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    try:
        sampled = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    except Exception as e:  # opacus names the layer it has no per-example gradients for
        raise ValueError(f"train.dp_sgd: opacus cannot compute per-example gradients of this model's trained "
                         f"layers ({e})") from None
    dp = DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                     expected_batch_size=expected_batch_size, loss_reduction="mean", generator=generator)
    return sampled, dp


def empty_step(params: Sequence[torch.nn.Parameter], optimizer) -> None:
    """A step whose Poisson batch drew no row: the noise alone (as opacus steps on an empty
    batch), so the step's privacy is what the accountant counts."""
    for p in params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    optimizer.step()
