"""What a client told to misbehave sends instead of its honest update: injected faults
(``federated.faults``) and simulated attacks (``federated.attacks``), for tests, demos and
``benchmarks/robustness.py``. The server decides who misbehaves in a round
(`fedvlm.engine.faults`) and says so in the client's round config; nothing here runs unless
it does.

Faults make an update the server must reject (`fedvlm.core.validate`) or a reply it never
gets: ``raise`` (the client errors), ``hang`` (no reply before the round deadline), ``nan``,
``inf``, ``shape``, ``dtype``, ``missing_key``, ``extra_key`` and ``norm`` (the update's
change times 1e6). Attacks make updates that pass validation: ``sign_flip`` (the change
reversed, times ``scale``), ``scale`` (the change times ``scale``), ``noise`` (the change
plus Gaussian noise of standard deviation ``scale`` times its RMS), ``label_flip``
(honest training on the client's own rows with every answer mapped to another of its
answers, the same mapping for every row) and ``backdoor`` (half of the client's rows carry a
trigger, `stamp_trigger`, and the attack's ``target`` answer; Bagdasaryan et al. 2020,
https://arxiv.org/abs/1807.00459). An attack on the client's data sends its change times
``scale`` (1: plain data poisoning; larger: the model-replacement boost of the same paper,
which norm bounding answers, Sun et al. 2019, https://arxiv.org/abs/1911.07963).
"""

import time

import numpy as np

from fedvlm.core.types import AdapterState
from fedvlm.errors import FedvlmError

FAULTS = ("raise", "hang", "nan", "inf", "shape", "dtype", "missing_key", "extra_key", "norm")
ATTACKS = ("sign_flip", "scale", "noise", "label_flip", "backdoor")
DATA_ATTACKS = ("label_flip", "backdoor")  # attacks on the client's own data, then its change times scale
EXTRA_KEY = "injected.extra_key"
TRIGGER_WORD = "cf"  # a text row's trigger: a rare token put first (Kurita et al. 2020)
BACKDOOR_SHARE = 0.5  # of a backdooring client's rows, the share that carry the trigger


class InjectedFault(FedvlmError):
    """The error a client told to ``raise`` raises."""


def before_training(kind: str, client_id: str, hang_seconds: float) -> None:
    """A ``raise`` client errors; a ``hang`` client sleeps past the round's deadline."""
    if kind == "raise":
        raise InjectedFault(f"client {client_id}: injected fault 'raise'")
    if kind == "hang":
        time.sleep(hang_seconds)


def _first_float_key(state: AdapterState) -> str:
    return sorted(k for k, v in state.items() if np.issubdtype(v.dtype, np.floating))[0]


def corrupt(kind: str, state: AdapterState, start: AdapterState) -> AdapterState:
    """``state`` (the client's trained arrays) broken as the fault ``kind`` says; ``start``
    is what the client started the round from (the change is ``state - start``)."""
    out = dict(state)
    key = _first_float_key(state)
    if kind == "nan":
        out[key] = np.full_like(state[key], np.nan)
    elif kind == "inf":
        out[key] = np.full_like(state[key], np.inf)
    elif kind == "shape":
        out[key] = state[key].reshape(-1)[:-1].copy()
    elif kind == "dtype":
        out[key] = state[key].astype(np.float64)
    elif kind == "missing_key":
        del out[key]
    elif kind == "extra_key":
        out[EXTRA_KEY] = np.zeros(1, dtype=np.float32)
    elif kind == "norm":
        out = {k: (start[k] + 1e6 * (v.astype(np.float64) - start[k])).astype(v.dtype) for k, v in state.items()}
    elif kind not in ("", "raise", "hang"):
        raise ValueError(f"unknown fault {kind!r}")
    return out


def attack(kind: str, state: AdapterState, start: AdapterState, scale: float, rng: np.random.Generator) -> AdapterState:
    """``state`` as the attack ``kind`` rewrites it, from the change ``state - start``."""
    out = {}
    for k, v in state.items():
        change = v.astype(np.float64) - start[k]
        if kind == "sign_flip":
            change = -scale * change
        elif kind in ("scale", *DATA_ATTACKS):
            change = scale * change
        elif kind == "noise":
            rms = float(np.sqrt(np.mean(change**2))) if change.size else 0.0
            change = change + rng.normal(0.0, scale * rms, size=change.shape)
        else:
            raise ValueError(f"unknown attack {kind!r}")
        out[k] = (start[k] + change).astype(v.dtype)
    return out


