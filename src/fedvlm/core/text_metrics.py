"""Scores for generated free text against a reference: exact match, ROUGE-L and BLEU.

ROUGE-L is Google's ``rouge-score`` (Lin 2004, https://aclanthology.org/W04-1013/: the F1
of the longest common subsequence of tokens, Porter-stemmed, as the package's scorer
reports it); BLEU is ``sacrebleu``'s corpus BLEU (Papineni et al. 2002,
https://aclanthology.org/P02-1040/, with sacrebleu's defaults: 13a tokenization and the
exponential smoothing of n-gram orders with no match, https://aclanthology.org/W18-6319/),
on a 0-100 scale as sacrebleu reports it.
Exact match compares whitespace-normalized, case-folded strings.

Captions are scored as the COCO caption evaluation does (https://github.com/tylin/coco-caption):
CIDEr-D through ``pycocoevalcap`` (Vedantam et al. 2015, https://arxiv.org/abs/1411.5726:
tf-idf n-gram similarity, n = 1..4, the document frequencies taken over the evaluated
references, a Gaussian length penalty, x10), BLEU-4 as above and ROUGE-L. COCO tokenizes
with Stanford's Java PTB tokenizer; `caption_tokens` stands in for it without Java
(lower case, the punctuation that tokenizer drops removed, whitespace split), which can
move scores slightly from the Java pipeline's on text with unusual punctuation.
"""

from __future__ import annotations

from collections.abc import Sequence

TEXT_METRICS = ("exact_match", "rouge_l", "bleu")


def normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    pairs = list(zip(predictions, references, strict=True))
    return sum(normalize(p) == normalize(r) for p, r in pairs) / max(1, len(pairs))


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over the pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = list(zip(predictions, references, strict=True))
    return sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in pairs) / max(1, len(pairs))


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of the predictions against one reference each."""
    import sacrebleu

    if not predictions:
        return 0.0
    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {
        "exact_match": exact_match(predictions, references),
        "rouge_l": rouge_l(predictions, references),
        "bleu": bleu(predictions, references),
    }


CAPTION_METRICS = ("cider", "bleu4", "rouge_l")
# punctuation the COCO evaluation's PTB tokenization step removes
_PUNCTUATION = set("''\"`!?.,:;-_()[]{}")


def caption_tokens(text: str) -> str:
    """``text`` lower-cased, with the punctuation COCO drops removed, tokens space-joined."""
    cleaned = "".join(" " if c in _PUNCTUATION else c for c in text.lower())
    return " ".join(cleaned.split())


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D of the predictions, each against its references."""
    from pycocoevalcap.cider.cider import Cider

    if not predictions:
        return 0.0
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def caption_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CIDEr-D, BLEU-4 (sacrebleu's corpus BLEU, n-grams up to 4) and ROUGE-L of captions
    against one reference each."""
    return {
        "cider": cider(predictions, [[r] for r in references]),
        "bleu4": bleu(predictions, references),
        "rouge_l": rouge_l(predictions, references),
    }
