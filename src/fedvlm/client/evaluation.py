"""The client unit's evaluation and export: its own model on its own local test split, and
as a PEFT adapter."""

from pathlib import Path

from fedvlm.client.node import Node
from fedvlm.client.round_config import EvalRoundConfig
from fedvlm.client.unit import start_state
from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import save_adapter, set_adapter_state
from fedvlm.train.evaluate import evaluate as evaluate_rows


def evaluate(payload: AdapterState, config: EvalRoundConfig, node: Node) -> dict:
    """Accuracy of the node's model on its local test split: the server's shared arrays
    ``payload`` over what the node holds itself (the seeded initialization and the arrays
    it keeps, e.g. FedSA-LoRA's B). For a global method that is the global model; for a
    personalized one, the client's own. Empty when the node has no local test rows."""
    if not node.test_rows:
        return {}
    set_adapter_state(node.model, {**start_state(node, config.round + 1), **payload})
    result = evaluate_rows(
        node.task, node.model, node.train_ds, node.test_rows, config.batch_size, config.max_new_tokens, config.answer_span
    )
    return {"accuracy": result["accuracy"], "num_examples": result["num_examples"]}


def export(payload: AdapterState, round_num: int, node: Node, out_dir: Path) -> None:
    """Write the node's own model after ``round_num`` (the server's shared arrays over what
    it keeps) as a standard PEFT adapter directory at ``out_dir``."""
    save_adapter(node.model, {**start_state(node, round_num + 1), **payload}, out_dir)
