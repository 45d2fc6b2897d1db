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
from fedvlm.core.types import AdapterState

AGGREGATIONS = ("naive", "svd", "ffa", "fedsa", "flora", "fedex")


def kept_suffix(aggregation: str) -> str | None:
    """The LoRA factor that does not travel under ``aggregation`` (None: all travel)."""
    return {"ffa": A_SUFFIX, "fedsa": B_SUFFIX}.get(aggregation)


def shared_keys(keys: Iterable[str], aggregation: str) -> list[str]:
    """The keys exchanged with the server, in the given order."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r} (valid: {', '.join(AGGREGATIONS)})")
    kept = kept_suffix(aggregation)
    return [k for k in keys if kept is None or not k.endswith(kept)]


def split_state(state: AdapterState, aggregation: str) -> tuple[AdapterState, AdapterState]:
    """``(shared, kept)``: what travels and what stays on the client."""
    shared = set(shared_keys(state, aggregation))
    return (
        {k: v for k, v in state.items() if k in shared},
        {k: v for k, v in state.items() if k not in shared},
    )


# Tuning strategies (FedVLMBench, https://arxiv.org/abs/2506.09638): which parts train.
TUNINGS = ("lora", "connector", "connector_lora", "two_stage")


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
    """What trains and what travels in each round, from the LoRA variant (``aggregation``)
    and the tuning strategy.

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

    aggregation: str = "naive"
    tuning: str = "connector_lora"
    two_stage_rounds: int = 0
    connector: tuple[str, ...] = ()

    def parts(self, round_num: int) -> set[str]:
        if self.tuning == "two_stage":
            return {"connector" if round_num <= self.two_stage_rounds else "lora", "module"}
        return {"lora": {"lora", "module"}, "connector": {"connector", "module"}}.get(
            self.tuning, {"lora", "connector", "module"}
        )

    def trained(self, keys: Iterable[str], round_num: int) -> list[str]:
        """Keys whose arrays train in ``round_num`` (FFA-LoRA's A never does)."""
        parts = self.parts(round_num)
        frozen = A_SUFFIX if self.aggregation == "ffa" else None
        return [
            k for k in keys
            if key_part(k, self.connector) in parts and not (frozen and k.endswith(frozen))
        ]

    def exchanged(self, keys: Iterable[str], round_num: int) -> list[str]:
        """Keys whose arrays go to the server after ``round_num`` (and come back from it)."""
        kept = B_SUFFIX if self.aggregation == "fedsa" else None
        return [k for k in self.trained(keys, round_num) if not (kept and k.endswith(kept))]

    def starts_stage(self, round_num: int) -> bool:
        """Whether ``round_num`` is the first LoRA round of a two-stage run."""
        return self.tuning == "two_stage" and round_num == self.two_stage_rounds + 1
