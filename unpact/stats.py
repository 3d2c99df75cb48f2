"""Small statistics, one place for every module (analyses, tracking, emphasis, attacks): numbers in, numbers out.

Example:
    >>> mean([1.0, None, float("nan"), 3.0]), spearman([1, 2], [2, 1]), round(spearman([1, 2], [2, 1], min_pairs=2), 6)
    (2.0, None, -1.0)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean(xs: Sequence[float | None]) -> float | None:
    """Mean of the finite values of ``xs`` (None, NaN and infinities skipped); None when none is left."""
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(np.mean(xs)) if xs else None


def gini(values: Sequence[float]) -> float | None:
    """Gini coefficient of non-negative values: 0 = spread evenly, 1 = all in one."""
    v = np.sort(np.asarray([x for x in values if x is not None], dtype=float))
    if v.size == 0 or v.sum() <= 0:
        return None
    n = v.size
    idx = np.arange(1, n + 1)
    return float((2 * (idx * v).sum()) / (n * v.sum()) - (n + 1) / n)


def spearman(a: Sequence[float], b: Sequence[float], min_pairs: int = 3) -> float | None:
    """Spearman rank correlation of the pairs without None (None with fewer than ``min_pairs``
    pairs or a constant side)."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < min_pairs:
        return None
    x, y = zip(*pairs)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    r = spearmanr(x, y).statistic
    return None if r is None or not math.isfinite(r) else float(r)


def spearman_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of the Spearman correlation (None where :func:`spearman` is None)."""
    from scipy.stats import spearmanr

    if spearman(a, b) is None:
        return None
    x, y = zip(*[(u, v) for u, v in zip(a, b) if u is not None and v is not None])
    p = spearmanr(x, y).pvalue
    return None if p is None or not math.isfinite(p) else float(p)


def sign_test_p(diffs: Sequence[float]) -> float | None:
    """Two-sided sign-test p-value that the median of ``diffs`` is 0 (scipy binomtest)."""
    from scipy.stats import binomtest

    d = [x for x in diffs if x is not None and x != 0]
    if not d:
        return None
    k = sum(1 for x in d if x > 0)
    return float(binomtest(k, len(d), 0.5).pvalue)


def fmt(x: float | None, digits: int = 3) -> str:
    """``digits`` decimals; two significant figures for a non-zero number that would print as 0.000."""
    if x is None:
        return "n/a"
    if x != 0 and abs(x) < 0.5 * 10 ** -digits:
        return f"{x:.2g}"
    return f"{x:.{digits}f}"
