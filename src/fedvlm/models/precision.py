"""Precision of what trains over a half-precision base.

A bfloat16 or float16 base trains its adapter in float32, as peft keeps LoRA factors
(``get_peft_model(..., autocast_adapter_dtype=True)`` upcasts them): small updates to a
16-bit weight round away, and what travels and is aggregated is float32. peft leaves the
trained copies of ``modules_to_save`` (a VLM's connector, a classifier's head) in the base's
dtype; `train_float32` upcasts them too and casts at their borders, so the model around them
keeps its own dtype.
"""

import contextlib

import torch
from peft.utils import ModulesToSaveWrapper

HALF = (torch.bfloat16, torch.float16)
MIXED_PRECISION = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cast(value, dtype: torch.dtype):
    if torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


def _float32_borders(module: torch.nn.Module) -> None:
    """Run ``module`` (now float32) on float32 inputs and hand its outputs back in the
    dtype its first floating-point input came in."""
    seen = {}

    def before(_module, args, kwargs):
        first = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.is_floating_point()), None)
        seen["dtype"] = None if first is None else first.dtype
        return _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}

    def after(_module, _args, _kwargs, output):
        dtype = seen.pop("dtype", None)
        return output if dtype in (None, torch.float32) else _cast(output, dtype)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)


def train_float32(model: torch.nn.Module) -> int:
    """Upcast the trained copies of ``modules_to_save`` of a peft ``model`` whose base is
    half precision to float32, with casts at their borders; the number upcast. LoRA factors
    are float32 already (peft); a float32 or quantized base is left as it is."""
    upcast = 0
    for module in model.modules():
        if not isinstance(module, ModulesToSaveWrapper):
            continue
        for copy in module.modules_to_save.values():
            dtypes = {p.dtype for p in copy.parameters()}
            if dtypes and dtypes <= set(HALF):
                copy.float()
                _float32_borders(copy)
                upcast += 1
    return upcast


def autocast(device: torch.device, mixed_precision: str):
    """``train.mixed_precision`` as a context: torch's autocast to bf16 or fp16 on the
    model's device (what HF Trainer's ``bf16=True`` / ``fp16=True`` and accelerate's
    ``--mixed_precision`` do), or nothing (``no``)."""
    dtype = MIXED_PRECISION[mixed_precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, mixed_precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 autocast (its small range underflows gradients without one);
    for bf16 and full precision a disabled one, which passes the loss and the optimizer's
    step through untouched."""
    return torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")
