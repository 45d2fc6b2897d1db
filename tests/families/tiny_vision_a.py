"""Tiny random-weight checkpoints of real vision-language classes (Qwen2-VL, Qwen2.5-VL,
Idefics3, SmolVLM, PaliGemma), each saved with its processor into one directory, so that
``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained(dir)``
work offline. Weights are random (``torch.manual_seed(0)``), float32, about 0.3M params.
A 32x32 or 64x64 RGB image becomes at most 16 image tokens (no image splitting).

Every tokenizer is the embedded tiny-llava byte-level BPE plus the family's special tokens.

Qwen2-VL, Qwen2.5-VL and SmolVLM processors hold a video processor, and in transformers 5.x
video processors need torchvision: without it the processor class can be neither built nor
loaded by ``AutoProcessor``. Their builders therefore write the processor files directly
(what ``save_pretrained`` writes, video processor config included), which AutoProcessor
loads where torchvision is installed (``HAS_TORCHVISION``); ``image_only_processor`` loads
them here, for image inputs only. SmolVLM's processor also needs the ``num2words`` package.
"""

import importlib.util
import json
from importlib.resources import files
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessorPil,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
)

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

_MEAN = _STD = [0.5, 0.5, 0.5]


def _tokenizer(specials, *, bos, eos, pad) -> PreTrainedTokenizerFast:
    """The embedded tiny-llava BPE (adds no bos/eos when encoding) plus ``specials``."""
    tok = Tokenizer.from_str((files("fedvlm") / "assets" / "tiny-llava" / "tokenizer.json").read_text())
    new = dict.fromkeys([bos, eos, pad, *specials])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=512
    )


def _text_config(tok, **extra) -> dict:
    """A small Llama-like language model (every builder's) with ``tok``'s vocab and ids."""
    return {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        **extra,
    }


def _save(model_cls, config, processor, out_dir: Path) -> Path:
    """Save a seeded random ``model_cls(config)`` and ``processor`` (or, as a dict, the
    arguments of ``_write_processor``) into ``out_dir``."""
    out_dir = Path(out_dir)
    torch.manual_seed(0)
    model = model_cls(config).float().eval()
    tok = processor["tokenizer"] if isinstance(processor, dict) else processor.tokenizer
    model.generation_config.update(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out_dir)
    if isinstance(processor, dict):
        _write_processor(out_dir, **processor)
    else:
        processor.save_pretrained(out_dir)
    return out_dir


