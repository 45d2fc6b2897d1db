"""A message to a node and its reply, apart from how they travel (Flower records, or the
worker's socket). Light on purpose: an ephemeral ClientApp that only forwards to a worker
imports neither torch nor transformers."""

from dataclasses import dataclass, field

from fedvlm.core.types import AdapterState


@dataclass
class Request:
    kind: str  # query, train, evaluate
    run_id: int
    node_id: int
    run_config: dict
    node_config: dict
    config: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the run's algorithms' options (train messages)
    state_key: str = ""  # where a node with its own state-dir keeps this run's state
    job: str = ""  # the run's config as YAML, sent by the ServerApp with every message
    arrays: AdapterState = field(default_factory=dict)
    extras: dict[str, AdapterState] = field(default_factory=dict)


@dataclass
class Reply:
    client_id: str
    metrics: dict
    arrays: AdapterState = field(default_factory=dict)
    extras: dict[str, AdapterState] = field(default_factory=dict)
