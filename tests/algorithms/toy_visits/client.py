"""The toy's client side: its own round count in the node's store, checked against the
server's, and an optional penalty hook on the local loop."""

import numpy as np

from fedvlm.algorithms.base import options_from_record
from fedvlm.models.adapter import trainable_by_state_key
from toy_visits.server import ToyOptions

STORE_NAME = "toy_visits"


class ToyClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return "toy_seen" in extras

    def __init__(self, node, config, extras: dict, start):
        held = node.store.load(STORE_NAME, before_round=config.round)
        before = held["visits"] if held else np.zeros(1, dtype=np.float32)
        if not np.array_equal(before, extras["toy_seen"]["visits"]):
            raise ValueError(f"client {node.client_id}: the server counts {extras['toy_seen']['visits']}, the store {before}")
        self.visits = before + 1
        self.decay = options_from_record(ToyOptions, config.options).toy_decay
        self.params = trainable_by_state_key(node.model)
        self.node, self.round, self.hooks = node, config.round, [self]

    def extra_loss(self, model):
        return self.decay * sum((p.float() ** 2).sum() for p in self.params.values()) if self.decay > 0 else None

    def after_step(self, model, lr: float) -> None:
        pass

    def finish(self, start, sent) -> dict:
        self.node.store.save(STORE_NAME, {"visits": self.visits}, self.round)
        return {"toy_visits": {"visits": self.visits}}
