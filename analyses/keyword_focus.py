"""Finding 1: does unlearning work by disrupting the focus on the prompt's keywords?

Input: for each item, its per-token contributions (leave-one-out) before and
after unlearning, and which tokens were the original model's KeyTokens. Output:
the mean contribution change on KeyTokens and on the other (non-special)
tokens, per item group (forget / retain / general), and a verdict computed from
those numbers: the finding holds for a method when, on forget items, KeyTokens
lose more than other tokens (a sign test over items says how consistently), and
more than KeyTokens of retain items do.

Example:
    >>> r = keyword_focus([{"group": "forget", "before": [0.1, 2.0], "after": [0.1, 0.2],
    ...                     "key": [False, True], "special": [False, False]}])
    >>> r["groups"]["forget"]["mean_delta_key"]
    -1.8
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unpact.analyses._stats import fmt, mean, sign_test_p


def _item_deltas(item: dict[str, Any]) -> tuple[float | None, float | None]:
    before, after = item["before"], item["after"]
    key = item["key"]
    special = item.get("special") or [False] * len(before)
    kd = [a - b for a, b, k, s in zip(after, before, key, special) if k and not s]
    od = [a - b for a, b, k, s in zip(after, before, key, special) if not k and not s]
    return mean(kd), mean(od)


def keyword_focus(items: Sequence[dict[str, Any]], p_threshold: float = 0.05) -> dict[str, Any]:
    """Mean contribution change on KeyTokens vs other tokens, per group, and a verdict.

    Each item is ``{"group", "before", "after", "key", "special"}`` (lists over prompt tokens).
    """
    groups: dict[str, dict[str, Any]] = {}
    for g in sorted({it["group"] for it in items}):
        rows = [_item_deltas(it) for it in items if it["group"] == g]
        key = [k for k, _ in rows]
        other = [o for _, o in rows]
        gap = [k - o for k, o in rows if k is not None and o is not None]
        groups[g] = {
            "n_items": len(rows),
            "mean_delta_key": mean(key),
            "mean_delta_other": mean(other),
            "mean_gap": mean(gap),  # key minus other: negative = keywords lost more
            "share_items_key_lost_more": (sum(1 for x in gap if x < 0) / len(gap)) if gap else None,
            "sign_test_p": sign_test_p(gap),
        }
    f = groups.get("forget", {})
    r = groups.get("retain", {})
    gap_f = f.get("mean_gap")
    holds = (
        gap_f is not None
        and gap_f < 0
        and (f.get("sign_test_p") is not None and f["sign_test_p"] < p_threshold)
        and (r.get("mean_delta_key") is None or f["mean_delta_key"] < r["mean_delta_key"])
    )
    if gap_f is None:
        verdict = "not enough forget items with KeyTokens to test keyword focus"
    else:
        n = len(
            [
                x
                for x in (_item_deltas(it) for it in items if it["group"] == "forget")
                if x[0] is not None and x[1] is not None
            ]
        )
        p = f.get("sign_test_p")
        numbers = (
            f"KeyTokens changed by {fmt(f['mean_delta_key'])} vs {fmt(f['mean_delta_other'])} for other "
            f"tokens, lower in {fmt(100 * (f['share_items_key_lost_more'] or 0), 0)}% of n = {n} forget items "
            f"(sign test p = {fmt(p)})"
        )
        retain = "" if r.get("mean_delta_key") is None else f"retain KeyTokens changed by {fmt(r['mean_delta_key'])}"
        if holds:
            verdict = f"supported: {numbers}" + (
                f"; forget KeyTokens lost more than retain KeyTokens ({fmt(r['mean_delta_key'])})" if retain else ""
            )
        elif gap_f >= 0:
            verdict = f"not supported: KeyTokens did not lose more than other tokens on forget items: {numbers}"
        elif p is None or p >= p_threshold:
            verdict = (
                f"not supported: KeyTokens lost more on average but not consistently over items "
                f"(sign test p >= {p_threshold:g}): {numbers}"
            )
        else:
            verdict = (
                f"not supported: {numbers}, but {retain or 'retain KeyTokens'} - as much or more, so the "
                "loss is not specific to the forget set"
            )
    return {"groups": groups, "holds": bool(holds), "verdict": verdict}


def normalised_gap(item: dict[str, Any]) -> float | None:
    """Per item: (mean change on KeyTokens - mean change on other tokens) / mean |contribution before|.

    Dividing by the item's own contribution scale makes items (and models) with large
    and small contributions comparable; negative = keywords lost more.
    """
    k, o = _item_deltas(item)
    special = item.get("special") or [False] * len(item["before"])
    scale = mean([abs(b) for b, s in zip(item["before"], special) if not s])
    if k is None or o is None or not scale:
        return None
    return (k - o) / scale


def keyword_focus_vs_null(
    method_items: Sequence[dict[str, Any]],
    null_draws: Sequence[Sequence[dict[str, Any]]],
    *,
    group: str = "forget",
    alpha: float = 0.05,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Finding 1 against damage-matched nulls: do KeyTokens lose more under the method than under the nulls?

    ``method_items`` and each list in ``null_draws`` hold the same items (paired by ``id`` when
    given, else by position) in :func:`keyword_focus`'s shape; each null draw is a model with the
    same damage and no unlearning objective (:mod:`unpact.controls`: a noise seed, a retain-only
    fine-tune). The statistic T is the mean per-item normalised KeyToken gap (:func:`normalised_gap`).

    The randomness of a null is the *draw* (one weight-noise sample changes every item at once),
    so items are not independent replicates of it: the test ranks the method's T among the K null
    draws' T (a Monte Carlo rank test, p = (1 + #{T_null <= T_method}) / (K + 1)). **Supported** only
    when p <= ``alpha`` (this needs K >= 1/alpha - 1 draws, 19 at 0.05) and the percentile bootstrap
    interval over items of T_method minus the nulls' mean T is below zero. ``items`` keeps each
    paired item's id, its gap under the method and its mean gap over the null draws (what
    :func:`unpact.analyses.seeds.pooled_keyword_null` pools over seeds).

    Example:
        >>> m = [{"group": "forget", "before": [1.0, 1.0], "after": [1.0, 0.0], "key": [False, True]}] * 8
        >>> nulls = [[{"group": "forget", "before": [1.0, 1.0], "after": [0.5 + k / 100, 0.5], "key": [False, True]}] * 8
        ...          for k in range(19)]
        >>> keyword_focus_vs_null(m, nulls)["supported"]
        True
    """

    rows, k = _paired_gaps(method_items, null_draws, group)
    out = _null_test_header(group, len(rows), k, alpha, confidence, n_boot)
    if len(rows) < 3 or k < 1:
        out.update(
            {
                "statistic": None,
                "null_statistics": None,
                "p_value": None,
                "interval": None,
                "supported": False,
                "verdict": f"not applicable: {len(rows)} paired {group} items with KeyTokens (need 3) and "
                f"{k} null draws (need 1)",
            }
        )
        return out
    gm = np.asarray([r[0] for r in rows])
    gn = np.asarray([r[1] for r in rows])  # items x draws
    t_m, t_n, p, d, (lo, hi) = _rank_and_interval(gm, gn, n_boot, confidence, seed)
    reachable = 1 / (k + 1) <= alpha
    supported = bool(reachable and p <= alpha and hi < 0)
    out.update(
        {
            "statistic": t_m,
            "null_statistics": [float(x) for x in t_n],
            "p_value": p,
            "interval": [lo, hi],
            "supported": supported,
            # per item, what pooling over seeds needs (unpact.analyses.seeds.pooled_keyword_null)
            "items": {
                "ids": [r[2] for r in rows],
                "method_gap": [float(x) for x in gm],
                "null_mean_gap": [float(x) for x in gn.mean(axis=1)],
            },
        }
    )
    out["verdict"] = (
        f"{'supported' if supported else 'not supported'}: mean normalised KeyToken gap {fmt(t_m)} "
        f"under the method vs {fmt(float(t_n.mean()))} over {k} null draws (rank p = {fmt(p)}); "
        f"method minus nulls {fmt(float(d.mean()))}, {int(100 * confidence)}% interval "
        f"[{fmt(lo)}, {fmt(hi)}], n = {len(rows)} {group} items" + _why_not_supported(supported, reachable, k, alpha)
    )
    return out


