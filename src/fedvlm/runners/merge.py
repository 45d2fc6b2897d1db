"""One-shot merge of trained PEFT LoRA adapters into one PEFT adapter (DFL_SLM's merge).

``naive`` averages A and B separately; ``svd`` forms the exact weighted ``sum_k p_k s_k B_k A_k``
and truncates it to ``rank`` (``core.lora.svd_aggregate``), so adapters of different ranks
merge too. Weights are equal, explicit, or proportional to the clients' dataset sizes.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from safetensors.numpy import load_file, save_file

from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.lora import pad_rank, svd_aggregate
from fedvlm.core.types import AdapterState
from fedvlm.errors import ConfigError, DataError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def read_adapter(path: Path) -> tuple[dict, AdapterState]:
    """An adapter directory's config and arrays; a missing file is named."""
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise DataError(f"adapter {path}: no {name} (expected a PEFT adapter directory)")
    config = json.loads((path / CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise DataError(f"adapter {path}: peft_type {config.get('peft_type')!r}, expected LORA")
    return config, load_file(str(path / WEIGHTS))


def _scaling(config: dict) -> float:
    return config["lora_alpha"] / config["r"]


def merge_adapters(
    paths: Sequence[Path], method: str, weights: Sequence[float], rank: int | None, out: Path
) -> Path:
    """Merge the adapters at ``paths`` with ``weights`` and write a PEFT directory ``out``."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} already exists and is not empty")
    if len(weights) != len(paths):
        raise ConfigError(f"{len(paths)} adapters but {len(weights)} weights")
    loaded = [read_adapter(Path(p)) for p in paths]
    configs, states = [c for c, _ in loaded], [s for _, s in loaded]
    for p, c, s in zip(paths[1:], configs[1:], states[1:]):
        if set(s) != set(states[0]):
            raise DataError(f"adapter {p}: its layers differ from {paths[0]}'s")
        if c.get("base_model_name_or_path") != configs[0].get("base_model_name_or_path"):
            raise DataError(f"adapter {p}: base model {c.get('base_model_name_or_path')!r} differs from {paths[0]}'s")
    config = dict(configs[0])
    if method == "naive":
        if len({c["r"] for c in configs}) > 1 or len({_scaling(c) for c in configs}) > 1:
            raise ConfigError("--method naive needs adapters of one rank and alpha; use --method svd")
        merged = weighted_mean(states, weights)
    elif method == "svd":
        rank = rank or max(c["r"] for c in configs)
        scaling = _scaling(configs[0])
        merged, _, _ = svd_aggregate(states, weights, [_scaling(c) for c in configs], rank, scaling)
        merged = pad_rank(merged, rank)
        config.update(r=rank, lora_alpha=scaling * rank, rank_pattern={}, alpha_pattern={})
    else:
        raise ConfigError(f"--method {method!r}: expected naive or svd")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps(config, indent=2))
    save_file(merged, str(out / WEIGHTS), metadata={"format": "pt"})
    return out
