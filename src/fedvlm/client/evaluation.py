"""The client unit's evaluation and what it reports of its own model: its own model on its
own local test split, the arrays it keeps, and its whole personalized adapter."""

from contextlib import ExitStack

from fedvlm.algorithms.registry import client_sides
from fedvlm.client.node import LOCAL, Node
from fedvlm.client.round_config import EvalRoundConfig
from fedvlm.client.unit import start_state
from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import set_adapter_state
from fedvlm.train.evaluate import evaluate as evaluate_rows


def evaluate(payload: AdapterState, config: EvalRoundConfig, node: Node, extras: dict | None = None) -> dict:
    """Accuracy of the node's model on its local test split: the server's shared arrays
    ``payload`` over what the node holds itself (the seeded initialization and the arrays
    it keeps, e.g. FedSA-LoRA's B, FedALT's own LoRA with its rest of world and mixer). For
    a global method that is the global model; for a personalized one, the client's own,
    with what the server sent for it (``extras``: FedALT's fresh rest of world). Empty when
    the node has no local test rows."""
    if not node.test_rows:
        return {}
    set_adapter_state(node.model, {**start_state(node, config.round + 1), **payload})
    with ExitStack() as layers:  # what an algorithm installs on the node's own model (FedALT's mixing)
        for side in client_sides():
            if hasattr(side, "personal_layers"):
                layers.enter_context(side.personal_layers(node, config.round + 1, extras))
        result = evaluate_rows(
            node.task, node.model, node.train_ds, node.test_rows, config.batch_size, config.max_new_tokens,
            config.answer_span, config.caption_types, config.mixed_precision, config.references,
        )
    return {k: result[k] for k in ("accuracy", "num_examples", "by_type", "captions") if k in result}


def kept(round_num: int, node: Node) -> AdapterState:
    """The trained arrays the node keeps to itself (FedSA-LoRA's B) as of after
    ``round_num``; empty when it keeps none (or has not trained yet)."""
    return node.store.load(LOCAL, before_round=round_num + 1) or {}


def personalized(payload: AdapterState, round_num: int, node: Node, extras: dict | None = None) -> AdapterState:
    """The node's own model after ``round_num``, every array: the server's shared arrays
    ``payload`` over what the node holds itself (with FedALT, its rest of world and mixer
    too: `fedvlm.algorithms.fedalt.export`)."""
    own = {**start_state(node, round_num + 1), **payload}
    for side in client_sides():
        if hasattr(side, "personal_arrays"):
            own |= side.personal_arrays(node, round_num + 1, extras)
    return own
