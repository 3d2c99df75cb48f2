"""unpact.stats after the move to scipy.stats gives the numbers the hand-written versions gave.

tests/data/stats_before_scipy.json holds the outputs of the previous implementations
(own Spearman, Wilson, bootstrap and permutation code) on fixed inputs, recorded before
the change. Spearman, the sign test and the Wilson interval are deterministic: equal to
float rounding. The bootstrap draws the same indices from ``default_rng(seed)`` as before
(scipy takes them in one ``integers(0, n, (n_boot, n))`` call), so its interval is equal
too. The stratified permutation test keeps its own resampling (scipy has no within-strata
shuffle): equal with the same seed; with one stratum it is also checked against
``scipy.stats.permutation_test`` within Monte-Carlo error, as a different random stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import permutation_test, spearmanr

from unpact import stats as S

BEFORE = json.loads((Path(__file__).parents[1] / "data" / "stats_before_scipy.json").read_text())
X, Y, STRATA, VALS = BEFORE["x"], BEFORE["y"], BEFORE["strata"], BEFORE["vals"]


def test_spearman_and_sign_test_unchanged():
    assert S.spearman(X, Y) == pytest.approx(BEFORE["spearman"], abs=1e-12)
    assert S.spearman_p(X, Y) == pytest.approx(BEFORE["spearman_p"], abs=1e-12)
    assert S.spearman_rho(X, Y) == pytest.approx(BEFORE["spearman_rho"], abs=1e-12)
    assert S.spearman_rho([1, 2, 2, 3, 4], [1, 1, 2, 3, 3]) == pytest.approx(BEFORE["spearman_rho_ties"], abs=1e-12)
    assert S.sign_test_p([1, 2, -1, 3, 0, 4, 5, -2, 1]) == pytest.approx(BEFORE["sign_test_p"], abs=1e-12)


def test_wilson_unchanged():
    got = [S.wilson_interval(10, 10), S.wilson_interval(3, 17), S.wilson_interval(0, 5), S.wilson_interval(7, 9, 0.9)]
    for g, b in zip(got, BEFORE["wilson"]):
        assert g == pytest.approx(b, abs=1e-12)
    assert S.wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    "key,kwargs", [("boot", {"seed": 3}), ("boot90", {"n_boot": 500, "confidence": 0.9, "seed": 7})]
)
def test_bootstrap_unchanged(key, kwargs):
    got, before = S.bootstrap_mean_ci(VALS, **kwargs), BEFORE[key]
    assert got["mean"] == pytest.approx(before["mean"], abs=1e-12)
    assert got["interval"] == pytest.approx(before["interval"], abs=1e-12)
    assert (got["n"], got["confidence"]) == (before["n"], before["confidence"])


def test_bootstrap_edge_cases_unchanged():
    assert S.bootstrap_mean_ci([0.7]) == BEFORE["boot1"]
    assert S.bootstrap_mean_ci([None, float("nan")]) == {"mean": None, "interval": None, "n": 0, "confidence": 0.95}


@pytest.mark.parametrize(
    "key,strata,alternative", [("perm_g", STRATA, "greater"), ("perm_t", None, "two-sided"), ("perm_l", STRATA, "less")]
)
def test_permutation_unchanged(key, strata, alternative):
    got = S.stratified_permutation_test(X, Y, strata, n_perm=2000, seed=5, alternative=alternative)
    before = BEFORE[key]
    assert got["p_value"] == pytest.approx(before["p_value"], abs=1e-12)
    assert got["statistic"] == pytest.approx(before["statistic"], abs=1e-12)
    assert got["rho_per_stratum"] == pytest.approx(before["rho_per_stratum"], abs=1e-12)
    assert (got["n"], got["n_strata_used"], got["test"]) == (before["n"], before["n_strata_used"], before["test"])


def test_one_stratum_agrees_with_scipy_permutation_test():
    """With one stratum the test is scipy's pairings permutation test on rho: the p-values of two
    random streams of 2000 permutations differ by Monte-Carlo error only (4 standard errors)."""
    ref = permutation_test(
        (np.asarray(Y),),
        lambda y: spearmanr(X, y).statistic,
        permutation_type="pairings",
        n_resamples=2000,
        alternative="two-sided",
        rng=np.random.default_rng(11),
    )
    p = BEFORE["perm_t"]["p_value"]
    se = (p * (1 - p) / 2000) ** 0.5
    assert abs(ref.pvalue - p) < 4 * se * 2**0.5
