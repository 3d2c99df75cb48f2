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
        n = len([x for x in (_item_deltas(it) for it in items if it["group"] == "forget")
                 if x[0] is not None and x[1] is not None])
        p = f.get("sign_test_p")
        numbers = (f"KeyTokens changed by {fmt(f['mean_delta_key'])} vs {fmt(f['mean_delta_other'])} for other "
                   f"tokens, lower in {fmt(100 * (f['share_items_key_lost_more'] or 0), 0)}% of n = {n} forget items "
                   f"(sign test p = {fmt(p)})")
        retain = "" if r.get("mean_delta_key") is None else f"retain KeyTokens changed by {fmt(r['mean_delta_key'])}"
        if holds:
            verdict = f"supported: {numbers}" + (
                f"; forget KeyTokens lost more than retain KeyTokens ({fmt(r['mean_delta_key'])})" if retain else "")
        elif gap_f >= 0:
            verdict = f"not supported: KeyTokens did not lose more than other tokens on forget items: {numbers}"
        elif p is None or p >= p_threshold:
            verdict = (f"not supported: KeyTokens lost more on average but not consistently over items "
                       f"(sign test p >= {p_threshold:g}): {numbers}")
        else:
            verdict = (f"not supported: {numbers}, but {retain or 'retain KeyTokens'} - as much or more, so the "
                       "loss is not specific to the forget set")
    return {"groups": groups, "holds": bool(holds), "verdict": verdict}
