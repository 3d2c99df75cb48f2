"""Finding 3: does catastrophic forgetting come from penalising all tokens indiscriminately?

For each method, on retain and general items, take each prompt token's
contribution change (after minus before). The *spread* of the drop is measured
by the share of tokens whose contribution fell (function words included) and by
a concentration index (the Gini coefficient of the per-token drops: near 0 the
drop is spread over all tokens, near 1 it sits on a few). Across methods these
are related to the utility drop with a rank correlation: the finding holds when
methods that lose more utility have a more spread-out drop.

Example:
    >>> r = collapse_analysis({"ga": {"utility_drop": 0.5, "items": [
    ...     {"before": [1.0, 1.0], "after": [0.0, 0.0], "tokens": ["the", "Paris"]}]}})
    >>> r["methods"]["ga"]["share_tokens_fell"]
    1.0
"""

from __future__ import annotations

import math
from typing import Any

from unpact.analyses._stats import fmt, gini, mean, spearman, spearman_exact_p

#: English function words, matched case-insensitively on stripped token text.
FUNCTION_WORDS = frozenset(
    """a an the of in on at to for from by with and or but not is are was were be been am do does did
    what who whom whose which where when why how that this these those it its his her their there
    as into about than then so if""".split()
)


def is_function_word(token: str) -> bool:
    t = token.strip().strip("Ġ▁").lower().strip("?.,!:;'\"")
    return t in FUNCTION_WORDS


def token_drop_stats(items: list[dict[str, Any]], eps: float = 1e-6) -> dict[str, Any]:
    """Spread of the contribution drop over the (non-special) prompt tokens of ``items``."""
    drops: list[float] = []
    fell = 0
    n = 0
    fw_fell = fw_n = 0
    for it in items:
        special = it.get("special") or [False] * len(it["before"])
        tokens = it.get("tokens") or [""] * len(it["before"])
        for b, a, s, t in zip(it["before"], it["after"], special, tokens):
            if s:
                continue
            d = a - b
            n += 1
            drops.append(max(0.0, -d))
            if d < -eps:
                fell += 1
            if is_function_word(t):
                fw_n += 1
                fw_fell += d < -eps
    return {
        "n_tokens": n,
        "share_tokens_fell": fell / n if n else None,
        "share_function_words_fell": fw_fell / fw_n if fw_n else None,
        "drop_concentration_gini": gini(drops),
        "mean_drop": mean(drops),
    }


#: the share-vs-utility rank correlation must be at least this strong (a weak correlation over a
#: handful of methods is no support, whatever its p-value)
COLLAPSE_MIN_RHO = 0.3
#: ... and at least this unlikely under a random pairing of methods and utility drops (one-sided
#: exact permutation p, :func:`unpact.stats.spearman_exact_p`): the level of the study's other
#: verdicts. With n methods the smallest p is 1/n!: 3 methods can never reach it (1/6), and the
#: verdict is then "not applicable" (a "not supported" that no data could have turned).
COLLAPSE_ALPHA = 0.05


def _min_methods(alpha: float) -> int:
    """The fewest methods whose smallest one-sided exact p, 1/n!, is at most ``alpha``.

    Example:
        >>> _min_methods(0.05)
        4
    """
    n = 3
    while 1 / math.factorial(n) > alpha:
        n += 1
    return n


def collapse_analysis(
    per_method: dict[str, dict[str, Any]], min_rho: float = COLLAPSE_MIN_RHO, alpha: float = COLLAPSE_ALPHA
) -> dict[str, Any]:
    """Relate the spread of the contribution drop to the utility drop across methods.

    ``per_method[m]`` holds ``utility_drop`` (original minus unlearned general/retain
    ability, higher = worse) and ``items``: control items with ``before``, ``after``,
    ``special``, ``tokens``. The finding holds when the rank correlation between the share of
    tokens that fell and the utility drop reaches ``min_rho`` with a one-sided exact permutation
    p <= ``alpha``, and the drop's concentration (Gini) correlates negatively with it.
    """
    methods: dict[str, Any] = {}
    for m, r in per_method.items():
        stats = token_drop_stats(r.get("items", []))
        stats["utility_drop"] = r.get("utility_drop")
        methods[m] = stats
    names = list(methods)
    util = [methods[m]["utility_drop"] for m in names]
    shares = [methods[m]["share_tokens_fell"] for m in names]
    rho_share = spearman(shares, util)
    rho_gini = spearman([methods[m]["drop_concentration_gini"] for m in names], util)
    p_share = spearman_exact_p(shares, util, "greater") if len(names) >= 3 else None
    min_methods = _min_methods(alpha)
    if len(names) < 3:
        verdict = f"{len(names)} method(s): too few to correlate spread with utility drop; " + "; ".join(
            f"{m}: {fmt(100 * (methods[m]['share_tokens_fell'] or 0), 0)}% of tokens fell, "
            f"Gini {fmt(methods[m]['drop_concentration_gini'], 2)}, utility drop {fmt(methods[m]['utility_drop'])}"
            for m in names
        )
        holds = None
    elif len(names) < min_methods:
        holds = None
        verdict = (
            f"not applicable: n = {len(names)} methods can never reach one-sided exact p <= {alpha:g} (the smallest "
            f"is 1/{len(names)}! = {fmt(1 / math.factorial(len(names)))}); run at least {min_methods}. "
            f"Spearman {fmt(rho_share, 2)} (p = {fmt(p_share)}) between the share of control tokens whose "
            f"contribution fell and the utility drop, Gini at {fmt(rho_gini, 2)}"
        )
    else:
        holds = (
            rho_share is not None
            and rho_share >= min_rho
            and p_share is not None
            and p_share <= alpha
            and (rho_gini is None or rho_gini < 0)
        )
        verdict = (
            f"{'supported' if holds else 'not supported'}: the share of control tokens whose contribution fell "
            f"correlates with the utility drop at Spearman {fmt(rho_share, 2)} (one-sided exact p = {fmt(p_share)}, "
            f"n = {len(names)} methods; needs >= {fmt(min_rho, 2)} and p <= {alpha:g}), and the drop's "
            f"concentration (Gini) at {fmt(rho_gini, 2)} (needs < 0)"
        )
    return {
        "methods": methods,
        "spearman_share_vs_utility_drop": rho_share,
        "spearman_gini_vs_utility_drop": rho_gini,
        "p_share_vs_utility_drop": p_share,
        "holds": holds,
        "verdict": verdict,
    }
