"""The model families fedvlm fine-tunes, and how to tell them apart from a model's config.

A family says how a model is loaded, what its inputs and labels look like (``task``),
which linear layers LoRA adapts by default, which module is the vision-language connector
(for the connector tuning strategies), and which head is trained and aggregated with the
adapter (sequence classifiers). Everything else (strategies, simulator, outputs) is the
same for every family.

The defaults follow the published federated systems: LoRA on the language model's
attention and MLP projections for generative VLMs (FedVLMBench, FedALT-VLM's fused Phi-3
projections), text encoder and decoder q/k/v for BLIP (FedUMM), query/value plus the
classification head for RoBERTa/BERT (DFL_SLM), ``query_key_value`` for BLOOM and q/v for
LLaMA (federated-lora).
"""

from dataclasses import dataclass

from fedvlm.errors import ModelError

# Targets found from the model's structure (`fedvlm.models.load.all_linear_lm`), and a head
# found from it (`fedvlm.models.load.classifier_head`).
ALL_LINEAR_LM = "all-linear-lm"
AUTO_HEAD = ("<auto>",)

_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PHI3_LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_PERSIMMON_LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def _under(anchor: str, names: tuple[str, ...]) -> str:
    """A PEFT target regex: the linears ``names`` anywhere below module ``anchor``."""
    return rf".*{anchor}\..*\.({'|'.join(names)})"


@dataclass(frozen=True)
class Family:
    name: str
    # "image_text" (AutoModelForImageTextToText), "blip_vqa", "seq_cls", "causal_lm"
    loader: str
    # "generate" (prompt -> answer tokens), "blip_vqa" (answer decoder), "classify" (head)
    task: str
    targets: str | tuple[str, ...]  # default LoRA targets: a regex or module names
    connector: tuple[str, ...] = ()  # module names of the vision-language connector
    head: tuple[str, ...] = ()  # trained in full and aggregated with the adapter
    images: bool = True
    # Plain prompt format for families whose checkpoints have no chat template.
    prompt: str | None = None
    # Per-token processor outputs and their value on appended answer tokens and padding.
    token_fill: tuple[tuple[str, int], ...] = ()
    # Kept in full precision when the rest is loaded in 4/8 bit: the vision side (the
    # connector and head too, and lm_head always).
    keep_full_precision: tuple[str, ...] = ()
    nest_images: bool = False  # the processor wants one list of images per prompt
    needs_torchvision: bool = False  # the processor cannot load without torchvision


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "llava", "image_text", "generate", _under("language_model", _LLAMA_LINEARS),
            connector=("multi_modal_projector",),
            keep_full_precision=("vision_tower",),
        ),
        Family(
            "phi3-llava", "image_text", "generate", _under("language_model", _PHI3_LINEARS),
            connector=("multi_modal_projector",),
            keep_full_precision=("vision_tower",),
        ),
        Family(
            "qwen2-vl", "image_text", "generate", _under("language_model", _LLAMA_LINEARS),
            connector=("merger",),
            keep_full_precision=("visual",),
            needs_torchvision=True,
        ),
        Family(
            "idefics3", "image_text", "generate", _under("text_model", _LLAMA_LINEARS),
            connector=("connector",),
            keep_full_precision=("vision_model",),
            nest_images=True,
        ),
        Family(
            "smolvlm", "image_text", "generate", _under("text_model", _LLAMA_LINEARS),
            connector=("connector",),
            keep_full_precision=("vision_model",),
            nest_images=True,
            needs_torchvision=True,  # its processor has a video processor (and needs num2words)
        ),
        Family(
            "paligemma", "image_text", "generate", _under("language_model", _LLAMA_LINEARS),
            connector=("multi_modal_projector",),
            prompt="<image>answer en {question}",
            token_fill=(("token_type_ids", 1),),
            keep_full_precision=("vision_tower",),
        ),
        Family(
            "janus", "image_text", "generate", _under("language_model", ("q_proj", "k_proj", "v_proj")),
            # the full name: peft matches module names by suffix, and "aligner" would also
            # catch the image-generation head's generation_aligner
            connector=("model.aligner",),
            keep_full_precision=("vision_model", "gen_.*", "generation_.*", "vqmodel"),
        ),
        Family(
            "fuyu", "image_text", "generate", _under("language_model", _PERSIMMON_LINEARS),
            connector=("vision_embed_tokens",),
            prompt="{question}",  # the processor adds bos and the begin-of-answer token
        ),
        Family(
            "blip-vqa", "blip_vqa", "blip_vqa", r".*text_(encoder|decoder)\..*\.(query|key|value)",
            keep_full_precision=("vision_model", "text_decoder.cls"),
        ),
        Family(
            "encoder-classifier", "seq_cls", "classify", ("query", "value"),
            head=("classifier",), images=False,
        ),
        Family("bloom", "causal_lm", "generate", ("query_key_value",), images=False),
        Family("llama", "causal_lm", "generate", ("q_proj", "v_proj"), images=False),
        # Any other architecture of transformers' text mappings: LoRA on every linear layer
        # of the language model, the classifier head found from the model's structure.
        Family("causal-lm", "causal_lm", "generate", ALL_LINEAR_LM, images=False),
        Family("sequence-classifier", "seq_cls", "classify", ALL_LINEAR_LM, head=AUTO_HEAD, images=False),
    )
}

# config.model_type -> family, where the type alone decides it.
_BY_MODEL_TYPE = {
    "llava": "llava",
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2-vl",
    "idefics3": "idefics3",
    "smolvlm": "smolvlm",
    "paligemma": "paligemma",
    "janus": "janus",
    "fuyu": "fuyu",
    "blip": "blip-vqa",
    "bert": "encoder-classifier",
    "roberta": "encoder-classifier",
    "xlm-roberta": "encoder-classifier",
    "bloom": "bloom",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
}


def detect_family(config, name: str = "auto") -> Family:
    """The family of a model from its ``config`` (``name="auto"``) or by name."""
    if name != "auto":
        if name not in FAMILIES:
            raise ModelError(f"model.family {name!r}: unknown (known: auto, {', '.join(FAMILIES)})")
        return FAMILIES[name]
    model_type = config.model_type
    if model_type == "llava" and getattr(config.text_config, "model_type", None) == "phi3":
        return FAMILIES["phi3-llava"]
    if model_type in _BY_MODEL_TYPE:
        return FAMILIES[_BY_MODEL_TYPE[model_type]]
    generic = None if getattr(config, "is_encoder_decoder", False) else _generic_text_family(model_type)
    if generic is not None:
        return generic
    raise ModelError(
        f"model type {model_type!r} is not a known family (known: {', '.join(FAMILIES)}); "
        "set model.family=<the closest one> and lora.target_modules=[<linear layer names>]"
    )


def _generic_text_family(model_type: str) -> Family | None:
    """The generic text family of an architecture transformers maps: encoders (types with a
    masked-LM class) and types without a causal-LM class become sequence classifiers,
    other causal LMs generate. Image-text and encoder-decoder models are not handled here."""
    from transformers.models.auto import modeling_auto as auto

    if model_type in auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return None
    causal = model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    classifier = model_type in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if classifier and (model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES or not causal):
        return FAMILIES["sequence-classifier"]
    return FAMILIES["causal-lm"] if causal else None
