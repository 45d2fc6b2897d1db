"""DP-FedAvg: client-level differential privacy around a server optimizer."""

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedvlm.algorithms.base import OptionError
from fedvlm.core.types import ClientUpdate
from fedvlm.seeds import Stream, seed_for

CLIP = "dp_clip"  # the server state's scalar: the clipping norm the next round uses


@dataclass(frozen=True)
class DPFedAvgOptions:
    # z, the noise's standard deviation over the clipping norm; null: calibrated before
    # the run to reach dp_target_epsilon after federated.rounds (accountant.py)
    dp_noise_multiplier: float | None = None
    dp_target_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 0.1  # C, the L2 bound on each client's update (the first round's, if adaptive)
    dp_adaptive_clip: bool = False  # move C toward a quantile of the update norms (Andrew et al.)
    dp_target_quantile: float = 0.5  # gamma: the share of updates C should leave unclipped
    dp_clip_lr: float = 0.2  # eta_C: C <- C exp(-eta_C (b - gamma))
    dp_clipped_count_stddev: float | None = None  # sigma_b; null: expected clients per round / 20
    dp_accountant: str = "rdp"  # rdp or pld (dp-accounting's Renyi-DP or privacy-loss-distribution)

    def __post_init__(self):
        z, eps = self.dp_noise_multiplier, self.dp_target_epsilon
        if z is None and eps is None:
            raise OptionError("dp_noise_multiplier", "a noise multiplier, or federated.dp_target_epsilon to calibrate one", z)
        if z is not None and eps is not None:
            raise OptionError("dp_target_epsilon", "null when federated.dp_noise_multiplier is set (one or the other)", eps)
        if z is not None and not z > 0:
            raise OptionError("dp_noise_multiplier", "a positive number (0 has no finite epsilon)", z)
        if eps is not None and not eps > 0:
            raise OptionError("dp_target_epsilon", "a positive epsilon", eps)
        if not 0 < self.dp_delta < 1:
            raise OptionError("dp_delta", "0 < delta < 1", self.dp_delta)
        if not self.dp_clip > 0:
            raise OptionError("dp_clip", "a positive norm", self.dp_clip)
        if not 0 < self.dp_target_quantile < 1:
            raise OptionError("dp_target_quantile", "0 < quantile < 1", self.dp_target_quantile)
        if not self.dp_clip_lr > 0:
            raise OptionError("dp_clip_lr", "a positive rate", self.dp_clip_lr)
        if self.dp_clipped_count_stddev is not None and not self.dp_clipped_count_stddev > 0:
            raise OptionError("dp_clipped_count_stddev", "a positive number or null", self.dp_clipped_count_stddev)
        if self.dp_accountant not in ("rdp", "pld"):
            raise OptionError("dp_accountant", "rdp or pld", self.dp_accountant)


def clip_factor(norm: float, clip: float) -> float:
    """``min(1, C / ||delta||)``: what scales an update of norm ``norm`` into the ball of
    radius ``clip``."""
    return 1.0 if norm <= clip else clip / norm


def update_norm(state, reference) -> float:
    """L2 norm of ``state - reference`` over every array (all arrays are one vector)."""
    return math.sqrt(sum(float(np.sum((state[k].astype(np.float64) - reference[k]) ** 2)) for k in reference))


def split_noise(z: float, count_stddev: float) -> float:
    """The update's own noise multiplier when adaptive clipping spends part of the total
    ``z`` on the clipped count: ``(z^-2 - (2 sigma_b)^-2)^(-1/2)`` (Andrew et al., Thm 1)."""
    rest = z**-2 - (2.0 * count_stddev) ** -2
    if rest <= 0:
        raise ValueError(f"adaptive clipping: dp_clipped_count_stddev {count_stddev:g} leaves no noise budget for the "
                         f"update at noise multiplier {z:g} (needs 2 x stddev > 1 / z = {1 / z:.3g})")
    return rest**-0.5


