"""SCAFFOLD's client side: active when the server sends its control variate ``c``.

The client's own control variate ``c_i`` lives in its store; the correction covers the
exchanged arrays (a local-only B is left uncorrected) and, of those, the components within
this client's rank. Back goes ``extras["dc"] = c_i+ - c_i``.
"""

import numpy as np

from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import trainable_by_state_key
from fedvlm.train.rank_mask import within_rank
from fedvlm.train.scaffold import ScaffoldCorrection

STORE_NAME = "scaffold_c"


class ScaffoldClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return "c" in extras

    def __init__(self, node, config, extras: dict, start: AdapterState):
        c = extras["c"]
        c_i = node.store.load(STORE_NAME, before_round=config.round)
        if c_i is None or set(c_i) != set(c):  # first round, or a new two-stage stage
            c_i = {k: np.zeros_like(v) for k, v in c.items()}
        owned = within_rank({k: v.shape for k, v in c.items()}, config.rank)
        params = trainable_by_state_key(node.model)
        self.correction = ScaffoldCorrection({k: p for k, p in params.items() if k in c}, c, c_i, owned)
        self.hooks = [self.correction]
        self.node, self.round = node, config.round

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        c_new = self.correction.new_control(start, sent)
        self.node.store.save(STORE_NAME, c_new, self.round)
        return {"dc": {k: c_new[k] - self.correction.c_i[k] for k in c_new}}
