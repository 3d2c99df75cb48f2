"""Finding 2 and the dilemma, as verdicts that can fail (numbers in, verdict out).

* :func:`finding2_verdict` — is there keyword-specific recovery for one method at one
  checkpoint? The keyword-minus-placebo difference-in-differences of a
  :class:`~unpact.emphasis.controlled.ControlledRecovery` (against the original under
  the same emphasis), per setting, with bootstrap intervals widened for the number of
  settings tried (Bonferroni); **supported** only when some setting whose controls held
  has its interval above a minimum effect (``min_effect``) on at least ``min_items`` items.
* :func:`dilemma_verdict` — across all methods' checkpoints: (a) does erasure (no probe
  finds the knowledge any more) go with utility loss? A permutation test of the rank
  correlation between the erased share and the utility drop, shuffled *within strata of
  matched forgetting* (along one trajectory both grow with the number of steps whatever
  their relation, so a pooled correlation would be found even without one); (b) is
  knowledge that emphasis recovers always present by the probes? The share of recovered
  items that some probe finds, with a Wilson interval.

Each verdict says its test, its numbers and its sample size, and "not supported" when the
numbers do not carry it (or "not applicable" when there are too few).

Example:
    >>> pts = [{"method": m, "stratum": s, "erased_share": e, "utility_drop": 2 * e}
    ...        for s in ("forget_below_0.5", "forget_below_0.25") for m, e in zip("abcde", (0.1, 0.5, 0.3, 0.9, 0.7))]
    >>> dilemma_verdict(pts, n_perm=999)["erasure_costs_utility"]["supported"]
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from unpact.analyses._stats import fmt
from unpact.emphasis.controlled import ControlledRecovery, specific_recovery, summarise
from unpact.metrics import general_score
from unpact.stats import spearman_rho, stratified_permutation_test, wilson_interval


@dataclass
class DilemmaSettings:
    """Thresholds of the verdicts, each with its reason.

    Attributes:
        alpha: the error rate of each test (0.05, the conventional level; the family of
            settings within finding 2 is corrected for, the two parts of the dilemma are
            reported separately).
        min_items: finding 2 needs at least this many eligible items at a checkpoint. 8: a
            percentile bootstrap on fewer items cannot show spread it has not seen (on one
            item the interval is a point and "excludes 0" by construction).
        outcome, statistic: what finding 2 tests. ``"recovered"`` (default): the paper's own
            criterion, an item is recovered when its fact token is top-1 *and* its greedy answer is
            right at the study's threshold; the statistic is the difference-in-differences of that
            0/1 outcome (keyword minus placebo emphasis on the unlearned model, minus the same on
            the negative control). The fact's log-prob (``"logprob"``: continuous, so it sees partial
            recovery a threshold misses, but it cannot see how a model forgets a sentence answer
            whose first token it still ranks high) is reported beside it as the secondary measure
            (``secondary`` in the verdict); ``"top1"`` and ``"rouge"`` alone are the other choices. ``statistic`` None (default):
            ``"did_negative"`` (against the negative control, the model that never saw the facts)
            when the result has one, else ``"did"`` (against the original) with a warning in the
            verdict: on the embedded world the retain-only model passes ``did`` for
            ``prompt:repeat`` (the original sits at its ceiling), so ``did`` alone is not specific.
        secondary_outcome: the outcome also tested, reported as ``secondary`` beside the verdict
            and never deciding it (``"logprob"``; None: none).
        min_effect: per outcome, the keyword-specific gain the interval's lower end must exceed
            (not only 0). Items share one model, so a tiny systematic difference between two models
            is "significant" over items: between the retain-only gpt2 and the same model fine-tuned
            10 more steps on retain items (neither saw the facts) ``did_negative`` of the fact's
            log-prob was 0.049, interval [0.039, 0.058]. 0.25 nats (the fact's probability up by a
            quarter, over 4x that model-to-model difference); 0.1 for ROUGE-L, top-1 and recovered
            (shares: one item in ten).
        n_perm: permutations of the dilemma's test (5000: p resolves to 2e-4).
        min_points: the erasure/utility test needs this many checkpoints in usable strata. 6:
            fewer cannot give a permutation p below 0.05 within strata of three.
        always_share: "recoverable knowledge is always probe-present" is supported when the
            Wilson interval's lower end of the present share reaches this. 0.8: "always", less
            the probes' own misses (their sensitivity on the positive control is about 0.85-1
            on the embedded models), and an interval that needs about 20 recovered items.
        seed: of the permutations and bootstraps.
    """

    alpha: float = 0.05
    min_items: int = 8
    outcome: str = "recovered"
    secondary_outcome: str | None = "logprob"
    statistic: str | None = None
    min_effect: dict = field(default_factory=lambda: {"logprob": 0.25, "rouge": 0.1, "top1": 0.1, "recovered": 0.1})
    n_perm: int = 5000
    min_points: int = 6
    always_share: float = 0.8
    seed: int = 0


# ------------------------------------------------------------------ finding 2


def finding2_verdict(result, settings: DilemmaSettings | None = None) -> dict[str, Any]:
    """Keyword-specific recovery at one checkpoint: does some setting's interval lie above 0?

    ``result``: a :class:`~unpact.emphasis.controlled.ControlledRecovery` (or its ``to_dict``).
    The intervals are recomputed from its raw outcomes at confidence 1 - alpha / k for the k
    settings tried (Bonferroni), so trying many settings does not make a finding. The verdict is
    on ``settings.outcome`` (the paper's criterion by default); ``secondary`` holds the same test
    on ``settings.secondary_outcome`` (the fact's log-prob), which does not decide it.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> v = finding2_verdict(controlled)                # doctest: +SKIP
        >>> v["supported"], v["verdict"]                    # doctest: +SKIP
    """
    s = settings or DilemmaSettings()
    res = result if isinstance(result, ControlledRecovery) else ControlledRecovery.from_dict(result)
    out = _finding2_one(res, s)
    if s.secondary_outcome and s.secondary_outcome != s.outcome:
        sec = _finding2_one(res, replace(s, outcome=s.secondary_outcome))
        out["secondary"] = {
            "outcome": s.secondary_outcome,
            "supported": sec["supported"],
            "best_setting": sec.get("best_setting"),
            "settings": sec["settings"],
            "verdict": sec["verdict"],
        }
        out["verdict"] += f" [secondary, the fact's {s.secondary_outcome}: {sec['verdict'].split(':')[0]}]"
    return out


def _finding2_one(res: ControlledRecovery, s: DilemmaSettings) -> dict[str, Any]:
    """:func:`finding2_verdict` on one outcome."""
    k = len(res.raw["settings"])
    conf = 1 - s.alpha / max(1, k)
    summary = summarise(res.raw, replace(res.settings, confidence=conf, seed=s.seed))
    stat = s.statistic or ("did_negative" if "negative" in res.raw["runs"] else "did")
    per = specific_recovery({"summary": summary}, s.outcome, stat)
    floor = (
        float(s.min_effect.get(s.outcome, 0.0)) if s.statistic != "binary" else float(s.min_effect.get("rouge", 0.0))
    )
    rows = {
        name: _setting_row(ci, summary["settings"][name]["collapsed"], s.min_items, floor) for name, ci in per.items()
    }
    test = _finding2_test(stat, s, conf, k, floor)
    out: dict[str, Any] = {
        "test": test,
        "statistic": stat,
        "method": res.method,
        "confidence": conf,
        "n_settings": k,
        "settings": rows,
    }
    usable = {n: r for n, r in rows.items() if r["usable"]}
    hits = {n: r for n, r in usable.items() if r["above_zero"]}
    if not usable:
        n_max = max((r["n"] for r in rows.values()), default=0)
        out.update(
            supported=False,
            verdict=f"not applicable: at most {n_max} eligible items in a setting whose "
            f"controls held (need {s.min_items}); not supported",
        )
        return out
    best_name, best = max(
        hits.items() if hits else usable.items(),
        key=lambda kv: kv[1]["interval"][0] if kv[1]["interval"] else -math.inf,
    )
    numbers = (
        f"{best_name}: mean {fmt(best['mean'])}, interval [{fmt(best['interval'][0])}, {fmt(best['interval'][1])}], "
        f"n = {best['n']} items"
    )
    out["best_setting"] = best_name
    if all(r["collapsed"] is None for r in rows.values()):
        test += "; no collapse check (too few control items)"
    if hits:
        out.update(
            supported=True,
            verdict=f"supported: keyword-specific recovery in {len(hits)} of {k} settings; "
            f"strongest {numbers} ({test})",
        )
    else:
        out.update(
            supported=False,
            verdict=f"not supported: no setting's interval lies above {floor:g}; the highest lower end is {numbers} ({test})",
        )
    return out


def _setting_row(ci: Mapping[str, Any], collapsed: bool | None, min_items: int, floor: float) -> dict[str, Any]:
    """One setting's interval, whether it lies above ``floor`` and whether the setting counts
    (enough eligible items and no control collapsed)."""
    ok = ci["n"] >= min_items and ci["interval"] is not None
    return {
        "mean": ci["mean"],
        "interval": ci["interval"],
        "n": ci["n"],
        "collapsed": collapsed,
        "above_zero": bool(ok and ci["interval"][0] > floor),
        "usable": ok and collapsed is not True,
    }


def _finding2_test(stat: str, s: DilemmaSettings, conf: float, k: int, floor: float) -> str:
    """The sentence that says what finding 2's verdict tested."""
    return (
        f"{stat} of the {s.outcome} change, keyword vs placebo emphasis"
        + {
            "did": " against the original under the same emphasis (no negative control: this statistic "
            "was not specific on the embedded world)",
            "did_negative": " against the negative control (a model that never saw the facts)",
        }.get(stat, "")
        + f"; percentile bootstrap over items at {100 * conf:.1f}% (Bonferroni over {k} settings); "
        f"supported when an interval's lower end exceeds {floor:g}; needs >= {s.min_items} eligible items "
        "and controls that held"
    )


def finding2_by_checkpoint(
    results: Mapping[str, Mapping[str, Any]], settings: DilemmaSettings | None = None
) -> dict[str, Any]:
    """:func:`finding2_verdict` for every ``results[method][checkpoint]``, and how many were supported."""
    per = {m: {c: finding2_verdict(r, settings) for c, r in cps.items()} for m, cps in results.items()}
    n = sum(len(v) for v in per.values())
    k = sum(v["supported"] for cps in per.values() for v in cps.values())
    return {
        "per_method": per,
        "n_checkpoints": n,
        "n_supported": k,
        "verdict": (
            f"{'supported' if k else 'not supported'}: keyword-specific recovery at {k} of {n} "
            "checkpoints (each tested on its own, see per_method)"
        ),
    }


# ------------------------------------------------------------------ the dilemma


def recovered_ids(result, specific: bool = True) -> list[str]:
    """Forget items recovered at the headline threshold by keyword emphasis under some setting whose
    controls held (eligible items only); with ``specific``, only where the placebo did not recover it.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> recovered_ids(controlled)                    # doctest: +SKIP
        ['forget10/3']
    """
    res = result if isinstance(result, ControlledRecovery) else ControlledRecovery.from_dict(result)
    t = res.summary["threshold"]
    ids = res.raw["ids"]["forget"]
    runs = res.raw["runs"]["unlearned"]
    out: set[str] = set()
    for name, s in res.summary["settings"].items():
        if s["collapsed"]:
            continue
        for iid in s["eligible_ids"]:
            i = ids.index(iid)
            k = runs[f"{name}|keyword"]["forget"]["rouge"][i] >= t
            p = runs[f"{name}|placebo"]["forget"]["rouge"][i] >= t
            if k and (not specific or not p):
                out.add(iid)
    return [i for i in ids if i in out]


def checkpoint_point(
    method: str,
    checkpoint: str,
    kinds: Sequence[str],
    ids: Sequence[str],
    *,
    utility_drop: float | None,
    forget_accuracy: float | None = None,
    utility: float | None = None,
    step: int | None = None,
    stratum: Any = None,
    recovered: Sequence[str] = (),
) -> dict[str, Any]:
    """One checkpoint as a point of the dilemma, from :func:`unpact.probes.classify`'s ``kinds``.

    ``erased_share`` = erased / (hidden + erased): of the items the plain prompt misses, the
    share no probe finds. ``recovered``: ids recovered by emphasis (:func:`recovered_ids`);
    ``recovered_present`` counts those some probe finds. ``stratum``: the matched-forgetting
    level this checkpoint stands for (the trajectory's target name), None for a step mark.

    Example:
        >>> p = checkpoint_point("ga", "forget_below_0.5", ["hidden", "erased", "known"], ["a", "b", "c"],
        ...                      utility_drop=0.1, recovered=["a"])
        >>> p["erased_share"], p["recovered_present"], p["n_recovered"]
        (0.5, 1, 1)
    """
    kind = dict(zip(ids, kinds))
    hidden = sum(k == "hidden" for k in kinds)
    erased = sum(k == "erased" for k in kinds)
    rec = [r for r in recovered if r in kind and kind[r] != "unprobed"]
    return {
        "method": method,
        "checkpoint": checkpoint,
        "step": step,
        "stratum": stratum,
        "forget_accuracy": forget_accuracy,
        "utility": utility,
        "utility_drop": utility_drop,
        "n_hidden": hidden,
        "n_erased": erased,
        "n_known": sum(k == "known" for k in kinds),
        "erased_share": erased / (hidden + erased) if hidden + erased else None,
        "hidden_share": hidden / (hidden + erased) if hidden + erased else None,
        "n_recovered": len(rec),
        "recovered_present": sum(kind[r] == "hidden" for r in rec),
    }


def dilemma_verdict(
    points: Sequence[Mapping[str, Any]], settings: DilemmaSettings | None = None, *, n_perm: int | None = None
) -> dict[str, Any]:
    """The dilemma across all methods' checkpoints (each point from :func:`checkpoint_point`).

    (a) ``erasure_costs_utility``: the within-stratum Spearman rho of ``erased_share`` and
    ``utility_drop``, summed over strata (``stratum``: matched forgetting; points without one are
    left out), against ``n_perm`` within-stratum shuffles (one-sided: more erasure, more utility
    lost); supported when p <= alpha on at least ``min_points`` points. The pooled rho over all
    points is reported beside it, marked as confounded by training length.
    (b) ``recoverable_is_present``: over all points, recovered items some probe finds / recovered
    items, with a Wilson interval; supported when its lower end reaches ``always_share``. An item
    recovered at several checkpoints of a method counts at each.
    """
    s = settings or DilemmaSettings()
    a = _erasure_costs_utility(points, s, n_perm or s.n_perm)
    b = _recoverable_is_present(points, s)
    both = a["supported"] and b["supported"]
    return {
        "erasure_costs_utility": a,
        "recoverable_is_present": b,
        "supported": bool(both),
        "verdict": (
            f"{'supported' if both else 'not supported'}: erasure goes with utility loss - "
            f"{a['verdict'].split(':')[0]}; recoverable knowledge is probe-present - {b['verdict'].split(':')[0]}"
        ),
    }


def _erasure_costs_utility(points: Sequence[Mapping[str, Any]], s: DilemmaSettings, perms: int) -> dict[str, Any]:
    """The dilemma's (a): erased share against utility drop, within strata of matched forgetting."""
    pts = [p for p in points if p.get("erased_share") is not None and p.get("utility_drop") is not None]
    strat = [p for p in pts if p.get("stratum") is not None]
    t = stratified_permutation_test(
        [p["erased_share"] for p in strat],
        [p["utility_drop"] for p in strat],
        [p["stratum"] for p in strat],
        n_perm=perms,
        seed=s.seed,
        alternative="greater",
    )
    pooled = spearman_rho([p["erased_share"] for p in pts], [p["utility_drop"] for p in pts])
    a: dict[str, Any] = {
        **t,
        "alpha": s.alpha,
        "pooled_rho": pooled,
        "pooled_note": "all checkpoints pooled: along a trajectory erasure and utility loss both grow "
        "with the steps, so this rho is not evidence of a trade-off",
    }
    if t["p_value"] is None or t["n"] < s.min_points:
        a.update(
            supported=False,
            verdict=f"not applicable: {t['n']} checkpoints in {t['n_strata_used']} usable strata "
            f"of matched forgetting (need {s.min_points} in strata of >= 3 with "
            "varying values); not supported",
        )
        return a
    sup = t["p_value"] <= s.alpha and t["statistic"] > 0
    a.update(
        supported=bool(sup),
        verdict=(
            f"{'supported' if sup else 'not supported'}: at matched forgetting, checkpoints that erased more lost more "
            f"utility with summed within-stratum Spearman rho {fmt(t['statistic'], 2)} over {t['n_strata_used']} strata "
            f"(permutation p = {fmt(t['p_value'])}, one-sided, {perms} shuffles within strata; n = {t['n']} "
            f"checkpoints; needs p <= {s.alpha:g}); pooled rho {fmt(pooled, 2)} (confounded by training length)"
        ),
    )
    return a


def _recoverable_is_present(points: Sequence[Mapping[str, Any]], s: DilemmaSettings) -> dict[str, Any]:
    """The dilemma's (b): the share of recovered items that some probe finds, with a Wilson interval."""
    k = sum(int(p.get("recovered_present", 0)) for p in points)
    n = sum(int(p.get("n_recovered", 0)) for p in points)
    ci = wilson_interval(k, n)
    b: dict[str, Any] = {
        "test": "share of recovered items that some probe finds, Wilson 95% interval",
        "n_recovered": n,
        "n_present": k,
        "share": k / n if n else None,
        "interval": ci,
        "always_share": s.always_share,
        "n_checkpoints": len(points),
    }
    if not n:
        b.update(supported=False, verdict="not applicable: no item was recovered at any checkpoint; not supported")
        return b
    sup = ci[0] >= s.always_share
    b.update(
        supported=bool(sup),
        verdict=(
            f"{'supported' if sup else 'not supported'}: {k} of {n} recovered items ({fmt(100 * k / n, 0)}%) are present "
            f"by some probe, 95% interval [{fmt(ci[0])}, {fmt(ci[1])}] (needs its lower end >= {s.always_share:g}; "
            f"{len(points)} checkpoints, an item counts at each checkpoint it is recovered)"
        ),
    )
    return b


def checkpoint_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per measured trajectory checkpoint of a results dict (method, step, names, forget
    accuracy, utility, presence counts, the dilemma plot's recovery, finding 2 at that checkpoint),
    in method then step order; [] without trajectories.

    Example:
        >>> checkpoint_rows({"methods": {"ga": {"trajectory": {"measured": [{"step": 5, "names": ["end"]}]}}}})[0]["step"]
        5
    """
    analyses = results.get("analyses") or {}
    f2 = (analyses.get("finding2_checkpoints") or {}).get("per_method") or {}
    rec = {(r["method"], r["checkpoint"]): r for r in (analyses.get("dilemma") or {}).get("recovery") or []}
    rows = []
    for m, r in (results.get("methods") or {}).items():
        for c in (r.get("trajectory") or {}).get("measured") or []:
            counts = (c.get("presence") or {}).get("counts") or {}
            verdict = (f2.get(m) or {}).get(f"step_{c['step']}") or {}
            best = rec.get((m, f"step {c['step']}")) or {}
            ev = c.get("evaluate") or {}
            rows.append(
                {
                    "method": m,
                    "step": c["step"],
                    "names": list(c.get("names") or []),
                    "monitor_forget_accuracy": c.get("monitor_forget_accuracy"),
                    "forget_accuracy": _metric(ev, "forget", "accuracy"),
                    "retain_rouge": _metric(ev, "retain", "rouge_l_recall"),
                    "general_accuracy": general_score(ev),
                    "utility": c.get("utility"),
                    "utility_drop": c.get("utility_drop"),
                    "model_utility": c.get("model_utility"),
                    "known": counts.get("known"),
                    "hidden": counts.get("hidden"),
                    "erased": counts.get("erased"),
                    "recovery_setting": best.get("setting"),
                    "recovery_n": best.get("n"),
                    "recovery_keyword": best.get("keyword"),
                    "recovery_placebo": best.get("placebo"),
                    "finding2": verdict.get("verdict"),
                    "finding2_supported": verdict.get("supported"),
                }
            )
    return rows


def _metric(ev: Mapping[str, Any], group: str, name: str) -> Any:
    """``ev[group][name]``, None where either is missing."""
    split = ev.get(group)
    return split.get(name) if isinstance(split, Mapping) else None


__all__ = [
    "DilemmaSettings",
    "checkpoint_point",
    "checkpoint_rows",
    "dilemma_verdict",
    "finding2_by_checkpoint",
    "finding2_verdict",
    "recovered_ids",
]
