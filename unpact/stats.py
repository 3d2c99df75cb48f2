"""Small statistics, one place for every module (analyses, tracking, emphasis, attacks): numbers in, numbers out.

scipy.stats computes everything it has (Spearman's rho and its p-value, the binomial sign
test, the Wilson interval, the percentile bootstrap, ranks); what is written here is what
it lacks: the None-skipping wrappers, the Gini coefficient, and the permutation test whose
pairing is shuffled only *within* strata.

Example:
    >>> mean([1.0, None, float("nan"), 3.0]), spearman([1, 2], [2, 1]), round(spearman([1, 2], [2, 1], min_pairs=2), 6)
    (2.0, None, -1.0)

Intervals and tests of the controlled measurements and their verdicts:
:func:`bootstrap_mean_ci` (percentile bootstrap of a mean over items), :func:`wilson_interval`
(a share k / n), :func:`spearman_rho` (the array form the permutation test calls in its loop;
:func:`spearman` is the general one, skipping None pairs) and :func:`stratified_permutation_test`
(a rank correlation's p-value with the pairing shuffled only within strata).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import numpy as np
from scipy.stats import binomtest, bootstrap, rankdata, spearmanr


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
    if spearman(a, b) is None:
        return None
    x, y = zip(*[(u, v) for u, v in zip(a, b) if u is not None and v is not None])
    p = spearmanr(x, y).pvalue
    return None if p is None or not math.isfinite(p) else float(p)


def sign_test_p(diffs: Sequence[float]) -> float | None:
    """Two-sided sign-test p-value that the median of ``diffs`` is 0 (scipy binomtest)."""
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


def bootstrap_mean_ci(values: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Mean of the finite ``values`` with its percentile bootstrap interval (items resampled with
    replacement, ``n_boot`` times, by ``scipy.stats.bootstrap`` drawing from ``default_rng(seed)``).

    Returns ``{"mean", "interval", "n", "confidence"}``; mean and interval are None for no values.

    Example:
        >>> r = bootstrap_mean_ci([0.0, 1.0] * 20, seed=1)
        >>> r["mean"], r["interval"][0] < 0.5 < r["interval"][1], r["n"]
        (0.5, True, 40)
    """
    v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=float)
    out: dict[str, Any] = {"mean": None, "interval": None, "n": int(v.size), "confidence": confidence}
    if v.size == 0:
        return out
    if v.size == 1:  # every resample is the one value (scipy needs two observations)
        lo = hi = float(v[0])
    else:
        ci = bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
    out.update(mean=float(v.mean()), interval=[lo, hi])
    return out


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """Wilson score interval of the share ``k / n`` (``scipy.stats.binomtest``'s; None when ``n`` is 0).

    Example:
        >>> [round(x, 3) for x in wilson_interval(10, 10)]
        [0.722, 1.0]
    """
    if n <= 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [max(0.0, float(ci.low)), min(1.0, float(ci.high))]


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho of the arrays (``scipy.stats.spearmanr``); None with < 3 pairs or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def stratified_permutation_test(x: Sequence[float], y: Sequence[float], strata: Sequence[Hashable] | None = None, *,
                                n_perm: int = 5000, seed: int = 0, alternative: str = "greater") -> dict[str, Any]:
    """Is ``y`` associated with ``x``? The sum over strata of the within-stratum Spearman rho,
    against its distribution when ``y`` is shuffled within each stratum.

    Within a stratum the points share whatever defines it (say, the same plain forget
    accuracy), so an association that only comes from that shared variable is not counted.
    Strata with fewer than 3 points or a constant side add nothing. ``alternative``:
    ``"greater"`` (positive association), ``"less"`` or ``"two-sided"``. p = (1 + #{T_perm as
    or more extreme}) / (n_perm + 1), as ``scipy.stats.permutation_test`` counts; scipy has no
    within-strata shuffle, so the resampling is written here (with one stratum it is scipy's
    ``permutation_type="pairings"`` test on Spearman's rho).

    Returns ``{"statistic", "p_value", "n", "n_strata_used", "rho_per_stratum", "test"}``
    (statistic and p None when no stratum can be used).

    Example:
        >>> x = list(range(12)); y = [v + (v % 3) * 0.1 for v in x]
        >>> stratified_permutation_test(x, y, [v // 6 for v in x], n_perm=999)["p_value"] < 0.01
        True
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keys = list(strata) if strata is not None else [0] * len(xs)
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None and math.isfinite(xs[i]) and math.isfinite(ys[i]):
            groups.setdefault(k, []).append(i)
    used = {k: idx for k, idx in groups.items()
            if len(idx) >= 3 and np.ptp(xs[idx]) > 0 and np.ptp(ys[idx]) > 0}
    out: dict[str, Any] = {"test": f"stratified permutation of Spearman rho ({n_perm} permutations, {alternative})",
                           "n": sum(len(v) for v in used.values()), "n_strata_used": len(used),
                           "rho_per_stratum": {str(k): spearman_rho(xs[v], ys[v]) for k, v in used.items()},
                           "statistic": None, "p_value": None}
    if not used:
        return out
    rx = {k: rankdata(xs[v]) for k, v in used.items()}
    ry = {k: rankdata(ys[v]) for k, v in used.items()}

    def stat(perm: dict[Hashable, np.ndarray] | None) -> float:
        t = 0.0
        for k in used:
            b = ry[k] if perm is None else ry[k][perm[k]]
            t += float(np.corrcoef(rx[k], b)[0, 1])
        return t

    t_obs = stat(None)
    rng = np.random.default_rng(seed)
    null = np.array([stat({k: rng.permutation(len(v)) for k, v in used.items()}) for _ in range(n_perm)])
    eps = 1e-12
    if alternative == "greater":
        extreme = int((null >= t_obs - eps).sum())
    elif alternative == "less":
        extreme = int((null <= t_obs + eps).sum())
    else:
        extreme = int((np.abs(null) >= abs(t_obs) - eps).sum())
    out.update(statistic=t_obs, p_value=(1 + extreme) / (n_perm + 1))
    return out


__all__ = ["bootstrap_mean_ci", "fmt", "gini", "mean", "sign_test_p", "spearman", "spearman_p", "spearman_rho",
           "stratified_permutation_test", "wilson_interval"]