def _null_test_header(
    group: str, n_items: int, n_draws: int, alpha: float, confidence: float, n_boot: int
) -> dict[str, Any]:
    """The description of the test against the nulls and its sizes, the start of its result."""
    return {
        "test": "Monte Carlo rank of the method's mean normalised KeyToken gap among the null draws' "
        f"(p = (1 + #null <= method) / (K + 1)), with a paired percentile bootstrap ({n_boot} resamples) "
        "of method minus the nulls' mean",
        "group": group,
        "n_items": n_items,
        "n_null_draws": n_draws,
        "alpha": alpha,
        "confidence": confidence,
    }


def _why_not_supported(supported: bool, reachable: bool, n_draws: int, alpha: float) -> str:
    """The verdict's closing reason when the test against the nulls is not supported ("" when it is)."""
    if supported:
        return ""
    if not reachable:
        return f" (with {n_draws} null draws p cannot reach {alpha}; use >= {int(round(1 / alpha)) - 1})"
    return " (p above alpha or the interval includes zero)"


def _rank_and_interval(
    gm: np.ndarray, gn: np.ndarray, n_boot: int, confidence: float, seed: int
) -> tuple[float, np.ndarray, float, np.ndarray, tuple[float, float]]:
    """The method's mean gap T, the draws' T, the rank p, the per-item method-minus-nulls
    differences and their percentile bootstrap interval (``gm``: items; ``gn``: items x draws)."""
    t_m = float(gm.mean())
    t_n = gn.mean(axis=0)
    p = (1 + int((t_n <= t_m).sum())) / (gn.shape[1] + 1)
    d = gm - gn.mean(axis=1)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = (float(x) for x in np.quantile(boots, [(1 - confidence) / 2, 1 - (1 - confidence) / 2]))
    return t_m, t_n, p, d, (lo, hi)


def _paired_gaps(
    method_items: Sequence[dict[str, Any]], null_draws: Sequence[Sequence[dict[str, Any]]], group: str
) -> tuple[list[tuple[float, list[float], str]], int]:
    """``(rows, K)``: per item of ``group`` found in the method and in every null draw, its normalised
    gap under the method, its gaps under the K draws and its id (items without a gap are left out)."""

    def by_id(items):
        sel = [it for it in items if it.get("group", group) == group]
        return {str(it.get("id", i)): it for i, it in enumerate(sel)}

    m = by_id(method_items)
    nulls = [by_id(d) for d in null_draws]
    rows = []
    for i in (i for i in m if all(i in n for n in nulls)):
        gm = normalised_gap(m[i])
        gn = [normalised_gap(n[i]) for n in nulls]
        if gm is not None and all(g is not None for g in gn):
            rows.append((gm, gn, i))
    return rows, len(nulls)
