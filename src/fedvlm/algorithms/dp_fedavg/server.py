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
    # where the noise is added: server (central DP-FedAvg), or clients (distributed: each
    # client clips its own update and adds its share of the noise, so that the server,
    # with federated.secure_aggregation, never holds an update without noise)
    dp_noise: str = "server"
    dp_noise_split: int | None = None  # distributed: clients the noise is split across (null: q N)

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
        if self.dp_noise not in ("server", "clients"):
            raise OptionError("dp_noise", "server or clients", self.dp_noise)
        if self.dp_noise_split is not None and not (isinstance(self.dp_noise_split, int) and self.dp_noise_split >= 1):
            raise OptionError("dp_noise_split", "a number of clients (1 or more) or null", self.dp_noise_split)


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

    Distributed noise (``dp_noise=clients``; the distributed variant of the same mechanism,
    as in Kairouz et al. 2021, https://arxiv.org/abs/2102.06387, with Gaussian shares): each
    sampled client clips its own update to ``C`` and adds ``N(0, sigma_c^2)``,
    ``sigma_c = z C / sqrt(m)`` with ``m`` = ``dp_noise_split`` (default ``q N``), so
    that ``m`` clients' shares sum to the central mechanism's ``N(0, (z C)^2)``. The server
    sums the updates as they come (each already clipped and noised) and, when only
    ``K < m`` answered, tops the sum up with ``N(0, (m - K) sigma_c^2)`` so that what it
    releases always carries the full noise. Against the server itself the guarantee is the
    noise of the clients that answered (its own top-up it knows); with
    ``federated.secure_aggregation`` it never sees a single client's update, only their
    noised sum. Adaptive clipping needs the server to count clipped updates, which it
    cannot here.
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
    def noise_split(self) -> float:
        """m, the clients each holding a share of the noise (distributed noise)."""
        return float(self.options.dp_noise_split or self.expected_clients)

    @property
    def client_noise_std(self) -> float:
        """sigma_c = z C / sqrt(m): a client's share of the noise (distributed noise, fixed C)."""
        return self.noise_multiplier * self.options.dp_clip / math.sqrt(self.noise_split)

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
        chosen = {cid: every[cid] for cid, k in zip(client_ids, keep) if k and cid in every}
        if self.options.dp_noise == "clients":  # each clips its own update and adds its share
            for instruction in chosen.values():
                instruction.config = {**instruction.config, "dp_clip": self.options.dp_clip,
                                      "dp_noise_std": self.client_noise_std}
        return chosen

    def aggregate(self, round_num, state, updates):
        if self.options.dp_noise == "clients":
            return self._aggregate_noised(round_num, state, updates)
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

    def _aggregate_noised(self, round_num, state, updates):
        """Distributed noise: the sum of the clients' clipped, noised updates (topped up to
        ``m`` shares of noise when fewer answered) over ``q N``."""
        g, m = state.global_state, self.expected_clients
        total = {k: np.zeros(v.shape, np.float64) for k, v in g.items()}
        for u in updates:
            for k in total:
                total[k] += u.state[k].astype(np.float64) - g[k]
        missing = max(0.0, self.noise_split - len(updates))
        rng = np.random.default_rng(seed_for(self.seed, Stream.DP_NOISE, round_num))
        top_up = self.client_noise_std * math.sqrt(missing)
        noised = {k: (g[k] + (total[k] + rng.normal(0.0, top_up, size=total[k].shape)) / m).astype(g[k].dtype)
                  for k in sorted(total)}
        new = self.inner.aggregate(round_num, state, [ClientUpdate("dp-fedavg", noised, 1, {}, {})])
        clip = self.options.dp_clip
        scalars = {**new.scalars, CLIP: clip, "dp_clipped": None, "dp_round_clip": clip,
                   "dp_noise_multiplier": self.noise_multiplier, "dp_noise_top_up": missing}
        return replace(new, scalars=scalars)
