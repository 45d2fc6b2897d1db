"""One-shot merge of trained PEFT LoRA adapters into one PEFT adapter (DFL_SLM's merge).

``naive`` averages A and B separately; ``svd`` forms the exact weighted ``sum_k p_k s_k B_k A_k``
and truncates it to ``rank`` (``core.lora.svd_aggregate``), so adapters of different ranks
merge too. Weights are equal, explicit, or proportional to the clients' dataset sizes.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from safetensors.numpy import save_file

from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.lora import pad_rank, svd_aggregate
from fedvlm.errors import ConfigError, DataError
from fedvlm.models.adapter import CONFIG, WEIGHTS, read_adapter

def _scaling(config: dict) -> float:
    return config["lora_alpha"] / config["r"]


def merge_adapters(
    paths: Sequence[Path], method: str, weights: Sequence[float], rank: int | None, out: Path
) -> Path:
    """Merge the adapters at ``paths`` with ``weights`` and write a PEFT directory ``out``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not an empty directory")
    if len(weights) != len(paths):
        raise ConfigError(f"{len(paths)} adapters but {len(weights)} weights")
    loaded = [read_adapter(Path(p)) for p in paths]
    configs, states = [c for c, _ in loaded], [s for _, s in loaded]
    for p, c, s in zip(paths[1:], configs[1:], states[1:]):
        if set(s) != set(states[0]):
            raise DataError(f"adapter {p}: its layers differ from {paths[0]}'s")
        for key, a in s.items():
            ref = states[0][key].shape
            lora_rank_axis = 0 if ".lora_A." in key else 1 if ".lora_B." in key else None
            same = [d for i, d in enumerate(a.shape) if i != lora_rank_axis] == [d for i, d in enumerate(ref) if i != lora_rank_axis]
            if a.ndim != len(ref) or not same:
                raise DataError(f"adapter {p}: {key} has shape {a.shape}, {paths[0]} has {ref}")
        if c.get("base_model_name_or_path") != configs[0].get("base_model_name_or_path"):
            raise DataError(f"adapter {p}: base model {c.get('base_model_name_or_path')!r} differs from {paths[0]}'s")
    config = dict(configs[0])
    if method == "naive":
        if rank is not None:
            raise ConfigError("--rank works with --method svd only (naive keeps the adapters' rank)")
        if len({c["r"] for c in configs}) > 1 or len({_scaling(c) for c in configs}) > 1:
            raise ConfigError("--method naive needs adapters of one rank and alpha; use --method svd")
        merged = weighted_mean(states, weights)
    elif method == "svd":
        total = sum(c["r"] for c in configs)
        if rank is not None and not 0 < rank <= total:
            raise ConfigError(f"--rank: expected 1..{total} (the adapters' ranks summed: dW has no more directions), got {rank}")
        rank = rank or max(c["r"] for c in configs)
        scaling = _scaling(configs[0])
        merged, _, _ = svd_aggregate(states, weights, [_scaling(c) for c in configs], rank, scaling)
        merged = pad_rank(merged, rank)
        config.update(r=rank, lora_alpha=scaling * rank, rank_pattern={}, alpha_pattern={})
    else:
        raise ConfigError(f"--method {method!r}: expected naive or svd")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps(config, indent=2))
        save_file(merged, str(out / WEIGHTS), metadata={"format": "pt"})
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror})") from None
    return out
