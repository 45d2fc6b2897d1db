"""The model families fedvlm fine-tunes, and how to tell them apart from a model's config.

A family says how a model is loaded, what its inputs and labels look like (``task``),
which linear layers LoRA adapts by default, which module is the vision-language connector
(for the connector tuning strategies), and which head is trained and aggregated with the
adapter (sequence classifiers). Everything else (strategies, simulator, outputs) is the
same for every family.

Most architectures need no family of their own: ``image-text`` serves any model of
transformers' image-text-to-text mapping (LLaVA, Qwen-VL, Idefics, Gemma3, Mllama...),
``causal-lm`` and ``sequence-classifier`` any text model, each with LoRA on every linear
layer of the language model (the published systems' choice for generative VLMs:
FedVLMBench, FedALT-VLM's fused Phi-3 projections). A family of its own remains where a
model needs special handling, each saying why; the text families keep the published
defaults: query/value plus the head for RoBERTa/BERT (DFL_SLM), ``query_key_value`` for
BLOOM and q/v for LLaMA (federated-lora).
"""

from dataclasses import dataclass

from fedvlm.errors import ModelError

# model.attn_implementation: the attention kernels transformers offers by these names
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")

# Targets found from the model's structure (`fedvlm.models.load.all_linear_lm`); AUTO:
# modules found from it (`fedvlm.models.structure`: a classifier's head, the connector and
# the towers of an image-text model).
ALL_LINEAR_LM = "all-linear-lm"
AUTO = ("<auto>",)

_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
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
    # the processor wants one list of images per prompt; None: whichever it accepts
    nest_images: bool | None = False


FAMILIES = {
    f.name: f
    for f in (
        # Any image-text-to-text architecture of transformers' mapping: the model's own chat
        # template with an image part, LoRA on every linear layer of its language model, the
        # towers and connector found from its structure (`fedvlm.models.structure`).
        Family(
            "image-text", "image_text", "generate", ALL_LINEAR_LM,
            connector=AUTO, keep_full_precision=AUTO, nest_images=None,
        ),
        # PaliGemma: a prefix-LM; its answer tokens are the suffix (token_type_ids 1, causal
        # attention) after a prefix that attends both ways, and its checkpoints have no chat
        # template but a fixed task prompt.
        Family(
            "paligemma", "image_text", "generate", _under("language_model", _LLAMA_LINEARS),
            connector=("multi_modal_projector",),
            prompt="<image>answer en {question}",
            token_fill=(("token_type_ids", 1),),
            keep_full_precision=("vision_tower",),
        ),
        # Janus: an image-generation path (VQ model, generation aligner and head) sits beside
        # the understanding path; structurally it looks like more connector, but it never
        # runs on an image question, so the connector is named and LoRA stays on q/k/v.
        Family(
            "janus", "image_text", "generate", _under("language_model", ("q_proj", "k_proj", "v_proj")),
            connector=("model.aligner",),
            keep_full_precision=("vision_model", "gen_.*", "generation_.*", "vqmodel"),
        ),
        # Fuyu: no vision tower (patches go through one linear layer), no chat template; its
        # processor adds bos and the begin-of-answer token and pads on the left.
        Family(
            "fuyu", "image_text", "generate", _under("language_model", _PERSIMMON_LINEARS),
            connector=("vision_embed_tokens",),
            prompt="{question}",
        ),
        # BLIP VQA: an encoder-decoder whose answer comes from a separate answer decoder.
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
        Family("sequence-classifier", "seq_cls", "classify", ALL_LINEAR_LM, head=AUTO, images=False),
    )
}

# Names of families the generic image-text path replaced, still accepted in model.family.
FAMILY_ALIASES = {name: "image-text" for name in ("llava", "phi3-llava", "qwen2-vl", "idefics3", "smolvlm")}

# config.model_type -> family, where the type alone decides it.
_BY_MODEL_TYPE = {
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
        name = FAMILY_ALIASES.get(name, name)
        if name not in FAMILIES:
            raise ModelError(f"model.family {name!r}: unknown (known: auto, {', '.join(FAMILIES)})")
        return FAMILIES[name]
    model_type = config.model_type
    if model_type in _BY_MODEL_TYPE:
        return FAMILIES[_BY_MODEL_TYPE[model_type]]
    generic = None if getattr(config, "is_encoder_decoder", False) else _generic_family(model_type)
    if generic is not None:
        return generic
    raise ModelError(
        f"model type {model_type!r} is not a known family (known: {', '.join(FAMILIES)}); "
        "set model.family=<the closest one> and lora.target_modules=[<linear layer names>]"
    )


def _generic_family(model_type: str) -> Family | None:
    """The generic family of an architecture transformers maps: image-text-to-text types
    generate from images; encoders (types with a masked-LM class) and types without a
    causal-LM class become sequence classifiers, other causal LMs generate.
    Encoder-decoder models are not handled here."""
    from transformers.models.auto import modeling_auto as auto

    if model_type in auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return FAMILIES["image-text"]
    causal = model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    classifier = model_type in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if classifier and (model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES or not causal):
        return FAMILIES["sequence-classifier"]
    return FAMILIES["causal-lm"] if causal else None