def _write_processor(out_dir: Path, *, tokenizer, processor_class, chat_template, **config) -> None:
    """The files ``processor.save_pretrained`` writes, for processors that cannot be built
    without torchvision; ``config`` holds the sub-processor dicts and processor kwargs."""
    tokenizer.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(chat_template)
    config = {**config, "processor_class": processor_class}
    (out_dir / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def image_only_processor(path):
    """The Qwen2-VL / Qwen2.5-VL / SmolVLM processor saved at ``path``, built without
    torchvision and usable for images only (its video processor is an empty stand-in).

    transformers checks each sub-processor against ``transformers.VideoProcessorMixin``,
    which it does not export without torchvision; the name is set only while constructing."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer, processing_utils
    from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

    path = Path(path)
    config = json.loads((path / "processor_config.json").read_text())
    cls = getattr(transformers, config.pop("processor_class"))
    kwargs = {k: v for k, v in config.items() if k not in ("image_processor", "video_processor")}
    modules = {id(m): m for m in (transformers, processing_utils.transformers_module)}
    modules = [m for m in modules.values() if "VideoProcessorMixin" not in vars(m)]
    for module in modules:
        module.VideoProcessorMixin = VideoProcessorMixin
    try:
        return cls(
            AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path), BaseVideoProcessor(),
            chat_template=(path / "chat_template.jinja").read_text(), **kwargs,
        )
    finally:
        for module in modules:
            del module.VideoProcessorMixin


# --- Qwen2-VL / Qwen2.5-VL -----------------------------------------------------------

# Qwen2-VL's template, without the default system message.
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Patch 8, merge 2: a 32x32 image is 4x4 patches = 4 tokens, 64x64 is 8x8 = 16 tokens.
_QWEN_PIXELS = {
    "patch_size": 8, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 32 * 32, "max_pixels": 64 * 64,
    "image_mean": _MEAN, "image_std": _STD,
}


def _qwen(out_dir: Path, config_cls, model_cls, processor_class: str, vision: dict) -> Path:
    tok = _tokenizer(
        ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
        bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>",
    )
    config = config_cls(
        text_config=_text_config(tok, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        vision_config={**vision, "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    image_processor = Qwen2VLImageProcessorPil(**_QWEN_PIXELS).to_dict()
    processor = {
        "tokenizer": tok, "processor_class": processor_class, "chat_template": _QWEN_TEMPLATE,
        "image_processor": {**image_processor, "image_processor_type": "Qwen2VLImageProcessor"},
        "video_processor": {**_QWEN_PIXELS, "video_processor_type": "Qwen2VLVideoProcessor"},
    }
    return _save(model_cls, config, processor, out_dir)


def build_qwen2_vl(out_dir: Path) -> Path:
    """Qwen2VLForConditionalGeneration; model_type ``qwen2_vl``."""
    vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": 64}
    return _qwen(out_dir, Qwen2VLConfig, Qwen2VLForConditionalGeneration, "Qwen2VLProcessor", vision)


def build_qwen2_5_vl(out_dir: Path) -> Path:
    """Qwen2_5_VLForConditionalGeneration; model_type ``qwen2_5_vl``. Its vision blocks have
    gate/up/down_proj too: anchor LoRA targets on ``language_model``."""
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
        "window_size": 32, "fullatt_block_indexes": [1],
    }
    return _qwen(out_dir, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, "Qwen2_5_VLProcessor", vision)


# --- Idefics3 / SmolVLM --------------------------------------------------------------


def _idefics3_template(start: str) -> str:
    return (
        start + "{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'] is string %}: {{ message['content'] }}{% else %}"
        "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
        "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )


_IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
# 32x32 images, patch 8, pixel shuffle 2: (32 / 8) ** 2 / 2 ** 2 = 4 image tokens.
_IDEFICS3_IMAGES = {
    "size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 32}, "image_mean": _MEAN, "image_std": _STD,
}


def _idefics3(config_cls, start: str):
    """The tokenizer and config of Idefics3 / SmolVLM (``start``: the template's first token)."""
    tok = _tokenizer(_IDEFICS3_TOKENS, bos=start, eos="<end_of_utterance>", pad="<|pad|>")
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8,
    }
    config = config_cls(
        text_config=_text_config(tok), vision_config=vision, scale_factor=2, pad_token_id=tok.pad_token_id,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    return tok, config


def build_idefics3(out_dir: Path) -> Path:
    """Idefics3ForConditionalGeneration; model_type ``idefics3``."""
    tok, config = _idefics3(Idefics3Config, "<|begin_of_text|>")
    image_processor = Idefics3ImageProcessorPil(**_IDEFICS3_IMAGES, do_image_splitting=False)
    template = _idefics3_template("<|begin_of_text|>")
    processor = Idefics3Processor(image_processor, tok, image_seq_len=4, chat_template=template)
    return _save(Idefics3ForConditionalGeneration, config, processor, out_dir)


def build_smolvlm(out_dir: Path) -> Path:
    """SmolVLMForConditionalGeneration; model_type ``smolvlm``. Its processor takes images
    nested per prompt (``[[im] for im in images]``) and needs the ``num2words`` package."""
    tok, config = _idefics3(SmolVLMConfig, "<|im_start|>")
    image_processor = SmolVLMImageProcessorPil(**_IDEFICS3_IMAGES, do_image_splitting=False).to_dict()
    processor = {
        "tokenizer": tok, "processor_class": "SmolVLMProcessor", "chat_template": _idefics3_template("<|im_start|>"),
        "image_seq_len": 4,
        "image_processor": {**image_processor, "image_processor_type": "SmolVLMImageProcessor"},
        "video_processor": {**_IDEFICS3_IMAGES, "video_processor_type": "SmolVLMVideoProcessor"},
    }
    return _save(SmolVLMForConditionalGeneration, config, processor, out_dir)


# --- PaliGemma -----------------------------------------------------------------------


def build_paligemma(out_dir: Path) -> Path:
    """PaliGemmaForConditionalGeneration; model_type ``paligemma``. No chat template: the
    prompt is ``"answer en {question}"``; the processor prepends the image tokens and bos and
    appends ``\\n``. 32x32 images, patch 8: 16 image tokens."""
    tok = _tokenizer(["<image>"], bos="<bos>", eos="<eos>", pad="<pad>")
    image_processor = SiglipImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=_MEAN, image_std=_STD, image_seq_length=16
    )
    processor = PaliGemmaProcessor(image_processor, tok)  # adds the <locNNNN>/<segNNN> tokens
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "vision_use_head": False,
    }
    config = PaliGemmaConfig(
        text_config={"model_type": "gemma", **_text_config(tok, head_dim=16)}, vision_config=vision,
        projection_dim=64, hidden_size=64, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _save(PaliGemmaForConditionalGeneration, config, processor, out_dir)
