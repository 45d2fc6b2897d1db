"""Scores for generated free text against a reference: exact match, ROUGE-L and BLEU.

ROUGE-L is Google's ``rouge-score`` (Lin 2004, https://aclanthology.org/W04-1013/: the F1
of the longest common subsequence of tokens, Porter-stemmed, as the package's scorer
reports it); BLEU is ``sacrebleu``'s corpus BLEU (Papineni et al. 2002,
https://aclanthology.org/P02-1040/, with sacrebleu's defaults: 13a tokenization and the
exponential smoothing of n-gram orders with no match, https://aclanthology.org/W18-6319/),
on a 0-100 scale as sacrebleu reports it.
Exact match compares whitespace-normalized, case-folded strings.
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
