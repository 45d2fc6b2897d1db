"""A tiny random checkpoint of any image-text-to-text architecture, built offline from its
config class's defaults, the way a hub checkpoint would hold it: config, weights, processor
and a chat template.

``build(model_type, out_dir)`` shrinks the language model (2 layers, width 32) and the
vision tower (width 32, a few layers, ``IMAGE_PATCHES`` x ``IMAGE_PATCHES`` patches), builds
the processor class of the type around the tests' byte-level BPE (plus every special token
the processor names) and an image processor sized to match, points the config's token ids
at those tokens, and writes a chat template whose image part is the placeholder the
processor expands (tried in turn: its image token, its begin-of-image token, the image
token between the start and end tokens the config names; the first that a forward pass
accepts). Nothing is downloaded. Architectures whose processor needs torchvision build only
where it is installed.

Used by ``tests/families/test_image_text.py`` (one per input style) and by
``scripts/models_coverage.py`` (every type of the mapping).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from PIL import Image

from families.tiny_text import _byte_level_bpe, _wrap

IMAGE_PATCHES = 4  # per side
MAX_DEFAULT_SIDE = 512  # the fallback at the checkpoint's own image size, where it is at most this
VISION_LAYERS = 2
TEXT_SHRINK = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 64, "head_dim": 16, "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "hidden_size_per_layer_input": 8, "global_head_dim": 16, "d_model": 32, "n_layer": 2, "n_head": 2,
    "encoder_hidden_size": 32, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 16, "v_head_dim": 16,
}
VISION_SHRINK = {
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_heads": 2, "embed_dim": 32,
    "num_key_value_heads": 2, "head_dim": 16, "depth": VISION_LAYERS, "num_hidden_layers": VISION_LAYERS,
    "num_global_layers": 1, "projection_dim": 32, "out_hidden_size": 32, "num_layers": VISION_LAYERS,
    "encoder_hidden_size": 32, "vision_output_dim": 32, "projector_input_dim": 32, "projector_output_dim": 32,
}
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}@IMAGE@{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _set(config, values: dict) -> None:
    """Smaller values for the keys ``config`` has (per-layer attributes of configs that
    refuse a global read are set where the config takes them)."""
    for key, value in values.items():
        try:
            current = getattr(config, key)
        except AttributeError:
            continue
        except Exception:  # noqa: BLE001 - a per-layer attribute with no global value
            current = None
        if not isinstance(current, (dict, list)):
            try:
                setattr(config, key, value)
            except Exception:  # noqa: BLE001 - the config keeps its own
                pass


def _clamp_layer_lists(config, layers: int) -> None:
    """Layer indices a config names (feature layers, deepstack layers, intermediate layers)
    kept inside ``layers`` layers."""
    for key, value in list(vars(config).items()):
        if "layer" not in key and "index" not in key and "indexes" not in key:
            continue
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value) and key != "layer_types":
            kept = [max(v, -layers) if v < 0 else min(v, layers - 1) for v in value]
            setattr(config, key, list(dict.fromkeys(kept)))
        elif isinstance(value, int) and key in ("vision_feature_layer", "select_layer") and value < -layers:
            setattr(config, key, -1)


def tiny_config(model_type: str, small: bool = True):
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]()
    for sub in (config, *(getattr(config, k, None) for k in getattr(config, "sub_configs", {}) or {})):
        if sub is not None and hasattr(sub, "dtype"):
            sub.dtype = "float32"  # some modules cast to the config's dtype (Llama4's vision side)
    text = config.get_text_config()
    _set(text, TEXT_SHRINK)
    if isinstance(getattr(text, "layer_types", None), list):  # one layer of each kind (hybrids keep attention)
        kinds = list(dict.fromkeys(text.layer_types))
        text.num_hidden_layers = max(2, len(kinds))
        text.layer_types = (kinds * 2)[: text.num_hidden_layers]
    for key in ("max_position_embeddings",):
        if hasattr(text, key):
            setattr(text, key, 4096)
    try:
        _scale_mrope(text)
    except Exception:  # noqa: BLE001 - per-layer head widths: no single 3-D RoPE to scale
        pass
    _clamp_layer_lists(text, text.num_hidden_layers)  # e.g. Mllama's cross-attention layers
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None and sub is not text and key != "text_config":
            _set(sub, VISION_SHRINK)
            _clamp_layer_lists(sub, VISION_LAYERS)
    vision = getattr(config, "vision_config", None)
    if small and vision is not None and hasattr(vision, "image_size"):
        side = _patch(config) * IMAGE_PATCHES * _spatial_merge(config)
        vision.image_size = [side, side] if isinstance(vision.image_size, (list, tuple)) else side
    if getattr(vision, "pixel_shuffle_ratio", None) and getattr(vision, "projector_input_dim", None):  # Llama4
        vision.intermediate_size = int(vision.projector_input_dim / vision.pixel_shuffle_ratio**2)
    if getattr(vision, "intermediate_layers_indices", None) is not None and hasattr(vision, "vision_output_dim"):
        vision.vision_output_dim = vision.hidden_size * (len(vision.intermediate_layers_indices) + 1)  # Mllama
    # connector widths some configs keep at the top level: 32 wide, or 4 x 32 where they
    # take 2 x 2 merged patches
    _set(config, {"projector_hidden_size": 32, "projection_hidden_size": 32, "out_hidden_size": 32,
                  "merged_hidden_size": 128})
    if small and hasattr(config, "mm_tokens_per_image"):  # Gemma3 pools the patches to this many tokens
        config.mm_tokens_per_image = (IMAGE_PATCHES // 2) ** 2
    _clamp_layer_lists(config, VISION_LAYERS)
    return config


def _scale_mrope(text) -> None:
    """Multimodal RoPE sections (Qwen-VL) must add up to half the shrunk head width."""
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict):  # models with 3-D RoPE default to (16, 24, 24) when none is set
        section = rope.get("mrope_section") or [16, 24, 24]
        half = (getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads) // 2
        scaled = [max(1, round(v * half / sum(section))) for v in section]
        scaled[0] += half - sum(scaled)
        rope["mrope_section"] = scaled


def _spatial_merge(config) -> int:
    vision = getattr(config, "vision_config", None)
    return getattr(vision, "spatial_merge_size", None) or getattr(config, "scale_factor", None) or 1


def _patch(config) -> int:
    patch = getattr(getattr(config, "vision_config", None), "patch_size", 14) or 14
    return patch[0] if isinstance(patch, (list, tuple)) else patch


def image_size(config) -> int:
    return _patch(config) * IMAGE_PATCHES * _spatial_merge(config)


def _shared_image_processor(model_type: str) -> dict:
    """The image processor of another type with the same processor class (a MoE variant's)."""
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
    )
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    processor = PROCESSOR_MAPPING_NAMES.get(model_type)
    for other, name in PROCESSOR_MAPPING_NAMES.items():
        if processor and name == processor and IMAGE_PROCESSOR_MAPPING_NAMES.get(other):
            return IMAGE_PROCESSOR_MAPPING_NAMES[other]
    return {}


