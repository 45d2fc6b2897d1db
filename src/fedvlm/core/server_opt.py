"""Server optimizers over adapter state (Reddi et al., https://arxiv.org/abs/2003.00295;
FedAvgM, Hsu et al., https://arxiv.org/abs/1909.06335), as one pure step.

A round's ``delta`` is the aggregate of the client states minus the global state ``x`` (the
pseudo-gradient is ``-delta``). ``server_step`` takes ``x``, ``delta`` and the optimizer's
moment buffers and returns new ones; no input is modified. Arithmetic runs in float64 and
each result is cast back to the dtype of the array it replaces, so float32 adapters keep
float32 moments (as torch optimizers do). There is no bias correction, as in the paper's
Algorithm 2 (Flower's FedAdam corrects its step for bias; its FedYogi and FedAdagrad do not).

Rules:

- ``momentum`` (FedAvgM): ``v = momentum v + delta``; ``x = x + lr v``;
- ``adagrad``: ``m = b1 m + (1-b1) delta``; ``v = v + delta^2``;
- ``adam``: the same ``m``; ``v = b2 v + (1-b2) delta^2``;
- ``yogi``: the same ``m``; ``v = v - (1-b2) delta^2 sign(v - delta^2)`` (non-negative when
  it starts so: it moves towards ``delta^2`` by at most ``(1-b2) delta^2``);

and for the last three ``x = x + lr m / (sqrt(v) + tau)``.
"""

from collections.abc import Sequence

import numpy as np

from fedvlm.core.aggregate import client_weighted_mean
from fedvlm.core.types import AdapterState, ClientUpdate, ServerState

_SECOND_MOMENT = {
    "adagrad": lambda v, d2, beta2: v + d2,
    "adam": lambda v, d2, beta2: beta2 * v + (1.0 - beta2) * d2,
    "yogi": lambda v, d2, beta2: v - (1.0 - beta2) * d2 * np.sign(v - d2),
}
RULES = ("momentum", *_SECOND_MOMENT)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _check_keys(x: AdapterState, **others: AdapterState) -> None:
    for what, other in others.items():
        if set(other) != set(x):
            missing, extra = sorted(set(x) - set(other)), sorted(set(other) - set(x))
            raise ValueError(
                f"{what} keys differ from the state (missing {missing[:3]}, unexpected {extra[:3]})"
            )


def pseudo_delta(x: AdapterState, aggregate: AdapterState) -> AdapterState:
    """``Delta = aggregate - x`` per name, in float64 (the negated pseudo-gradient)."""
    _check_keys(x, aggregate=aggregate)
    return {k: _f64(aggregate[k]) - _f64(x[k]) for k in x}


def zeros_like_state(x: AdapterState, fill: float = 0.0) -> AdapterState:
    """A moment buffer: ``fill`` everywhere, same names, shapes and dtypes as ``x``."""
    return {k: np.full(a.shape, fill, dtype=a.dtype) for k, a in x.items()}


def initial_moments(rule: str, x: AdapterState, v_init: float = 0.0) -> dict[str, AdapterState]:
    """The buffers ``rule`` starts from: ``v`` (at ``v_init``), and ``m`` for the adaptive rules."""
    if rule == "momentum":
        return {"v": zeros_like_state(x)}
    return {"m": zeros_like_state(x), "v": zeros_like_state(x, v_init)}


def server_step(
    rule: str,
    x: AdapterState,
    delta: AdapterState,
    buffers: dict[str, AdapterState],
    *,
    lr: float,
    momentum: float = 0.0,
    beta1: float = 0.0,
    beta2: float = 0.0,
    tau: float = 0.0,
) -> tuple[AdapterState, dict[str, AdapterState]]:
    """One step of ``rule`` (module doc): the new ``x`` and the new moment buffers."""
    v = buffers["v"]
    if rule == "momentum":
        _check_keys(x, delta=delta, v=v)
        new_v = {k: momentum * _f64(v[k]) + _f64(delta[k]) for k in x}
        new_x = {k: (_f64(x[k]) + lr * new_v[k]).astype(x[k].dtype) for k in x}
        return new_x, {"v": {k: new_v[k].astype(v[k].dtype) for k in x}}
    m = buffers["m"]
    _check_keys(x, delta=delta, m=m, v=v)
    new_m = {k: beta1 * _f64(m[k]) + (1.0 - beta1) * _f64(delta[k]) for k in x}
    new_v = {k: _SECOND_MOMENT[rule](_f64(v[k]), _f64(delta[k]) ** 2, beta2) for k in x}
    new_x = {k: (_f64(x[k]) + lr * new_m[k] / (np.sqrt(new_v[k]) + tau)).astype(x[k].dtype) for k in x}
    return new_x, {"m": {k: new_m[k].astype(m[k].dtype) for k in x}, "v": {k: new_v[k].astype(v[k].dtype) for k in x}}


def optimizer_round(
    rule: str, round_num: int, state: ServerState, updates: Sequence[ClientUpdate], weighting: str, **hyper: float
) -> ServerState:
    """A server-optimizer strategy's aggregation: the weighted mean of the client states
    (`client_weighted_mean`), then one `server_step` from the state's global adapter and
    moments (``hyper``: ``lr`` and the rule's own settings)."""
    x = state.global_state
    delta = pseudo_delta(x, client_weighted_mean(updates, weighting))
    new_x, buffers = server_step(rule, x, delta, {k: state.buffers[k] for k in ("m", "v") if k in state.buffers}, **hyper)
    return state.advance(round_num, new_x, **buffers)
