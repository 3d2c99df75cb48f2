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

from typing import Any, Sequence

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
        verdict = (
            f"{'supported' if holds else 'not supported'}: on forget items KeyTokens changed by "
            f"{fmt(f['mean_delta_key'])} vs {fmt(f['mean_delta_other'])} for other tokens "
            f"(keywords lost more in {fmt(100 * (f['share_items_key_lost_more'] or 0), 0)}% of items, "
            f"sign-test p={fmt(f['sign_test_p'])})"
        )
        if r.get("mean_delta_key") is not None:
            verdict += f"; retain KeyTokens changed by {fmt(r['mean_delta_key'])}"
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
    null_items: Sequence[dict[str, Any]],
    *,
    group: str = "forget",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Finding 1 against a damage-matched null: do KeyTokens lose more under the method than under the null?

    Both lists hold the same items (paired by ``id`` when given, else by position) in
    :func:`keyword_focus`'s shape, the null's "after" being a model with the same damage
    and no unlearning objective (:mod:`unpact.controls`). Per item d = normalised gap under
    the method minus under the null (:func:`normalised_gap`); a percentile bootstrap over
    items gives a ``confidence`` interval of the mean d. **Supported** only when the whole
    interval is below zero.

    Example:
        >>> m = [{"group": "forget", "before": [1.0, 1.0], "after": [1.0, 0.0], "key": [False, True]}] * 8
        >>> n = [{"group": "forget", "before": [1.0, 1.0], "after": [0.5, 0.5], "key": [False, True]}] * 8
        >>> keyword_focus_vs_null(m, n)["supported"]
        True
    """
    import numpy as np

    def by_id(items):
        sel = [it for it in items if it.get("group", group) == group]
        return {str(it.get("id", i)): it for i, it in enumerate(sel)}

    a, b = by_id(method_items), by_id(null_items)
    ids = [i for i in a if i in b]
    d = []
    for i in ids:
        gm, gn = normalised_gap(a[i]), normalised_gap(b[i])
        if gm is not None and gn is not None:
            d.append(gm - gn)
    out: dict[str, Any] = {"test": f"paired percentile bootstrap ({n_boot} resamples) of the mean per-item normalised "
                                   "KeyToken gap, method minus damage-matched null",
                           "group": group, "n_items": len(d), "confidence": confidence}
    if len(d) < 3:
        out.update({"mean_difference": None, "interval": None, "supported": False,
                    "verdict": f"not applicable: {len(d)} paired {group} items with KeyTokens (need at least 3)"})
        return out
    arr = np.asarray(d)
    rng = np.random.default_rng(seed)
    boots = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    supported = bool(hi < 0)
    out.update({"mean_difference": float(arr.mean()), "interval": [float(lo), float(hi)], "supported": supported})
    out["verdict"] = (f"{'supported' if supported else 'not supported'}: KeyTokens lost "
                      f"{fmt(-arr.mean())} more (normalised) under the method than under the null, "
                      f"{int(100 * confidence)}% interval [{fmt(-hi)}, {fmt(-lo)}], n={len(d)} {group} items"
                      + ("" if supported else " (the interval includes zero or favours the null)"))
    return out