@dataclass
class DPFedAvg:
    """DP-FedAvg (McMahan et al. 2018, "Learning differentially private recurrent language
    models", https://arxiv.org/abs/1710.06963), around ``inner``, the run's strategy.

    Each round every client takes part with probability ``q`` (``federated.fraction``;
    Poisson sampling, which the accountant assumes). The server clips each client's update
    ``delta_k = x_k - x`` (every array that travels, as one vector) to norm ``C``, sums
    them, divides by the expected number of clients ``q N`` (the fixed-denominator
    estimator, so one client changes the mean by at most ``C / (q N)``) and adds Gaussian
    noise of standard deviation ``z C / (q N)`` to every coordinate. ``inner`` then steps
    from that one noised mean as from a single client's update (FedAvg moves to it; FedAdam
    and the other server optimizers take it as their pseudo-gradient), which is
    post-processing and costs no privacy. Clients weigh the same (a data-size weight would
    raise the sensitivity). A round that sampled no client still adds the noise.

    Adaptive clipping (Andrew et al. 2021, https://arxiv.org/abs/1905.03871): the server
    also counts the updates within ``C``, adds ``N(0, sigma_b^2)`` to the count and moves
    ``C <- C exp(-eta_C (b - gamma))`` with ``b`` the noised count over ``q N``; the total
    noise multiplier stays ``z`` (`split_noise`). The clipping norm lives in the server
    state (resumed with it) and in the round's record.
    """

    inner: Any
    num_clients: int
    options: DPFedAvgOptions
    noise_multiplier: float  # z, resolved (from dp_target_epsilon where that is set)
    fraction: float = 1.0  # q
    seed: int = 0

    @property
    def expected_clients(self) -> float:
        return self.fraction * self.num_clients

    @property
    def count_stddev(self) -> float:
        sigma = self.options.dp_clipped_count_stddev
        return sigma if sigma is not None else self.expected_clients / 20.0

    def initialize(self, initial):
        state = self.inner.initialize(initial)
        return replace(state, scalars={**state.scalars, CLIP: self.options.dp_clip})

    def configure(self, round_num, state, client_ids, rng):
        """``inner``'s instructions for every client (it samples all), kept for each client
        with probability ``q``."""
        every = self.inner.configure(round_num, state, client_ids, rng)
        keep = rng.random(len(client_ids)) < self.fraction
        return {cid: every[cid] for cid, k in zip(client_ids, keep) if k and cid in every}

    def aggregate(self, round_num, state, updates):
        g, clip = state.global_state, float(state.scalars[CLIP])
        m = self.expected_clients
        total = {k: np.zeros(v.shape, np.float64) for k, v in g.items()}
        norms = []
        for u in updates:
            norm = update_norm(u.state, g)
            norms.append(norm)
            factor = clip_factor(norm, clip)
            for k in total:
                total[k] += factor * (u.state[k].astype(np.float64) - g[k])
        rng = np.random.default_rng(seed_for(self.seed, Stream.DP_NOISE, round_num))
        z = self.noise_multiplier
        z_update = split_noise(z, self.count_stddev) if self.options.dp_adaptive_clip else z
        noised = {k: (g[k] + (total[k] + rng.normal(0.0, z_update * clip, size=total[k].shape)) / m).astype(g[k].dtype)
                  for k in sorted(total)}
        new = self.inner.aggregate(round_num, state, [ClientUpdate("dp-fedavg", noised, 1, {}, {})])
        next_clip = clip
        if self.options.dp_adaptive_clip:
            unclipped = sum(1.0 for n in norms if n <= clip) + rng.normal(0.0, self.count_stddev)
            next_clip = clip * math.exp(-self.options.dp_clip_lr * (unclipped / m - self.options.dp_target_quantile))
        scalars = {**new.scalars, CLIP: next_clip, "dp_clipped": int(sum(n > clip for n in norms)),
                   "dp_round_clip": clip, "dp_noise_multiplier": z}
        return replace(new, scalars=scalars)
