"""Get and set adapter state as named numpy arrays, and save standard PEFT directories."""

import copy
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from fedvlm.core.types import AdapterState
from fedvlm.errors import DataError


WEIGHTS = "adapter_model.safetensors"  # what PeftModel.save_pretrained writes
CONFIG = "adapter_config.json"


def read_adapter(path: Path) -> tuple[dict, AdapterState]:
    """An adapter directory's config and arrays; a missing file is named."""
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise DataError(f"adapter {path}: no {name} (expected a PEFT adapter directory)")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"adapter {path}: {CONFIG} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        found = config.get("peft_type") if isinstance(config, dict) else config
        raise DataError(f"adapter {path}: peft_type {found!r}, expected LORA")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or config[key] <= 0:
            raise DataError(f"adapter {path}: {CONFIG} has {key}={config.get(key)!r}, expected a positive number")
    try:
        return config, load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise DataError(f"adapter {path}: {WEIGHTS} is damaged ({str(e).splitlines()[0][:100]})") from None


def get_adapter_state(model: PeftModel) -> AdapterState:
    """Trainable adapter tensors (LoRA factors and modules_to_save) keyed by PEFT's names,
    as float32 where they are 16-bit (numpy has no bfloat16; what travels is float32)."""
    return {name: _numpy(t) for name, t in get_peft_model_state_dict(model).items()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy().copy()


def set_adapter_state(model: PeftModel, state: AdapterState) -> None:
    """Load ``state`` into the model's adapter; every key must be used."""
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in state.items()}
    result = set_peft_model_state_dict(model, tensors)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise KeyError(f"adapter keys not in the model: {unexpected[:3]}")


def save_adapter(model: PeftModel, state: AdapterState, out_dir: Path, config_overrides: dict | None = None) -> None:
    """Write ``state`` as a standard PEFT directory (adapter_config.json +
    adapter_model.safetensors) that ``PeftModel.from_pretrained(base, out_dir)`` loads.

    The file holds the same names ``PeftModel.save_pretrained`` writes (PEFT's state-dict
    names), written straight from ``state`` so the model in memory is left untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.peft_config["default"])
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    config.save_pretrained(str(out_dir))
    arrays = {name: np.ascontiguousarray(a) for name, a in state.items()}
    save_file(arrays, str(out_dir / WEIGHTS), metadata={"format": "pt"})


def _state_key(name: str) -> str:
    # PEFT's state-dict names drop the adapter name (``lora_A.default.weight`` ->
    # ``lora_A.weight``; ``modules_to_save.default.x`` -> ``x``).
    return name.replace(".modules_to_save.default.", ".").replace(".default.", ".")


def adapter_parameters(model: PeftModel) -> dict[str, torch.nn.Parameter]:
    """Every adapter parameter (trainable now or not), keyed as ``get_adapter_state`` does."""
    keys = set(get_peft_model_state_dict(model))
    out = {}
    for name, param in model.named_parameters():
        key = _state_key(name)
        if key in keys and (".lora_" in name or ".modules_to_save." in name):
            out[key] = param
    return out


def set_trainable(model: PeftModel, keys) -> None:
    """Train exactly the adapter arrays ``keys``; freeze the others (tuning strategies,
    FFA-LoRA's A)."""
    keys = set(keys)
    for key, param in adapter_parameters(model).items():
        param.requires_grad_(key in keys)


def trainable_by_state_key(model: PeftModel) -> dict[str, torch.nn.Parameter]:
    """The model's trainable parameters keyed by the names ``get_adapter_state`` uses;
    client hooks use this map to line up server arrays (global weights, control variates)
    with live parameters."""
    keys = set(get_peft_model_state_dict(model))
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = _state_key(name)
        if key not in keys:
            raise KeyError(f"trainable parameter {name} has no adapter state key ({key})")
        out[key] = param
    return out
