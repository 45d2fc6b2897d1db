"""Server optimizers over adapter state (Reddi et al., https://arxiv.org/abs/2003.00295;
FedAvgM, Hsu et al., https://arxiv.org/abs/1909.06335), as pure functions.

Every step takes the current global state ``x``, the round's ``delta`` (the aggregate of the
client states minus ``x``; the pseudo-gradient is ``-delta``) and the moment dicts, and
returns new dicts; no input is modified. Arithmetic runs in float64 and each result is cast
back to the dtype of the array it replaces, so float32 adapters keep float32 moments (as
torch optimizers do). There is no bias correction, as in the paper's Algorithm 2 (Flower's
FedAdam corrects its step for bias; its FedYogi and FedAdagrad do not).
"""

import numpy as np

from fedvlm.core.types import AdapterState


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


def momentum_step(
    x: AdapterState, delta: AdapterState, v: AdapterState, *, lr: float, momentum: float
) -> tuple[AdapterState, AdapterState]:
    """FedAvgM: ``v = momentum * v + delta``; ``x = x + lr * v``. Returns ``(x, v)``.

    With ``lr=1`` and ``momentum=0`` this is plain FedAvg (``x`` becomes the aggregate).
    """
    _check_keys(x, delta=delta, v=v)
    new_v = {k: momentum * _f64(v[k]) + _f64(delta[k]) for k in x}
    new_x = {k: (_f64(x[k]) + lr * new_v[k]).astype(x[k].dtype) for k in x}
    return new_x, {k: new_v[k].astype(v[k].dtype) for k in x}


def _first_moment(m: AdapterState, delta: AdapterState, beta1: float) -> dict[str, np.ndarray]:
    return {k: beta1 * _f64(m[k]) + (1.0 - beta1) * _f64(delta[k]) for k in m}


def _adaptive_update(
    x: AdapterState,
    m: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    m_like: AdapterState,
    v_like: AdapterState,
    lr: float,
    tau: float,
) -> tuple[AdapterState, AdapterState, AdapterState]:
    """``x = x + lr * m / (sqrt(v) + tau)``, shared by Adagrad, Adam and Yogi."""
    new_x = {k: (_f64(x[k]) + lr * m[k] / (np.sqrt(v[k]) + tau)).astype(x[k].dtype) for k in x}
    return (
        new_x,
        {k: m[k].astype(m_like[k].dtype) for k in x},
        {k: v[k].astype(v_like[k].dtype) for k in x},
    )


def adagrad_step(
    x: AdapterState,
    delta: AdapterState,
    m: AdapterState,
    v: AdapterState,
    *,
    lr: float,
    beta1: float,
    tau: float,
) -> tuple[AdapterState, AdapterState, AdapterState]:
    """FedAdagrad: ``m = b1 m + (1-b1) delta``; ``v = v + delta^2``;
    ``x = x + lr m / (sqrt(v) + tau)``. Returns ``(x, m, v)``.

    ``beta1=0`` gives Flower's FedAdagrad (which fixes ``beta_1 = 0``).
    """
    _check_keys(x, delta=delta, m=m, v=v)
    new_m = _first_moment(m, delta, beta1)
    new_v = {k: _f64(v[k]) + _f64(delta[k]) ** 2 for k in x}
    return _adaptive_update(x, new_m, new_v, m, v, lr, tau)


def adam_step(
    x: AdapterState,
    delta: AdapterState,
    m: AdapterState,
    v: AdapterState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[AdapterState, AdapterState, AdapterState]:
    """FedAdam: ``m = b1 m + (1-b1) delta``; ``v = b2 v + (1-b2) delta^2``;
    ``x = x + lr m / (sqrt(v) + tau)``. Returns ``(x, m, v)``."""
    _check_keys(x, delta=delta, m=m, v=v)
    new_m = _first_moment(m, delta, beta1)
    new_v = {k: beta2 * _f64(v[k]) + (1.0 - beta2) * _f64(delta[k]) ** 2 for k in x}
    return _adaptive_update(x, new_m, new_v, m, v, lr, tau)


def yogi_step(
    x: AdapterState,
    delta: AdapterState,
    m: AdapterState,
    v: AdapterState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[AdapterState, AdapterState, AdapterState]:
    """FedYogi: ``m = b1 m + (1-b1) delta``; ``v = v - (1-b2) delta^2 sign(v - delta^2)``;
    ``x = x + lr m / (sqrt(v) + tau)``. Returns ``(x, m, v)``.

    ``v`` stays non-negative when it starts so: it moves towards ``delta^2`` by at most
    ``(1-b2) delta^2``, so it never crosses zero.
    """
    _check_keys(x, delta=delta, m=m, v=v)
    new_m = _first_moment(m, delta, beta1)
    new_v = {}
    for k in x:
        v_k, d2 = _f64(v[k]), _f64(delta[k]) ** 2
        new_v[k] = v_k - (1.0 - beta2) * d2 * np.sign(v_k - d2)
    return _adaptive_update(x, new_m, new_v, m, v, lr, tau)