def _sized(size: dict, side: int) -> dict:
    if "height" in size or "width" in size:
        return {"height": side, "width": side}
    if "shortest_edge" in size and "longest_edge" in size and size["longest_edge"] > 100000:  # pixels (Qwen)
        return {"shortest_edge": side * side, "longest_edge": side * side}
    return {k: side for k in size}


def image_processor_for(model_type: str, config, small: bool = True):
    from importlib.util import find_spec

    import transformers
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
    )

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or _shared_image_processor(model_type)
    name = names.get("pil") or (names.get("torchvision") if find_spec("torchvision") else None)
    if name is None:
        raise RuntimeError("its image processor needs torchvision" if names else "no image processor class")
    cls = getattr(transformers, name)
    if not small:
        processor = cls()
        sizes = [v for v in (processor.to_dict().get("size") or {}).values() if isinstance(v, int)]
        if not sizes or max(sizes) > MAX_DEFAULT_SIDE:
            raise RuntimeError(f"its default image size {sizes} is too large to check on CPU")
        return processor
    default = cls().to_dict()
    side = image_size(config)
    kwargs = {}
    for key in ("size", "crop_size", "max_image_size"):
        if isinstance(default.get(key), dict):
            kwargs[key] = _sized(default[key], side)
    vision = getattr(config, "vision_config", None)
    for key in ("patch_size", "merge_size", "temporal_patch_size"):
        source = {"merge_size": "spatial_merge_size"}.get(key, key)
        if key in default and getattr(vision, source, None):
            kwargs[key] = _patch(config) if key == "patch_size" else getattr(vision, source)
    if "image_grid_pinpoints" in default:
        kwargs["image_grid_pinpoints"] = [[side, side], [side, 2 * side]]
        config.image_grid_pinpoints = kwargs["image_grid_pinpoints"]
    if "max_image_tiles" in default and getattr(vision, "max_num_tiles", None):
        kwargs["max_image_tiles"] = vision.max_num_tiles
    if "size" in kwargs and "longest_edge" in default.get("size", {}) and "max_image_size" in default:
        kwargs["size"] = {"longest_edge": 2 * side}  # split into 2x2 tiles plus the whole image
    if "min_pixels" in default:
        kwargs.update(min_pixels=side * side, max_pixels=side * side)
    return cls(**kwargs)


