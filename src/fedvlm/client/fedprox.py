"""FedProx's client side: active when the round config carries ``proximal_mu`` > 0."""

from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import trainable_by_state_key
from fedvlm.train.fedprox import ProximalTerm


class FedProxClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return config.proximal_mu > 0

    def __init__(self, node, config, extras: dict, start: AdapterState):
        self.hooks = [ProximalTerm(trainable_by_state_key(node.model), start, config.proximal_mu)]

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        return {}
