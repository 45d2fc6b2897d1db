"""FedALT's client side: active when the server sends a rest of world (``extras["row"]``).

The client trains its own LoRA (the PEFT adapter) and its mixer with the rest of world
frozen (`fedvlm.algorithms.fedalt.layers.MixedLoRA`). Its own LoRA goes up (the usual update)
and also stays in its store, since the server sends none back; the mixer never leaves the
store, and neither does the last rest of world received, which its evaluation and
personalized export use. Everything is versioned by round, so a killed and resumed run
picks up exactly what the client held.
"""

from contextlib import contextmanager

from fedvlm.algorithms.base import options_from_record
from fedvlm.algorithms.fedalt.layers import MixedLoRA
from fedvlm.algorithms.fedalt.server import FedALTOptions
from fedvlm.core.sharing import LOCAL
from fedvlm.core.types import AdapterState
from fedvlm.seeds import Stream, seed_for, torch_seed

ROW, MIXER = "fedalt_row", "fedalt_mixer"


class FedALTClient:
    @staticmethod
    def applies(config, extras: dict) -> bool:
        return "row" in extras

    def __init__(self, node, config, extras: dict, start: AdapterState):
        options = options_from_record(FedALTOptions, config.options)
        fixed = options.fedalt_mixer == "fixed"
        mixer = None if fixed else node.store.load(MIXER, before_round=config.round)
        self.row = extras["row"]
        self.layers = MixedLoRA(node.model, self.row, mixer, fixed,
                                torch_seed(seed_for(config.seed, Stream.FEDALT_MIXER, node.seed_id)))
        self.weight = options.fedalt_ortho
        self.hooks = [self]
        self.node, self.round = node, config.round

    @staticmethod
    def personal_layers(node, before_round: int, extras: dict | None = None):
        return personal_layers(node, before_round, (extras or {}).get("row"))

    @staticmethod
    def personal_arrays(node, before_round: int, extras: dict | None = None) -> AdapterState:
        return personal_arrays(node, before_round, (extras or {}).get("row"))

    def extra_loss(self, model):
        return self.weight * self.layers.orthogonality() if self.weight > 0 else None

    def after_step(self, model, lr: float) -> None:
        pass

    def finish(self, start: AdapterState, sent: AdapterState) -> dict:
        store = self.node.store
        store.save(LOCAL, sent, self.round)  # the own LoRA: the server sends none back
        store.save(ROW, self.row, self.round)
        if not self.layers.fixed:
            store.save(MIXER, self.layers.mixer_state(), self.round)
        self.layers.remove()
        return {}


def held(node, before_round: int) -> tuple[AdapterState | None, AdapterState | None]:
    """The rest of world and mixer the node holds before ``before_round`` (None: none)."""
    return node.store.load(ROW, before_round=before_round), node.store.load(MIXER, before_round=before_round)


def personal_arrays(node, before_round: int, fresh_row: AdapterState | None = None) -> AdapterState:
    """What the node adds to its own adapter for its personalized export: its rest of
    world (keys under ``rest_of_world.``; ``fresh_row``, the server's latest, where given)
    and its mixer; empty without FedALT state."""
    row, mixer = held(node, before_round)
    if row is None:
        return {}
    return {**{"rest_of_world." + k: v for k, v in (fresh_row or row).items()}, **(mixer or {})}


@contextmanager
def personal_layers(node, before_round: int, fresh_row: AdapterState | None = None):
    """The node's model with its FedALT mixing as of before ``before_round`` installed,
    if it has any (otherwise the model as it is), with ``fresh_row`` (the server's latest
    rest of world) in place of the one it trained against, where given."""
    row, mixer = held(node, before_round)
    if row is None:
        yield
        return
    layers = MixedLoRA(node.model, fresh_row or row, mixer, fixed=mixer is None)
    try:
        yield
    finally:
        layers.remove()