def _tokenizer(extra: list[str], named: dict[str, str] | None = None):
    """The tests' BPE with ``extra`` special tokens and ``named`` ones (``tokenizer.<name>``,
    as hub tokenizers carry e.g. ``boi_token``)."""
    named = named or {}
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>", *extra, *named.values()]
    kwargs = {"extra_special_tokens": named} if named else {}
    return _wrap(_byte_level_bpe(list(dict.fromkeys(specials)), unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>",
                 unk="<unk>", **kwargs)


def _processor_and_tokenizer(model_type: str, config, extra: list[str], small: bool = True):
    """The processor on a tokenizer holding every token it asks the tokenizer for by name."""
    import re

    named: dict[str, str] = {}
    for _ in range(12):
        tokenizer = _tokenizer(extra, named)
        try:
            return _processor(model_type, config, tokenizer, None, small), tokenizer, named
        except (AttributeError, ValueError) as e:
            missing = re.search(r"has no attribute '?(\w+?)(_id)?'?$", str(e).strip()) or re.search(
                r"missing required attribute '(\w+?)(_id)?'", str(e))
            if missing is None or missing.group(1) in named:
                raise
            named[missing.group(1)] = f"<|{missing.group(1)}|>"
    raise RuntimeError("the processor asks for too many named tokens")


def _processor(model_type: str, config, tokenizer, chat_template: str | None, small: bool = True):
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if name is None:
        raise RuntimeError("no processor class in transformers' mapping")
    cls = getattr(transformers, name)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"image_processor": image_processor_for(model_type, config, small), "tokenizer": tokenizer}
    if "video_processor" in params:
        kwargs["video_processor"] = _video(model_type)
    if "feature_extractor" in params:
        kwargs["feature_extractor"] = _feature_extractor(model_type)
    kwargs.update({k: tokenizer for k in params if k.endswith("_tokenizer")})  # InstructBLIP's Q-Former
    vision = getattr(config, "vision_config", None)
    for key in params:
        if key in kwargs or key in ("self", "chat_template", "kwargs"):
            continue
        for source in (config, vision):
            if source is not None and getattr(source, key, None) is not None:
                kwargs[key] = getattr(source, key)
                break
    if "num_additional_image_tokens" in params and getattr(vision, "model_type", "") in ("clip_vision_model",):
        kwargs["num_additional_image_tokens"] = 1  # CLIP's class token
        kwargs.setdefault("vision_feature_select_strategy", "default")  # which drops it
    if "image_seq_length" in params and getattr(config, "mm_tokens_per_image", None):
        kwargs["image_seq_length"] = config.mm_tokens_per_image
    elif small and "image_seq_length" in params and getattr(config, "downsample_ratio", None):  # InternVL's pixel shuffle
        kwargs["image_seq_length"] = int((IMAGE_PATCHES * config.downsample_ratio) ** 2)
    if small and "image_seq_len" in params and vision is not None:
        perceiver = getattr(config, "perceiver_config", None)
        kwargs["image_seq_len"] = perceiver.resampler_n_latents if perceiver is not None else IMAGE_PATCHES**2
    if small and "num_image_tokens" in params:
        kwargs["num_image_tokens"] = (image_size(config) // _patch(config)) ** 2
    if small and "img_size" in params:
        kwargs["img_size"] = image_size(config)
    if "chat_template" in params or "kwargs" in params:
        kwargs["chat_template"] = chat_template
    processor = cls(**kwargs)
    processor.chat_template = chat_template
    return processor


def _feature_extractor(model_type: str):
    import transformers
    from transformers.models.auto.feature_extraction_auto import (
        FEATURE_EXTRACTOR_MAPPING_NAMES,
    )

    name = FEATURE_EXTRACTOR_MAPPING_NAMES.get(model_type)
    if name is None:
        raise RuntimeError("no audio feature extractor class")
    return getattr(transformers, name)()


def _video(model_type: str):
    import transformers
    from transformers.models.auto.video_processing_auto import (
        VIDEO_PROCESSOR_MAPPING_NAMES,
    )

    names = VIDEO_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    name = names.get("torchvision") if isinstance(names, dict) else names
    if name is None:
        raise RuntimeError("no video processor class")
    return getattr(transformers, name)()


def _token_ids(config, processor, tokenizer) -> None:
    """Point the config's ``*_token_id`` / ``*_token_index`` at the tokenizer's tokens."""
    tok = tokenizer
    for target in (config, config.get_text_config()):
        for key in list(vars(target)):
            if not key.endswith(("_token_id", "_token_index")) or key.startswith(("pad", "bos", "eos")):
                continue
            name = key.rsplit("_", 1)[0]  # image_token
            token = getattr(processor, name, None)
            if isinstance(token, str) and token in tok.get_vocab():
                setattr(target, key, tok.convert_tokens_to_ids(token))
            elif f"<|{name}|>" in tok.get_vocab():
                setattr(target, key, tok.convert_tokens_to_ids(f"<|{name}|>"))
        for key, value in (("pad_token_id", tok.pad_token_id), ("bos_token_id", tok.bos_token_id),
                           ("eos_token_id", tok.eos_token_id)):
            if hasattr(target, key):
                setattr(target, key, value)


def _image_token_id(config, processor, placeholder: str) -> None:
    """The config's image token is the one the processor repeats most in a prompt (the
    expanded placeholder), whatever the processor calls it."""
    from collections import Counter

    enc = processor(images=[Image.new("RGB", (64, 64))], text=[f"a {placeholder} b"], return_tensors="pt")
    specials = set(processor.tokenizer.all_special_ids) | {
        i for t, i in processor.tokenizer.get_vocab().items() if t.startswith("<")
    }
    counts = Counter(i for i in enc["input_ids"][0].tolist() if i in specials)
    if not counts:
        return
    image_id = counts.most_common(1)[0][0]
    for target in (config, config.get_text_config()):
        for key in ("image_token_id", "image_token_index"):
            if key in vars(target):
                setattr(target, key, image_id)


def _special_names(config) -> list[str]:
    """Tokens for ids the config names that no processor attribute holds (Qwen-VL's vision start/end)."""
    names = []
    for target in (config, config.get_text_config()):
        for key in vars(target):
            if key.endswith(("_token_id", "_token_index")) and not key.startswith(("pad", "bos", "eos")):
                names.append(f"<|{key.rsplit('_', 1)[0]}|>")
    return names


def _placeholders(processor) -> list[str]:
    image = getattr(processor, "image_token", None)
    found = [t for t in (image, getattr(processor, "boi_token", None)) if isinstance(t, str)]
    vocab = processor.tokenizer.get_vocab()
    for start, end in (("<|vision_start_token|>", "<|vision_end_token|>"), ("<|image_start_token|>", "<|image_end_token|>")):
        if start in vocab and isinstance(image, str):
            found.append(start + image + end)
    return list(dict.fromkeys([*found, "<image>"]))  # last: the literal some processors look for


def build(model_type: str, out_dir: Path, *, check=None) -> Path:
    """Write the tiny checkpoint of ``model_type`` to ``out_dir``; ``check(model, processor)``
    raises where a placeholder does not work (default: a forward pass with labels). Small
    images first; where the processor's image-token count cannot be matched to them, the
    processor's and vision tower's own image size (only widths and depths shrunk)."""
    try:
        return _build(model_type, out_dir, check, small=True)
    except Exception as small_error:  # noqa: BLE001 - try the checkpoint's own image size
        try:
            return _build(model_type, out_dir, check, small=False)
        except Exception:  # noqa: BLE001 - report the small attempt's reason
            raise small_error from None


def _build(model_type: str, out_dir: Path, check, small: bool) -> Path:
    from transformers import AutoModelForImageTextToText

    config = tiny_config(model_type, small)
    probe, _, named = _processor_and_tokenizer(model_type, config, _special_names(config), small)
    tokens = [v for k, v in vars(probe).items() if k.endswith("_token") and isinstance(v, str)]
    tokenizer = _tokenizer([*_special_names(config), *tokens], named)
    config.get_text_config().vocab_size = len(tokenizer)
    if hasattr(config, "vocab_size"):
        config.vocab_size = len(tokenizer)
    errors = []
    for placeholder in _placeholders(_processor(model_type, config, tokenizer, None, small)):
        processor = _processor(model_type, config, tokenizer, CHAT.replace("@IMAGE@", placeholder), small)
        try:
            _token_ids(config, processor, tokenizer)
            _image_token_id(config, processor, placeholder)
            torch.manual_seed(0)
            model = AutoModelForImageTextToText.from_config(config).float().eval()
            with torch.no_grad():  # gates a trained checkpoint has opened (cross-attention starts shut)
                for name, p in model.named_parameters():
                    leaf = name.rsplit(".", 1)[-1]
                    if ("gate" in leaf or "alpha" in leaf) and not p.any():  # IDEFICS' alpha_*, DeepSeek-VL's
                        p.fill_(0.5)
            try:
                (check or forward_check)(model, processor)
            except ValueError as e:
                if not _calibrate(processor, str(e)):
                    raise
                (check or forward_check)(model, processor)
        except Exception as e:  # noqa: BLE001 - try the next placeholder
            errors.append(f"{placeholder!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
            continue
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        if not (Path(out_dir) / "chat_template.jinja").exists():  # processors that do not save one
            (Path(out_dir) / "chat_template.jinja").write_text(processor.chat_template)
        return Path(out_dir)
    raise RuntimeError(errors[0])  # the processor's own image token: the telling failure


def _calibrate(processor, error: str) -> bool:
    """Where the model says how many features an image makes and the processor wrote another
    number of image tokens, set the processor's count (an int attribute holding the per-image
    token number) to the model's, as a consistent checkpoint would have it."""
    import re

    found = re.search(r"tokens:? (\d+),? features:? (\d+)", error)
    if found is None:
        return False
    tokens, features = (int(v) // 2 for v in found.groups())  # forward_check's 2 images
    # the per-image count, or a count the processor wraps in a few more image tokens
    counts = {k: v for k, v in vars(processor).items() if isinstance(v, int) and not isinstance(v, bool)}
    keys = [k for k, v in counts.items() if 0 <= tokens - v <= 8 and v > 8]
    for key in keys:
        setattr(processor, key, counts[key] - (tokens - features))
    return bool(keys) and all(getattr(processor, k) > 0 for k in keys)


def forward_check(model, processor) -> None:
    from fedvlm.train.collate import GenerativeTask, to_device

    task = GenerativeTask(processor, nest_images=None)
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    batch = task.training_batch({"image": images, "question": ["what color?", "which shape?"], "answer": ["red", "circle"]})
    out = model(**to_device(batch, "cpu", model.dtype))  # as fedvlm's training loop hands it over
    if not torch.isfinite(out.loss):
        raise RuntimeError("loss is not finite")
