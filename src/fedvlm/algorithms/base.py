"""What one registry line says about an algorithm (`fedvlm.algorithms`)."""

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    """An algorithm's parts and the facts the rest of fedvlm reads from its registry line
    (never restated elsewhere).

    Parts:
    - ``server``: its server side, a `fedvlm.core.strategy.Strategy` (numpy only). None for a
      LoRA variant that only changes which arrays train and travel: it runs under
      ``federated.strategy``'s server side.
    - ``client``: its client side, or None. A client side is a class with
      ``applies(config, extras)`` (whether this round's message asks for it), a constructor
      ``(node, config, extras, start)``, ``hooks`` (`fedvlm.train.hooks.ClientHook`) for the
      local loop, and ``finish(start, sent) -> extras`` after it (what goes up beside the
      update, after saving what the client keeps). Optional static methods for an algorithm
      whose client model is more than its adapter (FedALT): ``personal_layers(node,
      before_round, extras)``, a context that installs it for evaluation, and
      ``personal_arrays(node, before_round, extras)``, the arrays its personalized export
      adds; each a no-op where the node holds none of the algorithm's state. ``extras`` is
      what the server side's optional ``evaluation_extras(state, client_ids)`` sent the
      client for it (FedALT: its fresh rest of world), or None.
    - ``options``: its options dataclass, or None. Each field is a config key under
      ``federated`` (default: the field's); the server side gets the instance as its
      ``options`` and sends it to its client side as a record (``RoundConfig.options``).

    Facts (LoRA variants):
    - ``frozen``: adapter-key suffixes that never train (each client rebuilds them from the
      shared seeded initialization); ``local``: suffixes that train but stay on the client.
    - ``merges_into_base``: the server folds updates into the base weights, so the base must
      be full precision, and clients receive the factors they have not applied yet.
    - ``personal``: every client's model is its own; the server's ``global_state`` is only a
      reference, and nothing of a client's model comes down, so there is no delta to
      compress and no global weighting.
    - ``mixed_ranks``: clients may train at different LoRA ranks.
    - ``connector_stages``: works with ``lora.tuning`` connector and two_stage (whose connector
      rounds have no LoRA to vary).

    Facts (any):
    - ``not_a_sum``: why its aggregate is not a (weighted) sum of the clients' updates, which
      client-level DP (``federated.privacy``) and secure aggregation
      (``federated.secure_aggregation``) need; empty when it is one.
    - ``loss_term``: its client side adds a term to the training loss (FedProx, FedALT),
      which DP-SGD's per-example gradients (``train.dp_sgd``) would not carry.
    """

    server: type | None = None
    client: type | None = None
    options: type | None = None
    frozen: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    merges_into_base: bool = False
    personal: bool = False
    mixed_ranks: bool = False
    connector_stages: bool = False
    not_a_sum: str = ""
    loss_term: bool = False
    paper: str = ""

    @property
    def personalized(self) -> bool:
        """Whether each client ends with a model of its own (FedSA-LoRA's B, FedALT)."""
        return bool(self.local) or self.personal


class OptionError(ValueError):
    """An algorithm option out of range: the config turns it into one line naming the key."""

    def __init__(self, key: str, expected: str, got):
        super().__init__(f"option '{key}': expected {expected}, got {got!r}")
        self.key, self.expected, self.got = key, expected, got


def options_from_record(cls: type, record: dict[str, Any]):
    """An algorithm's options as its client side receives them: the fields of ``cls`` found
    in the round's options record (``RoundConfig.options``), defaults for the rest."""
    return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})
