"""A model's parts found from its structure, whatever they are named: the language model,
the vision tower, the vision-language connector, a classifier's head.

Read from an instance on the meta device (no memory, no weights), so the parts are known
before the weights load: the quantization skip list and the connector strategies need them.
"""

from dataclasses import dataclass

import torch

# Sub-configs of modules that bridge a tower and the language model: part of the connector.
_CONNECTOR_CONFIGS = ("qformer_config", "perceiver_config", "adapter_config")


@dataclass(frozen=True)
class VisionLanguageParts:
    """Module names (the shortest dotted suffix that only this module's name ends with, as
    PEFT's ``modules_to_save`` matches them) of an image-text model's parts."""

    towers: tuple[str, ...]  # the vision tower and any other encoder (audio, a VQ image tokenizer)
    connector: tuple[str, ...]  # trained modules between the towers and the language model


def meta_instance(auto_class, config) -> torch.nn.Module:
    with torch.device("meta"):
        return auto_class.from_config(config)


def classifier_head(config) -> tuple[str, ...]:
    """The modules a sequence classifier of ``config`` adds to its backbone (``classifier``,
    ``pre_classifier``, ``score``...): its children with parameters other than the base model."""
    from transformers import AutoModelForSequenceClassification

    model = meta_instance(AutoModelForSequenceClassification, config)
    backbone = model.base_model_prefix
    return tuple(n for n, child in model.named_children() if n != backbone and _has_params(child))


def vision_language_parts(config) -> VisionLanguageParts:
    """The towers and the connector of the image-text model of ``config``.

    The language model is the decoder the model exposes (``get_decoder()``) and the output
    head its output embeddings. A tower is a module built from one of the config's other
    sub-configs (``vision_config``, ``audio_config``, ``vq_config``...) except those of a
    bridge (a Q-Former, a perceiver resampler). The connector is every module with
    parameters outside those: LLaVA's ``multi_modal_projector``, Idefics3's ``connector``,
    Idefics2's ``connector`` (perceiver included), BLIP-2's Q-Former and projection, Fuyu's
    ``vision_embed_tokens``. Where
    there is none outside the vision tower (Qwen2-VL's ``merger``), it is the tower's last
    child with linear layers that is neither its input embedding nor a stack of layers,
    preferring one whose last linear layer outputs the language model's width: the
    projection into the language model.
    """
    from transformers import AutoModelForImageTextToText

    return parts_of(meta_instance(AutoModelForImageTextToText, config), config)


def parts_of(model: torch.nn.Module, config) -> VisionLanguageParts:
    """`vision_language_parts` of an instance."""
    names = {id(m): n for n, m in model.named_modules()}
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    towers = _towers(model, config, decoder)
    if decoder is None or decoder is model or any(_contains(decoder, t) for t in towers):
        return VisionLanguageParts(_short(model, [names[id(t)] for t in towers]), ())
    fixed = [m for m in (decoder, head, *towers) if m is not None]
    connector: list[torch.nn.Module] = []

    def walk(module):
        for child in module.children():
            if any(child is f for f in fixed) or not _has_params(child):
                continue
            if any(_contains(child, f) for f in fixed):
                walk(child)
            else:
                connector.append(child)

    walk(model)
    if not connector and towers:
        width = getattr(config.get_text_config(), "hidden_size", None)
        first = next(iter(towers[0].children()), None)
        projections = [
            c for c in towers[0].children()
            if c is not first and _linears(c) and not any(isinstance(m, torch.nn.ModuleList) for m in c.modules())
        ]
        into_text = [c for c in projections if _linears(c)[-1].out_features == width]
        connector = (into_text or projections)[-1:]
    return VisionLanguageParts(
        _short(model, [names[id(t)] for t in towers]), _short(model, [names[id(c)] for c in connector])
    )


def tower_names(model: torch.nn.Module, config) -> list[str]:
    """Full module names of the towers of ``model`` (wherever they sit: IDEFICS keeps its
    vision model inside the decoder)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(t)] for t in _towers(model, config, decoder)]


def _towers(model: torch.nn.Module, config, decoder) -> list[torch.nn.Module]:
    tower_configs = tuple(
        type(sub) for key, sub in _sub_configs(config) if key not in ("text_config", "decoder_config", *_CONNECTOR_CONFIGS)
    )
    towers = [
        m for m in model.modules()
        if m is not model and isinstance(getattr(m, "config", None), tower_configs) and m is not decoder
    ]
    return [t for t in towers if not any(o is not t and _contains(o, t) for o in towers)]  # top-most only


def _sub_configs(config):
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None:
            yield key, sub


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def _has_params(module: torch.nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _contains(outer: torch.nn.Module, inner: torch.nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def _short(model: torch.nn.Module, full_names: list[str]) -> tuple[str, ...]:
    """Each name as its shortest dotted suffix that no other module name ends with (PEFT
    takes every module whose name ends with a ``modules_to_save`` entry: ``merger`` would
    also catch a ``vit_merger``)."""
    every = [n for n, _ in model.named_modules() if n]
    out = []
    for name in full_names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if sum(n.endswith(suffix) for n in every) == 1:
                out.append(suffix)
                break
    return tuple(out)
