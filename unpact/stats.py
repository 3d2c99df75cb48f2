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
:func:`spearman` is the general one, skipping None pairs), :func:`stratified_permutation_test`
(a rank correlation's p-value with the pairing shuffled only within strata), and for pooling seeds
:func:`stratified_rank_test` (a Monte Carlo rank test over strata) and :func:`cluster_bootstrap_mean_ci`
(a bootstrap that resamples clusters of rows).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap, permutation_test, rankdata, spearmanr


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


def spearman_exact_p(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> float | None:
    """p-value of the Spearman correlation of the pairs without None from the permutation
    distribution of the pairing (scipy's ``permutation_test``: every pairing enumerated up to 8
    pairs, 8! = 40,320; beyond, 40,320 random pairings), where :func:`spearman_p`'s t approximation is
    wrong on a handful of points (it gives p = 0 for a perfect rank order of 3, where 1 of the 6
    pairings reaches it). ``alternative``: "greater" (rho > 0), "less" or "two-sided". None
    where :func:`spearman` is None.

    Example:
        >>> round(spearman_exact_p([1, 2, 3], [1, 2, 3]), 4), round(spearman_exact_p([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]), 4)
        (0.1667, 0.0014)
    """
    if spearman(a, b) is None:
        return None
    x, y = (np.asarray(v, dtype=float) for v in zip(*[(u, v) for u, v in zip(a, b) if u is not None and v is not None]))
    ry = rankdata(y) - rankdata(y).mean()

    def rho(rx: np.ndarray, axis: int = -1) -> np.ndarray:  # Pearson of the ranks = Spearman's rho
        cx = rx - rx.mean(axis=axis, keepdims=True)
        return (cx * ry).sum(axis=axis) / np.sqrt((cx**2).sum(axis=axis) * (ry**2).sum())

    res = permutation_test(
        (rankdata(x),), rho, permutation_type="pairings", alternative=alternative, n_resamples=40_320, vectorized=True
    )
    return float(res.pvalue)


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
    if x != 0 and abs(x) < 0.5 * 10**-digits:
        return f"{x:.2g}"
    return f"{x:.{digits}f}"


def bootstrap_mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
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
        ci = bootstrap(
            (v,),
            np.mean,
            n_resamples=n_boot,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
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


def stratified_permutation_test(
    x: Sequence[float],
    y: Sequence[float],
    strata: Sequence[Hashable] | None = None,
    *,
    n_perm: int = 5000,
    seed: int = 0,
    alternative: str = "greater",
) -> dict[str, Any]:
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
    used = {k: idx for k, idx in groups.items() if len(idx) >= 3 and np.ptp(xs[idx]) > 0 and np.ptp(ys[idx]) > 0}
    out: dict[str, Any] = {
        "test": f"stratified permutation of Spearman rho ({n_perm} permutations, {alternative})",
        "n": sum(len(v) for v in used.values()),
        "n_strata_used": len(used),
        "rho_per_stratum": {str(k): spearman_rho(xs[v], ys[v]) for k, v in used.items()},
        "statistic": None,
        "p_value": None,
    }
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


#: The most one-value-per-stratum combinations :func:`stratified_rank_test` enumerates exactly
#: (2e6: 3 seeds x 100 draws each is 1.03e6 combinations, a few MB and well under a second; above
#: it, ``n_mc`` random combinations give a Monte Carlo p that is still valid, only less fine).
EXACT_MAX_COMBINATIONS = 2_000_000
#: Random tuples of :func:`stratified_rank_test` above that limit (200,000: the Monte Carlo p's
#: standard error is under 0.0005 at p = 0.05, far below the distance at which a verdict turns).
MC_TUPLES = 200_000


def stratified_rank_test(
    observed: Sequence[float],
    nulls: Sequence[Sequence[float]],
    *,
    alternative: str = "less",
    max_exact: int = EXACT_MAX_COMBINATIONS,
    n_mc: int = MC_TUPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """A Monte Carlo rank test pooled over strata: is the mean of ``observed`` (one value per
    stratum) extreme among the means of one value per stratum drawn from ``{observed[s]} U
    nulls[s]``?

    Each stratum s (a seed of a study) has an observed statistic T_s and K_s null statistics
    computed the same way on null draws. Under the null hypothesis T_s is exchangeable with its
    stratum's null draws and the strata are independent, so the observed tuple (T_1, ..., T_S)
    is uniformly distributed over the prod(K_s + 1) tuples that take one of the K_s + 1 values
    in each stratum. p = share of those tuples whose mean is as or more extreme than the mean
    of the T_s (the observed tuple counts, so p >= 1 / prod(K_s + 1)): an exact randomization
    test. With one stratum it is the usual rank test, p = (1 + #{null <= T}) / (K + 1); three
    strata of 19 draws can reach p = 1/8000. Above ``max_exact`` tuples, ``n_mc`` random tuples
    give p = (1 + #{as extreme}) / (n_mc + 1). ``alternative``: ``"less"`` (the observed mean is
    low) or ``"greater"``.

    Returns ``{"statistic" (mean of observed), "null_mean" (mean of every null value), "p_value",
    "min_p", "n_strata", "n_null", "exact", "n_combinations", "test"}``.

    Example:
        >>> r = stratified_rank_test([0.0], [[1.0, 2.0, 3.0]])
        >>> r["p_value"], r["n_null"]
        (0.25, 3)
        >>> stratified_rank_test([0.0, 0.0], [[1.0, 2.0, 3.0]] * 2)["p_value"]
        0.0625
    """
    if alternative not in ("less", "greater"):
        raise ValueError(f"alternative must be 'less' or 'greater', got {alternative!r}")
    if len(observed) != len(nulls) or not len(observed):
        raise ValueError("stratified_rank_test needs one observed value and one list of nulls per stratum")
    sign = 1.0 if alternative == "less" else -1.0
    vals = [sign * np.asarray([float(o), *map(float, n)], dtype=float) for o, n in zip(observed, nulls)]
    total = 1
    for v in vals:
        total *= v.size
    obs = vals[0][0]
    for v in vals[1:]:
        obs = obs + v[0]  # the same order of additions as the tuples' sums below
    eps = 1e-12 * max(1.0, abs(float(obs)))
    if total <= max_exact:
        sums = vals[0]
        for v in vals[1:]:
            sums = (sums[:, None] + v[None, :]).ravel()
        p = int((sums <= obs + eps).sum()) / total
        exact = True
    else:
        rng = np.random.default_rng(seed)
        sums = np.zeros(n_mc)
        for v in vals:
            sums = sums + v[rng.integers(0, v.size, size=n_mc)]
        p = (1 + int((sums <= obs + eps).sum())) / (n_mc + 1)
        exact = False
    all_nulls = [float(x) for n in nulls for x in n]
    return {
        "statistic": float(np.mean([float(o) for o in observed])),
        "null_mean": float(np.mean(all_nulls)) if all_nulls else None,
        "p_value": float(p),
        "min_p": 1 / total,
        "n_strata": len(vals),
        "n_null": len(all_nulls),
        "exact": exact,
        "n_combinations": total,
        "test": (
            f"stratified rank test over {len(vals)} strata: the mean of the observed statistics against "
            f"the means of every tuple of one value per stratum (observed or null; "
            f"{'all ' + str(total) + ' tuples' if exact else str(n_mc) + ' random tuples'}), "
            f"{'lower' if alternative == 'less' else 'higher'} is more extreme"
        ),
    }


def cluster_bootstrap_mean_ci(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean of ``values`` with a percentile bootstrap interval that resamples whole ``clusters``.

    Rows of one cluster (an item measured on several seeds) are not independent, so the
    clusters are drawn with replacement and each resample's statistic is the mean over all the
    rows of the drawn clusters (sum of their sums / sum of their sizes). With one row per
    cluster (in order of first appearance) it draws the same resamples as
    :func:`bootstrap_mean_ci` with the same seed and gives the same interval; duplicating every
    cluster's rows leaves it unchanged.

    Returns ``{"mean", "interval", "n" (rows), "n_clusters", "confidence"}``.

    Example:
        >>> a = cluster_bootstrap_mean_ci([0.0, 1.0] * 20, list(range(40)), seed=1)
        >>> a["interval"] == bootstrap_mean_ci([0.0, 1.0] * 20, seed=1)["interval"]
        True
        >>> cluster_bootstrap_mean_ci([0.0, 1.0] * 40, list(range(40)) * 2, seed=1)["interval"] == a["interval"]
        True
    """
    keep = [(float(v), c) for v, c in zip(values, clusters) if v is not None and math.isfinite(float(v))]
    out: dict[str, Any] = {"mean": None, "interval": None, "n": len(keep), "n_clusters": 0, "confidence": confidence}
    if not keep:
        return out
    order: dict[Hashable, int] = {}
    for _, c in keep:
        order.setdefault(c, len(order))
    sums = np.zeros(len(order))
    sizes = np.zeros(len(order))
    for v, c in keep:
        sums[order[c]] += v
        sizes[order[c]] += 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(order), size=(n_boot, len(order)))
    boots = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    out.update(mean=float(sums.sum() / sizes.sum()), interval=[float(lo), float(hi)], n_clusters=len(order))
    return out


__all__ = [
    "bootstrap_mean_ci",
    "cluster_bootstrap_mean_ci",
    "EXACT_MAX_COMBINATIONS",
    "MC_TUPLES",
    "fmt",
    "gini",
    "mean",
    "sign_test_p",
    "spearman",
    "spearman_p",
    "spearman_rho",
    "stratified_permutation_test",
    "stratified_rank_test",
    "wilson_interval",
]
