"""Finding 2: is the knowledge hidden rather than erased? How much comes back by emphasis,
by prompt rewrite versus by activation scaling?

Input: per unlearning method, the best recovery rate of prompt rewrites and of
activation scaling on forget items, and whether that best setting broke the
controls (retain/general). A recovery that comes with a collapsed control does
not count. Output: per-method numbers and a verdict computed from them.

Example:
    >>> r = recovery_analysis({"ga_gdr": {"prompt_best": 0.4, "activation_best": 0.2,
    ...                                   "prompt_collapse": False, "activation_collapse": False,
    ...                                   "forget_rouge_after": 0.1}})
    >>> r["methods"]["ga_gdr"]["best_valid"]
    0.4
"""

from __future__ import annotations

from typing import Any

from unpact.analyses._stats import fmt, mean, sign_test_p


def recovery_analysis(per_method: dict[str, dict[str, Any]], meaningful: float = 0.2) -> dict[str, Any]:
    """Summarise emphasis recovery across methods.

    ``per_method[m]`` holds ``prompt_best``, ``activation_best`` (rates in [0, 1] on forget
    items that were forgotten), ``prompt_collapse``/``activation_collapse`` (control broke),
    and optionally ``forget_rouge_after``. ``meaningful`` is the rate above which a method
    counts as "hiding" its knowledge.
    """
    methods: dict[str, Any] = {}
    for m, r in per_method.items():
        p = None if r.get("prompt_collapse") else r.get("prompt_best")
        a = None if r.get("activation_collapse") else r.get("activation_best")
        valid = [x for x in (p, a) if x is not None]
        best = max(valid) if valid else None
        methods[m] = {
            "prompt_best": r.get("prompt_best"),
            "activation_best": r.get("activation_best"),
            "prompt_valid": p,
            "activation_valid": a,
            "best_valid": best,
            "winner": None
            if p is None and a is None
            else ("prompt" if (p or 0) > (a or 0) else "activation" if (a or 0) > (p or 0) else "tie"),
            "hidden": best is not None and best >= meaningful,
        }
    hidden = [m for m, r in methods.items() if r["hidden"]]
    pm = mean([r["prompt_valid"] for r in methods.values()])
    am = mean([r["activation_valid"] for r in methods.values()])
    pairs = [
        r["prompt_valid"] - r["activation_valid"]
        for r in methods.values()
        if r["prompt_valid"] is not None and r["activation_valid"] is not None
    ]
    p_pa = sign_test_p(pairs)
    if not methods:
        verdict = "no methods to analyse"
    else:
        per = ", ".join(
            f"{m} {fmt(100 * (methods[m]['best_valid'] or 0), 0)}%"
            + (
                f" of n = {per_method[m]['n_forgotten']} forgotten"
                if per_method[m].get("n_forgotten") is not None
                else ""
            )
            for m in methods
        )
        verdict = (
            f"{'supported for ' + str(len(hidden)) if hidden else 'not supported: none'} of {len(methods)} methods"
            f"{' (' + ', '.join(hidden) + ')' if hidden else ''}: emphasis whose controls held brought back at least "
            f"{fmt(100 * meaningful, 0)}% of the forgotten items (best rate: {per}); prompt rewrite vs activation "
            f"scaling, mean best {fmt(pm)} vs {fmt(am)} over {len(pairs)} methods (sign test p = {fmt(p_pa)})"
        )
        if pm is not None and am is not None and pm != am:
            verdict += f", {'prompt rewrites' if pm > am else 'activation scaling'} recovered more"
    return {
        "methods": methods,
        "hidden_methods": hidden,
        "sign_test_p_prompt_vs_activation": p_pa,
        "mean_prompt": pm,
        "mean_activation": am,
        "verdict": verdict,
    }
