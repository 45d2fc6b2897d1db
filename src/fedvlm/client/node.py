"""What a client node holds for the whole run."""

from dataclasses import dataclass

from fedvlm.core.sharing import LOCAL, SharingPlan  # noqa: F401 - LOCAL: part of the node's API
from fedvlm.core.types import AdapterState
from fedvlm.fileio import write_atomic
from fedvlm.train.prefetch import Loading


class NodeStore:
    """One client's own persistent state (SCAFFOLD's c_i, FedSA-LoRA's B, ...), versioned by
    round: a view of a `fedvlm.engine.rundir.ClientStore` limited to this client."""

    def __init__(self, store, client_id: str):
        self._store, self._client_id = store, client_id

    def load(self, name: str, before_round: int) -> AdapterState | None:
        """The newest version of ``name`` saved before ``before_round`` (None: never saved)."""
        return self._store.load(self._client_id, name, before_round)

    def save(self, name: str, state: AdapterState, round_num: int) -> None:
        self._store.save(self._client_id, name, state, round_num)

    def bump(self, name: str) -> int:
        """Add one to the counter ``name`` this node keeps across processes; its new value."""
        folder = self._store.root / self._client_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.count"
        count = (int(path.read_text()) if path.is_file() else 0) + 1
        write_atomic(path, str(count))
        return count


@dataclass
class Node:
    """A client's context: its model (the base loaded once, with the adapter), its data,
    its store, and what it knows of the run from its setup (the sharing plan and the
    seeded initial adapter every client regenerates). Nothing of the server's state."""

    client_id: str
    seed_id: int  # this client's index in the run's seed streams
    model: object  # PeftModel
    task: object  # rows -> batches, model -> answers
    plan: SharingPlan
    initial_adapter: AdapterState
    train_ds: object  # the dataset this node's rows index
    train_rows: list[int]
    test_rows: list[int]  # local test split (rows of train_ds)
    store: NodeStore
    base: object = None  # a algorithms.flora.client.MergedBase where the run merges into the base
    loading: Loading = Loading()  # how it makes its batches (its hardware's business)