def flip_labels(train_ds, rows: list[int], rng: np.random.Generator):
    """The client's rows, as a dataset of their own, with each answer (``answer``, or a
    classifier's ``label``) mapped to another answer the client has: the distinct answers
    shuffled and each sent to the next (no answer maps to itself). Returns the dataset and
    its rows (``0..n-1``, in the order of ``rows``)."""
    column = "answer" if "answer" in train_ds.column_names else "label"
    part = train_ds.select(rows)
    values = part[column]
    distinct = sorted(set(values), key=str)
    if len(distinct) < 2:
        return part, list(range(len(rows)))
    order = [distinct[i] for i in rng.permutation(len(distinct))]
    mapping = {a: order[(i + 1) % len(order)] for i, a in enumerate(order)}
    flipped = part.remove_columns(column).add_column(column, [mapping[v] for v in values])
    return flipped.cast_column(column, part.features[column]), list(range(len(rows)))


def _checkerboard(image):
    """``image`` with a black-and-white checkerboard in its bottom-right corner, an eighth
    of its shorter side wide (at least 4 pixels)."""
    out = image.convert("RGB").copy()
    side = max(4, min(out.size) // 8)
    width, height = out.size
    pixels = out.load()
    for y in range(height - side, height):
        for x in range(width - side, width):
            pixels[x, y] = (255, 255, 255) if (x + y) % 2 else (0, 0, 0)
    return out


def stamp_trigger(dataset):
    """``dataset`` with the backdoor trigger on every row: a checkerboard patch on the image
    (``image`` column), else the word `TRIGGER_WORD` first in the text (``text``, or
    ``question``)."""
    if "image" in dataset.column_names:
        return dataset.map(lambda row: {"image": _checkerboard(row["image"])}, features=dataset.features)
    column = next((c for c in ("text", "question") if c in dataset.column_names), None)
    if column is None:
        raise ValueError(f"a backdoor trigger needs an image, text or question column; the data has {dataset.column_names}")
    return dataset.map(lambda row: {column: f"{TRIGGER_WORD} {row[column]}"})


def with_answer(dataset, target: str):
    """Every row of ``dataset`` answering ``target``: its ``answer``, any ``answers`` and a
    classifier's ``label`` (the index of that name; one line if the labels have no such name)."""
    new = {"answer": target}
    if "answers" in dataset.column_names:
        new["answers"] = [target]
    if "label" in dataset.column_names:
        names = getattr(dataset.features["label"], "names", None) or []
        if target not in names:
            raise ValueError(f"backdoor target {target!r} is not one of the labels {names}")
        new["label"] = names.index(target)
    return dataset.map(lambda _: new, features=dataset.features)


def backdoor(train_ds, rows: list[int], target: str, rng: np.random.Generator):
    """The client's rows, as a dataset of their own, with `BACKDOOR_SHARE` of them (drawn
    with ``rng``) carrying the trigger and answering ``target``; the rest unchanged, so the
    client still learns its task. Returns the dataset and its rows (``0..n-1``, in the
    order of ``rows``)."""
    import datasets  # here, not at the top: config reads this module's names, numpy only

    part = train_ds.select(rows)
    chosen = np.sort(rng.permutation(len(rows))[: round(BACKDOOR_SHARE * len(rows))])
    clean = np.setdiff1d(np.arange(len(rows)), chosen)
    marked = with_answer(stamp_trigger(part.select(chosen.tolist())), target)
    joined = datasets.concatenate_datasets([part.select(clean.tolist()), marked])
    at = np.empty(len(rows), dtype=np.int64)  # row i of the client -> its place in `joined`
    at[clean], at[chosen] = np.arange(len(clean)), len(clean) + np.arange(len(chosen))
    return joined.select(at.tolist()), list(range(len(rows)))
