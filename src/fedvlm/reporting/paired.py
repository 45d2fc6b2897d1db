"""Paired comparisons of two algorithms over the same seeds (same split, same LoRA init,
same batches): what a bench table needs before a difference is called a difference.

Two tests, both two-sided, from scipy (``scipy.stats``):

- the paired t-test (``ttest_rel``): the mean of the per-seed differences against its
  standard error, Student's t with n - 1 degrees of freedom; assumes the differences are
  roughly normal;
- the Wilcoxon signed-rank test (``wilcoxon``, exact distribution): only the signs and
  ranks of the differences; with 5 seeds its smallest possible p is 2 / 2^5 = 0.0625, so
  5 seeds can never make it significant at 0.05.

No correction for testing many algorithms against one reference: with 13 comparisons at
0.05, about one "significant" row is expected by chance alone.
"""

from __future__ import annotations

import numpy as np


def paired_test(reference: list[float], other: list[float]) -> dict:
    """``other`` against ``reference``, seed by seed (the lists are aligned by seed).

    Returns ``n``, ``mean_diff`` (other - reference), ``wins`` / ``losses`` (seeds where
    ``other`` is above / below), ``t_p`` and ``wilcoxon_p`` (two-sided; None when undefined:
    fewer than 2 pairs, or every difference equal, or, for Wilcoxon, all zero).
    """
    from scipy import stats

    if len(reference) != len(other):
        raise ValueError(f"paired_test: {len(reference)} reference values against {len(other)}")
    diffs = np.asarray(other, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    n = len(diffs)
    out = {"n": n, "mean_diff": float(diffs.mean()) if n else None,
           "wins": int((diffs > 0).sum()), "losses": int((diffs < 0).sum()), "t_p": None, "wilcoxon_p": None}
    if n < 2:
        return out
    if np.ptp(diffs) > 0:
        p = float(stats.ttest_rel(other, reference).pvalue)
        out["t_p"] = None if np.isnan(p) else p
    if np.any(diffs != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(diffs, zero_method="wilcox", method="exact").pvalue)
    return out
