"""Tiny random-weight VLMs of four more real transformers families, saved with a working processor.

Each ``build_*(out_dir)`` writes config + float32 weights + processor (tokenizer, image processor,
chat template) into ``out_dir`` and returns it, so the directory loads offline by path with the
Auto classes.  Deterministic (fixed seed, byte-identical files), < 400k parameters each, 64x64
images -> 16 image tokens (Fuyu: one token per 16x16 patch of the image as given, never upscaled,
so 32x32 -> 4; plus one |NEWLINE| per patch row).  Without torchvision, call ``patch_fuyu_pil()``
before using the Fuyu processor on images (transformers 5.23 bug, see there).

* ``build_phi3_llava`` -- LlavaForConditionalGeneration: CLIP ViT + Phi-3 LM (fused ``qkv_proj`` /
  ``gate_up_proj``), LlavaProcessor.  AutoModelForImageTextToText.
* ``build_janus``      -- JanusForConditionalGeneration (SigLIP-like ViT + aligner + Llama LM; the
  image-generation VQ-VAE branch is there but tiny), JanusProcessor.  AutoModelForImageTextToText.
* ``build_fuyu``       -- FuyuForCausalLM (no vision encoder: 16x16 patches -> ``vision_embed_tokens``
  -> Persimmon LM), FuyuProcessor.  AutoModelForImageTextToText or AutoModelForCausalLM.
* ``build_blip_vqa``   -- BlipForQuestionAnswering (ViT + BERT question encoder + BERT answer decoder),
  BlipProcessor with a small local WordPiece vocabulary.  AutoModelForVisualQuestionAnswering.

The three causal families reuse the byte-level BPE of the embedded tiny-llava model
(``src/fedvlm/assets/tiny-llava/tokenizer.json``) plus family-specific special tokens.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessorPil,
    BlipProcessor,
    BlipTextConfig,
    BlipVisionConfig,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    FuyuConfig,
    FuyuForCausalLM,
    FuyuImageProcessorPil,
    FuyuProcessor,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessorPil,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PersimmonConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
)

SEED = 0
IMAGE_SIZE = 64
PATCH = 16
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # 16
SQUARE = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
BASE_TOKENIZER = files("fedvlm") / "assets" / "tiny-llava" / "tokenizer.json"
# ids 0..2 of the base tokenizer: <|pad|>, <|bos|>, <|eos|>
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
QA_WORDS = (  # whole words of the BLIP WordPiece vocab (anything else falls back to characters)
    "what which how many is are does do the a an of in on there this image picture shape color colour red green "
    "blue yellow black white gray grey teal brown orange purple pink circle square rectangle triangle ellipse star "
    "one two three four five yes no left right top bottom"
)


def _chat_template(user: str, assistant: str, end: str, image: str, sep: str = "\n") -> str:
    """Jinja template: ``{user}{sep}[{image}\\n]text{end}\\n`` per user turn, then ``{assistant}{sep}``.

    Content may be a string or a list of ``{"type": "image"|"text"}`` parts; assistant turns are
    wrapped in ``{% generation %}`` so ``return_assistant_tokens_mask`` works.
    """
    return (
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        f"{{%- if message['role'] == 'assistant' -%}}{{{{- '{assistant}{sep}' -}}}}{{%- generation -%}}"
        "{%- for part in parts -%}{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}"
        f"{{{{- '{end}' -}}}}{{%- endgeneration -%}}"
        f"{{%- else -%}}{{{{- '{user}{sep}' -}}}}"
        "{%- for part in parts -%}"
        f"{{%- if part['type'] == 'image' -%}}{{{{- '{image}\\n' -}}}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}"
        f"{{{{- '{end}' -}}}}{{%- endif -%}}{{{{- '\\n' -}}}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- '{assistant}{sep}' -}}}}{{%- endif -%}}"
    )


def bpe_tokenizer(special_tokens: list[str], *, word_tokens: tuple[str, ...] = (), **kwargs) -> PreTrainedTokenizerFast:
    """The embedded byte-level BPE + ``special_tokens`` (added, special); pad id 0, left padding.

    ``word_tokens`` (Fuyu's ``|SPEAKER|``/``|NEWLINE|``) become *ordinary* vocab tokens formed by
    top-priority merges, with a SentencePiece-like leading space (``Prepend`` normalizer, no regex
    pre-split): FuyuProcessor tokenizes the image placeholder string and drops its first token,
    expecting that space.  ``kwargs`` go to the tokenizer (bos/eos, named tokens, chat_template).
    """
    spec = json.loads(BASE_TOKENIZER.read_text())
    vocab, chains = spec["model"]["vocab"], []
    for word in word_tokens:
        for i in range(2, len(word) + 1):
            vocab.setdefault(word[:i], len(vocab))
            chains.append([word[: i - 1], word[i - 1]])
    if word_tokens:
        spec["model"]["merges"] = chains + spec["model"]["merges"]
        spec["normalizer"] = {"type": "Prepend", "prepend": " "}
        spec["pre_tokenizer"]["use_regex"] = False
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    kwargs = {"bos_token": BOS, "eos_token": EOS, "padding_side": "left", "model_max_length": 512, **kwargs}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, **kwargs)


def wordpiece_tokenizer():
    """BertTokenizer with a small local lowercase WordPiece vocab (+ ``[DEC]`` bos and ``[ENC]``)."""
    words = QA_WORDS.split()
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,?!'\"-:;()/")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words + chars), *(f"##{c}" for c in chars)]
    return BertTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        bos_token="[DEC]",
        extra_special_tokens=["[ENC]"],
        model_max_length=512,
    )


def _text_ids(tok) -> dict:
    ids = ("pad_token_id", "bos_token_id", "eos_token_id")
    return {"vocab_size": len(tok), **{k: getattr(tok, k) for k in ids}}


def _build(model_cls, config, tok, processor, out_dir, eos_token_id=None) -> Path:
    """Seeded random init, greedy generation defaults, model + processor saved into ``out_dir``."""
    torch.manual_seed(SEED)
    model = model_cls(config).float()
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id = tok.pad_token_id, tok.bos_token_id
    gc.eos_token_id = tok.eos_token_id if eos_token_id is None else eos_token_id
    gc.do_sample, gc.max_new_tokens = False, 16
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------- families


def build_phi3_llava(out_dir) -> Path:
    """LLaVA (CLIP ViT 64/16 + 2-layer MLP projector) over a 2-layer Phi-3 LM; Phi-3 chat format."""
    template = _chat_template("<|user|>", "<|assistant|>", "<|end|>", "<image>")
    tok = bpe_tokenizer(["<|end|>"], eos_token="<|end|>", chat_template=template)  # <image> is in the base
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
    text = Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, original_max_position_embeddings=512,
                      **_text_ids(tok))
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=N_IMAGE_TOKENS, vision_feature_select_strategy="default",
                         vision_feature_layer=-1, projector_hidden_act="gelu")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=SQUARE,
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=template)
    return _build(LlavaForConditionalGeneration, config, tok, processor, out_dir)


def build_janus(out_dir) -> Path:
    """Janus: ViT 64/16 -> aligner MLP -> 2-layer Llama; one <image_placeholder> -> boi + 16 tokens + eoi."""
    image, boi, eoi = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
    template = _chat_template("<|User|>", "<|Assistant|>", EOS, image)
    tok = bpe_tokenizer([image, boi, eoi, "<|User|>", "<|Assistant|>"], image_token=image, boi_token=boi,
                        eoi_token=eoi, chat_template=template)
    hidden = 64
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE_SIZE,
                               patch_size=PATCH, mlp_ratio=2.0, projection_dim=hidden, depth=2,
                               num_image_tokens=N_IMAGE_TOKENS)
    # the image-generation branch (VQ-VAE, generation_* heads): as small as its GroupNorm(32) allows
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                          channel_multiplier=[1], num_res_blocks=1, projection_dim=hidden,
                          image_token_embed_dim=hidden, num_hidden_layers=1)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=512, **_text_ids(tok))
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                         image_token_id=tok.convert_tokens_to_ids(image))
    processor = JanusProcessor(image_processor=JanusImageProcessorPil(size=SQUARE), tokenizer=tok,
                               chat_template=template, num_image_tokens=N_IMAGE_TOKENS)
    return _build(JanusForConditionalGeneration, config, tok, processor, out_dir)


def build_fuyu(out_dir) -> Path:
    """Fuyu: 16x16x3 patches -> Linear -> 2-layer Persimmon LM (no vision encoder); no chat template."""
    boxes = ["<0x00>", "<0x01>", "<0x02>", "<0x03>", "<0x04>"]  # bbox/point open/close, <0x04> = begin-of-answer
    tok = bpe_tokenizer(["<s>", "|ENDOFTEXT|", *boxes], word_tokens=("|SPEAKER|", "|NEWLINE|"),
                        bos_token="<s>", eos_token="|ENDOFTEXT|")
    text = PersimmonConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=512, **_text_ids(tok))
    config = FuyuConfig(text_config=text, image_size=IMAGE_SIZE, patch_size=PATCH,
                        image_token_id=tok.convert_tokens_to_ids("|SPEAKER|"))
    image_processor = FuyuImageProcessorPil(size=SQUARE, patch_size={"height": PATCH, "width": PATCH})
    processor = FuyuProcessor(image_processor=image_processor, tokenizer=tok)
    return _build(FuyuForCausalLM, config, tok, processor, out_dir)


def build_blip_vqa(out_dir) -> Path:
    """BLIP VQA: ViT 64/16 -> BERT question encoder (cross-attends image) -> BERT answer decoder."""
    tok = wordpiece_tokenizer()
    # vision initializer_range: the default 1e-10 makes the image features ~constant
    vision = BlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32, initializer_range=0.02)
    # answer decoding starts at bos [DEC] and stops at [SEP] (BlipForQuestionAnswering.generate)
    text = BlipTextConfig(vocab_size=len(tok), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64, projection_dim=32,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    config = BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32,
                        image_text_hidden_size=32)
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size=SQUARE), tokenizer=tok)
    return _build(BlipForQuestionAnswering, config, tok, processor, out_dir, eos_token_id=tok.sep_token_id)


def patch_fuyu_pil() -> None:
    """Work around a transformers 5.23 bug hit when torchvision is absent (PIL image-processor backend).

    ``FuyuProcessor`` hands torch tensors to ``FuyuImageProcessorPil.patchify_image``, which only
    handles numpy (``TypeError: transpose() takes 2 positional arguments``).  Idempotent runtime patch.
    """
    from transformers import FuyuImageProcessorPil

    original = FuyuImageProcessorPil.patchify_image
    if getattr(original, "_torch_ok", False):
        return

    def patchify_image(self, image, patch_size=None):
        if isinstance(image, torch.Tensor):
            return torch.from_numpy(original(self, image.numpy(), patch_size))
        return original(self, image, patch_size)

    patchify_image._torch_ok = True
    FuyuImageProcessorPil.patchify_image = patchify_image


BUILDERS = {"phi3_llava": build_phi3_llava, "janus": build_janus, "fuyu": build_fuyu, "blip_vqa": build_blip_vqa}
