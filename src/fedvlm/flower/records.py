"""fedvlm's messages as Flower records and back.

Train message: ``arrays`` (the payload), ``config`` (a `RoundConfig`'s scalars), ``options``
(its algorithms' options record), one ``extras.<name>`` ArrayRecord per extras group (SCAFFOLD's ``c``, base increments). Reply: ``arrays`` (the
update), ``metrics``, ``extras.<name>``. Evaluate message: ``arrays`` and ``config`` (an
`EvalRoundConfig`); reply: ``metrics``.
"""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedvlm.core.types import AdapterState, ClientUpdate

EXTRAS = "extras."


def to_arrays(state: AdapterState) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def from_arrays(record: ArrayRecord) -> AdapterState:
    return {k: a.numpy() for k, a in record.items()}


SEP = "::"  # joins nested metric names: a MetricRecord holds flat numbers only


def flat_metrics(values: dict, prefix: str = "") -> dict:
    """Nested metric dicts (per question type, per caption task) as flat ``a::b`` keys."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= flat_metrics(value, f"{prefix}{key}{SEP}")
        else:
            out[prefix + key] = value
    return out


def nested_metrics(values: dict) -> dict:
    """The inverse of `flat_metrics`."""
    out: dict = {}
    for key, value in values.items():
        *path, last = key.split(SEP)
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def pack(arrays: AdapterState, extras: dict[str, AdapterState], **records: dict) -> RecordDict:
    """A message's content: the arrays, the extras groups, and named scalar records
    (``config`` and ``client`` as ConfigRecord, ``metrics`` as MetricRecord)."""
    content = {"arrays": to_arrays(arrays)}
    content |= {EXTRAS + name: to_arrays(group) for name, group in extras.items()}
    for name, values in records.items():
        content[name] = MetricRecord(flat_metrics(values)) if name == "metrics" else ConfigRecord(values)
    return RecordDict(content)


def unpack(content: RecordDict) -> tuple[AdapterState, dict[str, AdapterState]]:
    """The arrays and the extras groups of a message."""
    arrays = from_arrays(content["arrays"]) if "arrays" in content else {}
    extras = {k[len(EXTRAS):]: from_arrays(v) for k, v in content.items() if k.startswith(EXTRAS)}
    return arrays, extras


def update_from_reply(content: RecordDict) -> ClientUpdate:
    """A client's reply to a train message as a `ClientUpdate` (its id travels in
    ``client``, its training-set size in the metrics)."""
    arrays, extras = unpack(content)
    metrics = nested_metrics(dict(content["metrics"]))
    return ClientUpdate(str(content["client"]["client_id"]), arrays, int(metrics["train_size"]), metrics, extras)
