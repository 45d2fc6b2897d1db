"""SCAFFOLD: control variates against client drift."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedvlm.core.aggregate import client_weighted_mean
from fedvlm.core.sampling import broadcast
from fedvlm.core.server_opt import zeros_like_state
from fedvlm.core.types import AdapterState, ClientUpdate, Instruction, ServerState


@dataclass(frozen=True)
class ScaffoldOptions:
    """Scaffold's options: config keys ``federated.<field>`` (``fedvlm.algorithms.base.Algorithm``)."""

    server_lr: float = 1.0


@dataclass
class Scaffold:
    """SCAFFOLD option II (Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378).

    Server state: the global adapter ``x`` and the server control variate ``c``
    (``buffers["c"]``, zero at start). Each sampled client receives ``x`` and ``c``, keeps
    its own ``c_i`` in its client store, trains with corrected steps
    (``fedvlm.algorithms.scaffold.client``) and returns its trained state ``y`` and ``dc = c_i+ - c_i``.
    Server: ``x += server_lr * mean_k(y_k - x)`` (weighted as ``weighting`` says, by
    training-set size by default as every fedvlm aggregation; the paper's mean is
    unweighted: ``weighting="uniform"``) and ``c += sum_k q_k dc_k`` over the sampled
    clients, so that ``c = sum_i q_i c_i`` over all ``N`` clients with the model's own
    weights (ALGORITHMS.md): ``q_i = n_i / sum_j n_j`` over every client's training-set size
    (``client_sizes``; with ``weighting="examples"`` too, since a client that was not
    sampled has no examples this round), or ``q_i = 1/N`` under ``weighting="uniform"``,
    the paper's ``c += (1/N) sum_k dc_k``. Without ``client_sizes`` it is the paper's 1/N.
    """

    fraction: float = 1.0
    min_clients: int = 1
    weighting: str = "data_size"  # core.aggregate.client_weights
    num_clients: int = 1
    client_sizes: dict[str, int] | None = None  # every client's training-set size (the engine's)
    options: ScaffoldOptions = field(default_factory=ScaffoldOptions)

    def control_weights(self, updates: Sequence[ClientUpdate]) -> dict[str, float]:
        """``q_k`` of each sampled client in ``c = sum_i q_i c_i`` (see the class doc)."""
        if self.weighting == "uniform" or not self.client_sizes:
            return {u.client_id: 1.0 / self.num_clients for u in updates}
        total = float(sum(self.client_sizes.values()))
        return {u.client_id: self.client_sizes[u.client_id] / total for u in updates}

    def initialize(self, initial: AdapterState) -> ServerState:
        return ServerState(round=0, global_state=dict(initial), buffers={"c": zeros_like_state(initial)})

    def configure(
        self, round_num: int, state: ServerState, client_ids: Sequence[str], rng: np.random.Generator
    ) -> dict[str, Instruction]:
        return broadcast(state.global_state, client_ids, self.fraction, self.min_clients, rng, extras={"c": state.buffers["c"]})

    def aggregate(self, round_num: int, state: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        x, c = state.global_state, state.buffers["c"]
        mean_y = client_weighted_mean(updates, self.weighting)
        new_x = {
            k: (x[k] + self.options.server_lr * (mean_y[k].astype(np.float64) - x[k])).astype(x[k].dtype) for k in x
        }
        q = self.control_weights(updates)
        new_c = {
            k: (c[k] + sum(q[u.client_id] * u.extras["dc"][k].astype(np.float64) for u in updates)).astype(c[k].dtype)
            for k in c
        }
        return state.advance(round_num, new_x, c=new_c)
