"""The study's analyses from its per-method stage results (what :mod:`unpact.pipeline` and
:mod:`unpact.grid` call): the four findings, gated by the precondition that the original model
knows the forget set. Each analysis is a function registered by name in :data:`ANALYSES`
(:func:`register_analysis`), with its renderer (:mod:`unpact.analyses.render`): :func:`run_analyses`
runs them in order, and the report shows each through its renderer.

Example:
    >>> forget_precondition({"forget": {"accuracy": 0.0}}, 0.5, 0.9)["holds"]
    False
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unpact.analyses.collapse import collapse_analysis
from unpact.analyses.dilemma import (
    checkpoint_point,
    dilemma_verdict,
    finding2_by_checkpoint,
    finding2_verdict,
    recovered_ids,
)
from unpact.analyses.keyword_focus import keyword_focus
from unpact.analyses.layer_head import layer_head_analysis
from unpact.analyses.presence_call import calibrated_call, net_hidden
from unpact.analyses.recovery import recovery_analysis
from unpact.analyses.render import (
    Rendered,  # noqa: F401 (re-exported: what a renderer returns)
    Renderer,
    render_collapse,
    render_finding2,
    render_keyword_focus,
    render_layer_head,
    render_presence,
    render_recovery,
    render_trajectory,
)
from unpact.emphasis.table import RecoveryTable
from unpact.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from unpact.emphasis.table import RecoveryTable


def forget_precondition(orig_eval: dict[str, Any], min_accuracy: float, threshold: float) -> dict[str, Any]:
    """Does the original model know the forget set? (the precondition of every verdict)

    ``holds`` is True when the original answers at least ``min_accuracy`` of the forget
    items right (ROUGE-L recall >= ``threshold``; the MC accuracy for multiple-choice items).
    """
    f = orig_eval.get("forget") or {}
    acc = f.get("accuracy", f.get("mc_accuracy"))
    out: dict[str, Any] = {"forget_accuracy": acc, "min_forget_accuracy": min_accuracy, "threshold": threshold}
    if acc is None:
        out.update(holds=None, reason="the original model's forget accuracy was not measured")
        return out
    out["holds"] = acc >= min_accuracy
    out["reason"] = (
        f"the original model answers {100 * acc:.0f}% of the forget items right (ROUGE-L recall >= {threshold:g}), "
        f"{'at least' if out['holds'] else 'below'} min_forget_accuracy = {100 * min_accuracy:.0f}%"
        + (
            ""
            if out["holds"]
            else ": it does not know the forget set, so there is nothing to unlearn and no verdict applies"
        )
    )
    return out


def not_applicable(analyses: dict[str, Any], reason: str) -> dict[str, Any]:
    """Every verdict in ``analyses`` replaced by "not applicable" with ``reason`` (numbers kept)."""
    na = f"not applicable: {reason}"
    for name, a in analyses.items():
        if name in ("keyword_focus", "keyword_focus_null"):
            for r in a.values():
                r["verdict"], r["holds"] = na, None
        elif isinstance(a, dict) and "verdict" in a:
            a["verdict"] = na
            if "holds" in a:
                a["holds"] = None
            # the dilemma's two parts and finding 2 at each checkpoint are verdicts too
            inner = [a[k] for k in ("erasure_costs_utility", "recoverable_is_present") if isinstance(a.get(k), dict)]
            inner += [v for cps in (a.get("per_method") or {}).values() for v in cps.values()]
            inner += list((a.get("per_model") or {}).values())  # finding 2 with the placebo, per model
            for v in (a, *inner):
                if "supported" in v:
                    v["verdict"], v["supported"] = na, None
            if "n_supported" in a:
                a["n_supported"] = None
    return analyses


def recovery_numbers(table: RecoveryTable) -> dict[str, Any]:
    """What :func:`~unpact.analyses.recovery.recovery_analysis` reads of one method's recovery table:
    each kind's best rate and collapse flag, and how many forget items the unlearned model got
    wrong (the rates' denominator; None without any setting)."""
    rows = table.rows()
    return {
        "prompt_best": table.prompt_best,
        "activation_best": table.activation_best,
        "prompt_collapse": table.prompt_collapse,
        "activation_collapse": table.activation_collapse,
        "n_forgotten": rows[0].n_forgotten if rows else None,
    }


def control_items(tracking: dict[str, Any]) -> list[dict[str, Any]]:
    """The tracked retain and general items (the collapse analysis' control prompts)."""
    return [
        {"before": d["before"], "after": d["after"], "special": d["special"], "tokens": d["tokens"]}
        for d in tracking["loo"]["items"]
        if d["group"] in ("retain", "general")
    ]


def presence_analysis(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Per method: of the forget items it no longer answers, how many a probe still finds (hidden)
    and how many none finds (erased), with each probe's calibration on the controls, and the
    combined call's own calibration (:mod:`unpact.analyses.presence_call`): its false-hidden rate
    on the negative control, its sensitivity on the positive one, the hidden count net of the
    false alarms to expect, and whether the call clears its bar.

    The verdict is descriptive (a count, not a test): "hidden" is only as trustworthy as the
    call's sensitivity on the positive control, "erased" as its specificity on the negative one;
    both are printed beside it, and a call whose false-hidden rate does not clear its bar says so.
    """
    cal = controls.get("calibration") or {}
    calls: dict[tuple[str, ...], dict[str, Any]] = {}
    per = {}
    for m, r in methods.items():
        p = r.get("presence")
        if not p:
            continue
        c = p["counts"]
        forgotten = c["hidden"] + c["erased"]
        use = tuple(p.get("probes_used") or [])
        if use not in calls:
            calls[use] = calibrated_call(controls, use)
        call = calls[use]
        per[m] = {
            "counts": c,
            "n_forgotten": forgotten,
            "share_hidden_of_forgotten": p.get("share_hidden_of_forgotten"),
            "share_present": p.get("share_present"),
            "probes_used": p.get("probes_used"),
            "probes_left_out": p.get("probes_left_out"),
            "net_hidden": net_hidden(c["hidden"], forgotten, call["false_hidden"] or {}),
            "chance_hidden": p.get("chance_hidden"),
            "call_decides": call["decides"],
        }
    return {
        "methods": per,
        "calibration": cal,
        "calls": [dict(v) for v in calls.values()],
        "verdict": _presence_verdict(per, cal, calls),
        "positive_hidden": len(controls.get("positive_hidden_ids") or []),
        "positive_items": len(controls.get("positive_plain_recall") or []),
    }


def _presence_verdict(
    per: dict[str, dict[str, Any]], cal: dict[str, Any], calls: dict[tuple[str, ...], dict[str, Any]]
) -> str:
    lines = []
    for m, x in per.items():
        c, net = x["counts"], x["net_hidden"]
        net_txt = (
            ""
            if net is None
            else f"; net of false alarms {net['net']:.1f} [{net['interval'][0]:.1f}, {net['interval'][1]:.1f}]"
        )
        chance = x.get("chance_hidden") or {}
        if chance.get("n"):
            net_txt += f"; {chance['expected']:.1f} by answer-space chance over {chance['n']}"
        lines.append(
            f"{m}: {c['hidden']} hidden{net_txt}, {c['erased']} erased of {x['n_forgotten']} forgotten"
            f" (by {', '.join(x.get('probes_used') or []) or 'no probe'})"
        )
    cal_txt = "; ".join(
        f"{k}: sensitivity {v['sensitivity']:.2f} (n={v['n_positive']}), specificity {v['specificity']:.2f} (n={v['n_negative']})"
        for k, v in cal.items()
        if v.get("sensitivity") is not None and v.get("specificity") is not None
    )
    call_txt = "; ".join(f"the call by {', '.join(use) or 'no probe'}: {call['why']}" for use, call in calls.items())
    return (
        "; ".join(lines)
        + (
            f" — probes on the controls: {cal_txt}"
            if cal_txt
            else " — probes not calibrated (no positive or negative control)"
        )
        + (f" — {call_txt}" if call_txt else "")
    )


def trajectory_points(methods: dict[str, dict]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The dilemma's points (:func:`unpact.analyses.dilemma.checkpoint_point`) and the dilemma
    plot's recovery rows from every method's measured trajectory checkpoints.

    A checkpoint stands in the stratum of each forget-accuracy target it crossed (one point per
    target; a step that crossed two targets at once is the first checkpoint below both), and a
    step mark or the end alone is a point without a stratum. Its recovered items count once
    (on its first point), so the dilemma's part (b) does not count a step twice. ``utility`` is
    :func:`unpact.results.utility_score` (the quantity whose drop is ``utility_drop``).
    """
    points, recovery = [], []
    for m, r in methods.items():
        for c in (r.get("trajectory") or {}).get("measured") or []:
            pres = c.get("presence") or {}
            ctrl = c.get("controlled")
            rec = [str(i) for i in recovered_ids(ctrl)] if ctrl else []
            targets = [n for n in c["names"] if n.startswith("forget_below_")]
            f = (c.get("evaluate") or {}).get("forget") or {}
            for k, stratum in enumerate(targets or [None]):
                points.append(
                    checkpoint_point(
                        m,
                        "+".join(c["names"]),
                        pres.get("calls") or [],
                        pres.get("ids") or [],
                        utility_drop=c.get("utility_drop"),
                        forget_accuracy=f.get("accuracy"),
                        utility=c.get("utility"),
                        step=c["step"],
                        stratum=stratum,
                        recovered=rec if k == 0 else (),
                    )
                )
            if ctrl:
                summ = ctrl["summary"]
                # the setting with the most paired eligible items at the headline threshold (ties: the first)
                best = max(
                    summ["settings"],
                    key=lambda n: summ["settings"][n]["binary"][f"{summ['threshold']:g}"]["paired"]["n"],
                    default=None,
                )
                if best is not None:
                    b = summ["settings"][best]["binary"][f"{summ['threshold']:g}"]["paired"]
                    recovery.append(
                        {
                            "method": m,
                            "checkpoint": f"step {c['step']}",
                            "setting": best,
                            "n": b["n"],
                            "keyword": b["keyword_rate"],
                            "placebo": b["placebo_rate"],
                        }
                    )
    return points, recovery


def trajectory_analyses(methods: dict[str, dict]) -> dict[str, Any]:
    """Finding 2 at every checkpoint and the dilemma across all methods' checkpoints
    (:mod:`unpact.analyses.dilemma`), from the trajectory stages' measurements; {} without any."""
    if not any((r.get("trajectory") or {}).get("measured") for r in methods.values()):
        return {}
    points, recovery = trajectory_points(methods)
    out: dict[str, Any] = {"dilemma": {**dilemma_verdict(points), "points": points, "recovery": recovery}}
    controlled = {
        m: {f"step_{c['step']}": c["controlled"] for c in r["trajectory"]["measured"] if c.get("controlled")}
        for m, r in methods.items()
        if (r.get("trajectory") or {}).get("measured")
    }
    controlled = {m: cps for m, cps in controlled.items() if cps}
    if controlled:
        out["finding2_checkpoints"] = finding2_by_checkpoint(controlled)
    return out


def focus_rows(tracking: dict[str, Any], group: str | None = None) -> list[dict[str, Any]]:
    """The tracked items (of ``group``; all when None) as finding 1 reads them: id, group, the
    contributions before and after, the special-token mask and the KeyTokens mask.

    Example:
        >>> focus_rows({"loo": {"items": [{"item_id": "a", "group": "forget", "before": [0.0, 0.5], "after": [0.0, 0.1],
        ...                                "special": [True, False], "key_tokens": [1]}]}})[0]["key"]
        [False, True]
    """
    return [
        {
            "id": d["item_id"],
            "group": d["group"],
            "before": d["before"],
            "after": d["after"],
            "special": d["special"],
            "key": [i in key for i in range(len(d["before"]))],
        }
        for d in tracking["loo"]["items"]
        if group is None or d["group"] == group
        for key in [set(d["key_tokens"])]
    ]


def keyword_null_verdicts(methods: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Finding 1 against the damage-matched nulls, per method whose ``keyword_nulls`` stage ran.

    A method whose nulls could not be matched to its damage (the stage's ``message``) gets
    "not applicable": the per-item sign test alone says "supported" for random weight noise
    too, so it cannot carry the finding.

    Example:
        >>> keyword_null_verdicts({"ga": {"keyword_nulls": {"test": None, "message": "noise too weak"}}})["ga"]["verdict"][:45]
        'not applicable: no damage-matched null (noise'
    """
    nulls: dict[str, dict[str, Any]] = {}
    for m, r in methods.items():
        kn = r.get("keyword_nulls") or {}
        if kn.get("test"):
            nulls[m] = kn["test"]
        elif kn:
            nulls[m] = {
                "verdict": f"not applicable: no damage-matched null ({kn.get('message')}); without one a "
                "KeyTokens loss cannot be told apart from damage (presence.null_max_scale sets "
                "the largest noise tried)",
                "supported": False,
                "n_null_draws": 0,
                "statistic": None,
                "p_value": None,
                "interval": None,
            }
    return nulls


#: The function of a named analysis: ``fn(methods, controls) -> sections`` adds its sections to
#: the study's ``analyses`` ({} where it does not apply). ``methods``: each method's stage results;
#: ``controls``: the study's once-per-study results (``{"presence": <controls/presence>}``).
AnalysisFn = Callable[[dict[str, dict], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Analysis:
    """A registered analysis: its name, what it computes (``run``, an :data:`AnalysisFn`) and how
    it shows in the report (``render``, a :data:`~unpact.analyses.render.Renderer`; None: it
    does not show)."""

    name: str
    run: AnalysisFn
    render: Renderer | None = None


#: The analyses, run in registration order by :func:`run_analyses` and rendered in that order by
#: the report; add one with :func:`register_analysis`.
ANALYSES: Registry[Analysis] = Registry("analysis")


def register_analysis(name: str, render: Renderer | None = None) -> Callable[[AnalysisFn], AnalysisFn]:
    """Register ``fn(methods, controls) -> sections`` as analysis ``name`` (a decorator), with
    ``render(analyses, results) -> Rendered`` (:mod:`unpact.analyses.render`), its part of the report."""

    def deco(fn: AnalysisFn) -> AnalysisFn:
        ANALYSES.add(name, Analysis(name, fn, render))
        return fn

    return deco


def get_analysis(name: str) -> Analysis:
    """The registered analysis ``name``; an unknown name is a :class:`ConfigError` listing the known ones.

    Example:
        >>> get_analysis("vibes")
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown analysis 'vibes'; known: keyword_focus, recovery, collapse, layer_head, keyword_focus_null, presence, finding2, trajectory
    """
    return ANALYSES.get(name)


@register_analysis("keyword_focus", render=render_keyword_focus)
def _keyword_focus(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 1 per method: KeyTokens lose more contribution than the other tokens (sign test)."""
    return {"keyword_focus": {m: keyword_focus(focus_rows(r["tracking"])) for m, r in methods.items()}}


@register_analysis("recovery", render=render_recovery)
def _recovery(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 2: emphasis brings answers back (prompt rewrite vs activation scaling)."""
    return {
        "recovery": recovery_analysis(
            {m: recovery_numbers(RecoveryTable.from_dict(r["recovery"])) for m, r in methods.items()}
        )
    }


@register_analysis("collapse", render=render_collapse)
def _collapse(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 3: indiscriminate contribution drops on the control prompts go with lost utility."""
    return {
        "collapse": collapse_analysis(
            {
                m: {"utility_drop": r["collapse"]["utility_drop"], "items": control_items(r["tracking"])}
                for m, r in methods.items()
            }
        )
    }


@register_analysis("layer_head", render=render_layer_head)
def _layer_head(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Where in the network the contribution changed."""
    return {
        "layer_head": layer_head_analysis(
            {
                m: {"layer_delta": r["tracking"].get("layer_delta"), "head_delta": r["tracking"].get("head_delta")}
                for m, r in methods.items()
            }
        )
    }


@register_analysis("keyword_focus_null")
def _keyword_focus_null(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 1 against the damage-matched weight-noise nulls (the ``keyword_nulls`` stage)."""
    nulls = keyword_null_verdicts(methods)
    return {"keyword_focus_null": nulls} if nulls else {}


@register_analysis("presence", render=render_presence)
def _presence(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Hidden vs erased per method (the ``presence`` stage), with the probes' calibration."""
    if not any("presence" in r for r in methods.values()):
        return {}
    return {"presence": presence_analysis(methods, controls.get("presence") or {})}


@register_analysis("finding2", render=render_finding2)
def _finding2(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 2 with the placebo, per unlearned (or audited) model: keyword-specific recovery
    (the ``controlled`` stage; :func:`unpact.analyses.dilemma.finding2_verdict`)."""
    per = {m: finding2_verdict(r["controlled"]) for m, r in methods.items() if r.get("controlled")}
    if not per:
        return {}
    yes = [m for m, v in per.items() if v["supported"]]
    na = all(str(v["verdict"]).startswith("not applicable") for v in per.values())
    outcome = "supported" if yes else "not applicable" if na else "not supported"
    return {
        "finding2": {
            "per_model": per,
            "n_models": len(per),
            "n_supported": len(yes),
            "verdict": (
                f"{outcome}: keyword emphasis recovered more than "
                f"the placebo in {len(yes)} of {len(per)} models"
                + (f" ({', '.join(yes)})" if yes else "")
                + "; "
                + "; ".join(f"{m}: {v['verdict']}" for m, v in per.items())
            ),
        }
    }


@register_analysis("trajectory", render=render_trajectory)
def _trajectory(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Finding 2 at every checkpoint and the dilemma (:func:`trajectory_analyses`)."""
    return trajectory_analyses(methods)


def run_analyses(
    methods: dict[str, dict],
    precondition: dict[str, Any] | None = None,
    presence: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The registered analyses (:data:`ANALYSES`, or those ``names``) over the methods' stage
    results; with a failed ``precondition`` (see :func:`forget_precondition`) every verdict is
    "not applicable" and says why. ``presence``: the probes' controls (``controls/presence``),
    for the presence analysis."""
    controls = {"presence": presence}
    out: dict[str, Any] = {}
    for name in ANALYSES if names is None else names:
        out.update(get_analysis(name).run(methods, controls))
    if precondition is not None:
        if precondition.get("holds") is False:
            # a copy: the analyses hold some stage results by reference, and those stay as computed
            out = not_applicable(copy.deepcopy(out), precondition["reason"])
        out["precondition"] = precondition
    return out
