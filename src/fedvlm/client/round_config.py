"""One round's settings for one client, as scalars and lists of scalars, so that a Flower
``ConfigRecord`` carries them as they are (no joined strings)."""

import dataclasses
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, get_args, get_origin

from fedvlm.errors import ConfigError


@dataclass(frozen=True)
class RoundConfig:
    round: int
    seed: int  # the run's seed; the client mixes in its own seed id and the round
    rounds_done: int  # this client's earlier rounds: where its data stream and schedule are
    schedule_rounds: int  # how many rounds of this client its lr schedule spans
    local_steps: int
    local_epochs: float  # > 0: that many passes over the client's data instead of local_steps
    batch_size: int
    grad_accum: int
    lr: float
    warmup_steps: int
    schedule: str
    weight_decay: float
    max_grad_norm: float
    rank: int  # this client's LoRA rank
    full_rank: int  # the adapter's rank (lora.r); components past ``rank`` stay zero
    compression: str = "none"  # uplink: none, int8, int4
    compression_block: int = 64
    mixed_precision: str = "no"  # autocast of the forward pass: no, bf16, fp16
    fault: str = ""  # an injected fault this client commits this round (client/faults.py)
    attack: str = ""  # an attack this client makes this round, and its scale
    attack_scale: float = 1.0
    attack_target: str = ""  # a backdoor's target answer
    hang_seconds: float = 0.0  # how long a hanging client sleeps (past the round's deadline)
    # DP-SGD on this client (train.dp_sgd): its noise multiplier, or 0 with a target epsilon
    # over its schedule instead; each example's gradient bound; delta
    dp_sgd: bool = False
    dp_sgd_noise_multiplier: float = 0.0
    dp_sgd_target_epsilon: float = 0.0
    dp_sgd_max_grad_norm: float = 1.0
    dp_sgd_delta: float = 1e-5
    # distributed DP-FedAvg (federated.dp_noise=clients): clip the update to this norm (0: do
    # not) and add Gaussian noise of this standard deviation to it
    dp_clip: float = 0.0
    dp_noise_std: float = 0.0
    # The run's algorithms' options (fedvlm.algorithms): one record of scalars, which a Flower
    # message carries as its own ConfigRecord beside this one.
    options: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The scalars (``options`` travels as a record of its own)."""
        return {k: v for k, v in asdict(self).items() if k != "options"}

    @classmethod
    def from_record(cls, record: dict[str, Any], options: dict[str, Any] | None = None) -> "RoundConfig":
        return dataclasses.replace(from_record(cls, record), options=dict(options or {}))

    def steps(self, num_examples: int) -> int:
        """Local optimizer steps this round for ``num_examples`` training rows."""
        return local_steps(self.local_steps, self.local_epochs, self.batch_size * self.grad_accum, num_examples)


def local_steps(steps: int, epochs: float | None, examples_per_step: int, num_examples: int) -> int:
    """Optimizer steps per round: ``steps``, or (``epochs`` > 0) enough for that many passes."""
    if not epochs or epochs <= 0:
        return steps
    return max(1, math.ceil(epochs * num_examples / examples_per_step))


@dataclass(frozen=True)
class EvalRoundConfig:
    """What a client needs to evaluate its own model after ``round``."""

    round: int  # the round just completed: the client's own arrays as of it
    batch_size: int
    max_new_tokens: int
    answer_span: str = "whole"  # core.answers.answer_span
    caption_types: list[str] = field(default_factory=lambda: ["caption"])  # a config record holds lists
    mixed_precision: str = "no"  # autocast of the forward pass: no, bf16, fp16
    references: str = "official"  # core.answers.vqa_accuracy's references_mode

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "EvalRoundConfig":
        return from_record(cls, record)


def from_record(cls, record: dict[str, Any]):
    """A ``cls`` from a config record a server sent; a missing or mistyped field is one line."""
    values = {}
    for f in fields(cls):
        if f.name not in record:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue
            raise ConfigError(f"round config: field {f.name!r} missing")
        value = record[f.name]
        if get_origin(f.type) is list:  # a list of one scalar type
            (item,) = get_args(f.type)
            if not isinstance(value, list) or not all(_is(v, item) for v in value):
                raise ConfigError(f"round config: field {f.name!r} expected a list of {item.__name__}, got {value!r}")
            value = list(value)
        elif not _is(value, f.type):
            raise ConfigError(f"round config: field {f.name!r} expected {f.type.__name__}, got {value!r}")
        values[f.name] = value
    return cls(**values)


def _is(value, kind: type) -> bool:
    """``value`` is of the scalar ``kind`` (an int passes as a float; a bool is neither, and
    only a bool is a bool)."""
    if kind is bool:
        return isinstance(value, bool)
    return not isinstance(value, bool) and isinstance(value, {int: int, float: (int, float), str: str}[kind])
