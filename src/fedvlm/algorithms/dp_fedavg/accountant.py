"""Epsilon for DP-FedAvg from Google's ``dp-accounting`` (never computed by hand here).

One round is a Poisson-subsampled Gaussian mechanism: every client takes part with
probability ``q``, and the sum of clipped updates gets noise ``z`` times its sensitivity
(add or remove one client). ``rounds`` rounds compose it; the RDP accountant (Mironov 2017;
TF Privacy and Opacus use the same) or the PLD accountant (tighter) turns that into
``(epsilon, delta)``.
"""

import math

import dp_accounting
from dp_accounting import pld, rdp

ACCOUNTANTS = ("rdp", "pld")


def _accountant(kind: str):
    if kind == "rdp":
        return rdp.RdpAccountant()
    if kind == "pld":
        return pld.PLDAccountant()
    raise ValueError(f"unknown accountant {kind!r} (valid: {', '.join(ACCOUNTANTS)})")


def round_event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    """One round's mechanism: the Gaussian on the clipped sum, Poisson-subsampled at ``q``
    (every client every round when ``q`` is 1)."""
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, kind: str = "rdp") -> float:
    """Epsilon after ``rounds`` rounds at ``delta`` (0 before any round)."""
    if rounds <= 0:
        return 0.0
    accountant = _accountant(kind)
    accountant.compose(dp_accounting.SelfComposedDpEvent(round_event(noise_multiplier, sampling_rate), rounds))
    return float(accountant.get_epsilon(delta))


def noise_for(target_epsilon: float, sampling_rate: float, rounds: int, delta: float, kind: str = "rdp") -> float:
    """The smallest noise multiplier whose ``rounds`` rounds stay within ``target_epsilon``
    at ``delta`` (``dp_accounting.calibrate_dp_mechanism``'s search)."""
    def event(z: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(round_event(z, sampling_rate), rounds)

    z = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(kind), event, target_epsilon, delta,
        dp_accounting.mechanism_calibration.LowerEndpointAndGuess(1e-2, 1.0), tol=1e-4,
    )
    if not math.isfinite(z) or z <= 0:
        raise ValueError(f"no noise multiplier reaches epsilon {target_epsilon:g} at delta {delta:g} in {rounds} rounds")
    return float(z)


def noise_multiplier(options, sampling_rate: float, rounds: int) -> float:
    """The run's ``z``: ``dp_noise_multiplier``, or the one `noise_for` finds for
    ``dp_target_epsilon`` over the run's ``rounds`` (``options``: `DPFedAvgOptions`)."""
    if options.dp_noise_multiplier is not None:
        return float(options.dp_noise_multiplier)
    return noise_for(options.dp_target_epsilon, sampling_rate, rounds, options.dp_delta, options.dp_accountant)
