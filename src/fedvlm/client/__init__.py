"""The client unit: what one node runs per message (DESIGN.md, "The client is a unit").

``train(payload, extras, config, node)`` takes the arrays the server sent, a `RoundConfig`
of scalars and the node's own context (`Node`: its loaded model, its data, its store) and
returns a `ClientUpdate` (arrays + metrics); ``evaluate(payload, config, node)`` scores the
node's own model on its local test split; ``kept`` and ``personalized`` are what it reports
of its own model when the server asks (FedSA-LoRA's reference model, the final export). It
reads nothing of the server or of other clients; the in-process simulator and a Flower
ClientApp call the same functions.
"""

from fedvlm.client.evaluation import evaluate, kept, personalized
from fedvlm.client.node import Node, NodeStore
from fedvlm.client.round_config import EvalRoundConfig, RoundConfig
from fedvlm.client.unit import start_state, train

__all__ = ["EvalRoundConfig", "Node", "NodeStore", "RoundConfig", "evaluate", "kept", "personalized", "start_state", "train"]
