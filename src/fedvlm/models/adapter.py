"""Get and set adapter state as named numpy arrays, and save standard PEFT directories."""

import copy
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from fedvlm.core.types import AdapterState


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
    save_file(arrays, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})


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
