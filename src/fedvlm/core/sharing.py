"""Which adapter arrays a LoRA variant exchanges, and which stay put.

- ``naive`` / ``svd`` / ``flora`` / ``fedex``: everything trainable travels (A, B and modules
  like the projector).
- ``ffa`` (FFA-LoRA, https://arxiv.org/abs/2403.12313): every A is frozen at the shared
  seeded initialization, which each client regenerates itself; only B (and non-LoRA
  modules) is trained and sent, both ways. Averaging B is then exact.
- ``fedsa`` (FedSA-LoRA, https://arxiv.org/abs/2410.01463): only A (and non-LoRA modules)
  is shared and averaged; each client's B stays on the client, giving a personalized
  model ``W0 + s B_k A_avg``.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from fedvlm.core.lora import A_SUFFIX, B_SUFFIX

# The store name under which a client keeps its own trained arrays (FedSA-LoRA's B, FedALT's
# own LoRA).
LOCAL = "local"

TUNINGS = ("lora", "connector", "connector_lora", "two_stage")
_PARTS = {
    "lora": {"lora", "module"},
    "connector": {"connector", "module"},
    "connector_lora": {"lora", "connector", "module"},
}


def key_part(key: str, connector: Iterable[str]) -> str:
    """``"lora"`` (a LoRA factor), ``"connector"`` (a module of the vision-language
    connector) or ``"module"`` (any other fully trained module, e.g. a classifier head)."""
    if key.endswith(A_SUFFIX) or key.endswith(B_SUFFIX):
        return "lora"
    if any(f".{name}." in key for name in connector):
        return "connector"
    return "module"


@dataclass(frozen=True)
class SharingPlan:
    """What trains and what travels in each round, from the tuning strategy and the LoRA
    variant's facts (``frozen`` and ``local`` key suffixes, from its registry line in
    ``fedvlm.algorithms``).

    - ``lora``: LoRA factors (and other modules such as a classifier head) train;
    - ``connector``: only the connector trains; LoRA stays at its initialization (B = 0);
    - ``connector_lora``: both;
    - ``two_stage``: the connector for rounds ``1..two_stage_rounds``, then LoRA with the
      connector frozen at the value the federation reached.

    Trained arrays travel both ways, except FedSA-LoRA's B, which trains but stays on the
    client. Arrays that never train are rebuilt by every client from the shared seeded
    initialization. (Two-stage's frozen connector is not at its initialization; it travels
    down with each instruction.)
    """

    tuning: str = "connector_lora"
    two_stage_rounds: int = 0
    connector: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()  # key suffixes that never train (FFA-LoRA's A)
    local: tuple[str, ...] = ()  # key suffixes that train and stay on the client (FedSA-LoRA's B)

    def __post_init__(self):
        if self.tuning not in TUNINGS:
            raise ValueError(f"unknown tuning {self.tuning!r} (valid: {', '.join(TUNINGS)})")

    def parts(self, round_num: int) -> set[str]:
        """The parts (see `key_part`) that train in ``round_num``."""
        if self.tuning == "two_stage":
            return {"connector" if round_num <= self.two_stage_rounds else "lora", "module"}
        return _PARTS[self.tuning]

    def trained(self, keys: Iterable[str], round_num: int) -> list[str]:
        """Keys whose arrays train in ``round_num`` (FFA-LoRA's A never does)."""
        parts = self.parts(round_num)
        return [k for k in keys if key_part(k, self.connector) in parts and not k.endswith(self.frozen)]

    def exchanged(self, keys: Iterable[str], round_num: int) -> list[str]:
        """Keys whose arrays go to the server after ``round_num`` (and come back from it)."""
        return [k for k in self.trained(keys, round_num) if not k.endswith(self.local)]

    def starts_stage(self, round_num: int) -> bool:
        """Whether ``round_num`` is the first LoRA round of a two-stage run."""
        return self.tuning == "two_stage" and round_num == self.two_stage_rounds + 1


@dataclass
class PlannedStrategy:
    """The server side of a `SharingPlan` around any strategy (``inner``).

    The inner strategy only ever sees the arrays exchanged in the current round. At the
    first round of a new stage (two-stage tuning) it starts afresh on the arrays now
    exchanged, from where the previous stage left every array; what stops being exchanged
    (the connector) is kept as ``buffers["frozen"]`` and goes down with every payload, since
    it is no longer at the seeded initialization every client can rebuild.
    """

    inner: object  # core.strategy.Strategy
    plan: SharingPlan
    initial: dict  # the seeded initial adapter, every array

    def initialize(self, initial=None):
        return self._start(1)

    def _start(self, round_num: int, previous=None):
        start = {**self.initial, **(previous.global_state if previous else {})}
        exchanged = self.plan.exchanged(start, round_num)
        state = self.inner.initialize({k: start[k] for k in exchanged})
        if previous is None:
            return state
        frozen = {k: v for k, v in previous.global_state.items() if k not in exchanged}
        return state.advance(round_num - 1, state.global_state, frozen=frozen)

    def begin_round(self, round_num: int, state):
        """The state to configure ``round_num`` from: restarted where a new stage begins."""
        return self._start(round_num, previous=state) if self.plan.starts_stage(round_num) else state

    def configure(self, round_num, state, client_ids, rng):
        instructions = self.inner.configure(round_num, state, client_ids, rng)
        frozen = state.buffers.get("frozen")
        if frozen:
            for instruction in instructions.values():
                instruction.payload = {**frozen, **instruction.payload}
        return instructions

    def aggregate(self, round_num, state, updates):
        return self.inner.aggregate(round_num, state, updates)

    def __getattr__(self, name):  # the inner strategy's optional parts (``expected_extras``)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
