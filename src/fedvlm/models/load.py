"""Load a base model and its processor, and attach LoRA adapters."""

from importlib.resources import files
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from fedvlm.errors import ModelError

EMBEDDED = "embedded"

# Linear layers LoRA adapts by default, per model type; the language model only, as the
# published federated VLM systems do.
_LM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = {
    "llava": rf".*language_model.*\.({'|'.join(_LM_LINEARS)})",
}


def embedded_model_path() -> Path:
    """The small LLaVA-architecture VLM that ships with fedvlm (see scripts/build_default_model.py)."""
    return Path(str(files("fedvlm") / "assets" / "tiny-llava"))


def resolve_model_path(path: str) -> str:
    return str(embedded_model_path()) if path == EMBEDDED else path


def load_base(path: str, dtype: str = "float32") -> tuple[torch.nn.Module, object]:
    """Load a frozen image-text-to-text model and its processor from a directory or hub id."""
    path = resolve_model_path(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model.path {path!r}: not a model directory or reachable hub id "
            f"({str(e).splitlines()[0][:160]})"
        ) from None
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model.path {path!r} ({config.model_type}): cannot load as an image-text-to-text "
            f"model with a processor ({str(e).splitlines()[0][:160]})"
        ) from None
    model.requires_grad_(False)
    model.eval()
    return model, processor


def target_modules_for(model: torch.nn.Module, target_modules: list[str] | str) -> list[str] | str:
    """Explicit module names pass through; ``"language_model"`` means the family default."""
    if target_modules != "language_model":
        return target_modules
    model_type = model.config.model_type
    if model_type not in DEFAULT_TARGETS:
        raise ModelError(
            f"no default LoRA targets for model type {model_type!r} (known: "
            f"{', '.join(sorted(DEFAULT_TARGETS))}); set lora.target_modules=[q_proj,v_proj]"
        )
    return DEFAULT_TARGETS[model_type]


def attach_lora(
    model: torch.nn.Module,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | str,
    modules_to_save: list[str],
    seed: int,
) -> PeftModel:
    """Wrap ``model`` with one LoRA adapter; the init of A is seeded by ``seed``."""
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules_for(model, target_modules),
        modules_to_save=list(modules_to_save) or None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            raise ModelError(f"lora.target_modules: {str(e).splitlines()[0][:200]}") from None
