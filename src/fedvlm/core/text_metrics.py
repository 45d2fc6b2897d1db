"""Scores for generated free text against a reference (exact match, ROUGE-L, BLEU), and
for captions as the COCO caption evaluation computes them.

Free text (instruction tuning; these are not the COCO caption evaluation's scorers):
ROUGE-L is Google's ``rouge-score`` (Lin 2004, https://aclanthology.org/W04-1013/: the F1 of
the longest common subsequence of tokens, Porter-stemmed, as the package's scorer reports it); BLEU is ``sacrebleu``'s corpus BLEU (Papineni et al. 2002,
https://aclanthology.org/P02-1040/, with sacrebleu's defaults: 13a tokenization and the
exponential smoothing of n-gram orders with no match, https://aclanthology.org/W18-6319/),
on a 0-100 scale as sacrebleu reports it.
Exact match compares whitespace-normalized, case-folded strings.

Captions are scored as the COCO caption evaluation does (https://github.com/tylin/coco-caption,
as ``pycocoevalcap``): PTB tokenization (`ptb_tokenize`), then pycocoevalcap's CIDEr-D
(Vedantam et al. 2015, https://arxiv.org/abs/1411.5726), BLEU-4 and ROUGE-L scorers against
every reference a row has (`caption_scores`).
"""

from __future__ import annotations

import shutil
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


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Each text as the COCO caption evaluation tokenizes it (pycocoevalcap's
    ``PTBTokenizer``): newlines to spaces, Stanford's PTBTokenizer (``-preserveLines
    -lowerCase``, the jar pycocoevalcap ships) where Java is installed, then the tokens in
    pycocoevalcap's ``PUNCTUATIONS`` dropped. The jar runs on a temporary file of ours
    (pycocoevalcap writes one into its own package directory, which an installed package
    may not allow), read as UTF-8.

    Without Java, NLTK's Treebank tokenizer stands in (lower-cased brackets as
    ``-lrb-``..., quotes as `` and '', an opening single quote split off), which gives the same
    tokens on captions' usual punctuation (tests/core/test_text_metrics.py checks a corpus
    against the jar). Known differences: the jar keeps e-mail addresses, ``<tags>`` and
    runs such as ``!!!`` as single tokens, which Treebank splits.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    lines = [" ".join(t.replace("\n", " ").split()) for t in texts]
    tokenized = _java_ptb(lines) if shutil.which("java") else None
    if tokenized is None:
        tokenized = [_treebank(line) for line in lines]
    drop = set(PUNCTUATIONS)
    return [" ".join(w for w in line.split(" ") if w and w not in drop) for line in tokenized]


def _java_ptb(lines: list[str]) -> list[str] | None:
    """The jar's tokens for each non-empty line (empty lines stay empty); None if Java fails."""
    import os
    import subprocess
    import tempfile

    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    jar = os.path.join(os.path.dirname(ptb.__file__), ptb.STANFORD_CORENLP_3_4_1_JAR)
    filled = [i for i, line in enumerate(lines) if line]
    out = [""] * len(lines)
    if not filled:
        return out
    with tempfile.TemporaryDirectory(prefix="fedvlm-ptb-") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines[i] for i in filled))
        try:
            done = subprocess.run(["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                                   "-lowerCase", "-encoding", "UTF-8", path], capture_output=True, check=True, timeout=600)
        except (OSError, subprocess.SubprocessError):
            return None
    tokens = done.stdout.decode("utf-8").split("\n")
    if len(tokens) < len(filled):
        return None
    for i, line in zip(filled, tokens):
        out[i] = line.rstrip()
    return out


_BRACKETS = {"-LRB-": "-lrb-", "-RRB-": "-rrb-", "-LSB-": "-lsb-", "-RSB-": "-rsb-", "-LCB-": "-lcb-", "-RCB-": "-rcb-"}


def _treebank(line: str) -> str:
    """NLTK's Treebank tokens of ``line``, lower-cased as the jar's ``-lowerCase`` does."""
    import re

    from nltk.tokenize import TreebankWordTokenizer

    line = re.sub(r"(^|\s)([`'])(?=\w)", r"\1\2 ", line)  # the jar splits an opening quote off
    words = TreebankWordTokenizer().tokenize(line, convert_parentheses=True)
    return " ".join(_BRACKETS.get(w, w.lower()) for w in words)


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D of the predictions, each against its references (`caption_scores`)."""
    return caption_scores(predictions, references)["cider"]


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """CIDEr-D, BLEU-4 and ROUGE-L of captions, each against all its references, as the
    COCO caption evaluation computes them: every text tokenized by `ptb_tokenize`, then
    pycocoevalcap's own ``Cider``, ``Bleu(4)`` (its fourth score; 0-1, closest reference
    length) and ``Rouge`` (LCS F-measure with beta 1.2, best reference; 0-1)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not predictions:
        return {"cider": 0.0, "bleu4": 0.0, "rouge_l": 0.0}
    if len(predictions) != len(references) or not all(references):
        raise ValueError("caption_scores: one prediction and at least one reference per row")
    flat = ptb_tokenize([*predictions, *(r for refs in references for r in refs)])
    res = {i: [flat[i]] for i in range(len(predictions))}
    gts, at = {}, len(predictions)
    for i, refs in enumerate(references):
        gts[i], at = flat[at:at + len(refs)], at + len(refs)
    bleu4 = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    return {"cider": float(Cider().compute_score(gts, res)[0]), "bleu4": float(bleu4),
            "rouge_l": float(Rouge().compute_score(gts, res)[0])}
