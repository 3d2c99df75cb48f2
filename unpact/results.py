"""``results.json``: the typed, versioned results of a run, and the numbers derived from its stages.

:class:`StudyResults` is what :func:`unpact.pipeline.run_study` writes (``to_dict``) and what
``unpact report`` reads back (``from_dict``); :data:`SCHEMA_VERSION` says which layout a file
holds. The summary rows, the route rows and the report's token-heatmap examples are built
here from the stage results, so the pipeline only runs stages.

Example:
    >>> r = StudyResults.from_dict({"schema_version": SCHEMA_VERSION, "config": {"model": "m"}})
    >>> r.config["model"], r.to_dict()["schema_version"] == SCHEMA_VERSION
    ('m', True)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unpact import __version__
from unpact.analyses.dilemma import checkpoint_rows  # noqa: F401 (re-exported: scripts read it here)
from unpact.attribution import Attribution, key_tokens
from unpact.emphasis.table import BestSetting, RecoveryTable
from unpact.errors import DataError
from unpact.metrics import general_score, tofu_model_utility, utility_components

if TYPE_CHECKING:  # pragma: no cover
    from unpact.config import RunConfig
    from unpact.emphasis.table import RecoveryTable

GROUPS = ("forget", "retain", "general")

#: The layout of results.json. 1: the first versioned layout (files without the key are read
#: as 0: the same keys, written before the version existed).
SCHEMA_VERSION = 1


@dataclass
class StudyResults:
    """Every number of one run (the sections of ``results.json``)."""

    config: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)
    original: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    analyses: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    unpact_version: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), "unpact_version": d.pop("unpact_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyResults:
        """Read a results dict back; a newer layout or unknown sections are errors that say so."""
        version = d.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise DataError(
                f"results.json has schema_version {version!r}, newer than this unpact's "
                f"({SCHEMA_VERSION}); read it with the unpact that wrote it ({d.get('unpact_version')})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"results.json holds unknown sections {', '.join(unknown)} (schema_version {version})")
        return cls(**{**d, "schema_version": version})


def load_results(run_dir: str | os.PathLike) -> StudyResults:
    """The :class:`StudyResults` of the finished run in ``run_dir``."""
    p = Path(run_dir) / "results.json"
    if not p.is_file():
        raise DataError(
            f"{str(p)!r} does not exist; the run is not finished: rerun `unpact run` with the same --out to complete it"
        )
    with open(p, encoding="utf-8") as f:
        return StudyResults.from_dict(json.load(f))


# ------------------------------------------------------------------ numbers


def _get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def model_utility_of(ev: dict[str, Any]) -> float | None:
    """Model utility (TOFU's harmonic mean) from the retain and general evaluations: on the
    embedded world the analogue of TOFU's 9 numbers (retain probability, ROUGE-L recall and
    truth-ratio score, general probability and ROUGE-L recall: 5 numbers)."""
    splits = [ev[g] for g in ("retain", "general") if isinstance(ev.get(g), dict) and "rouge_l_recall" in ev[g]]
    if not splits:
        return None
    try:
        return float(tofu_model_utility(*splits))
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def model_utility_components_of(ev: dict[str, Any]) -> list[str]:
    """The names of the numbers :func:`model_utility_of` averages (``"retain.prob"``, ...): 9 with
    TOFU's retain, real-authors and world-facts splits; on the embedded world the analogue."""
    names = [g for g in ("retain", "general") if isinstance(ev.get(g), dict) and "rouge_l_recall" in ev[g]]
    try:
        return list(utility_components(*[ev[g] for g in names], names=names))
    except KeyError:
        return []


def utility_degenerate(ev: dict[str, Any]) -> str | None:
    """Why TOFU's model utility of ``ev`` carries no information, or None.

    The utility is a harmonic mean: one component at 0 (e.g. a truth-ratio score of 0,
    as on a world whose perturbed answers the model always prefers) makes it 0 whatever
    the others are. Such a 0 is marked in the report instead of printed as a measurement.

    Example:
        >>> utility_degenerate({"retain": {"rouge_l_recall": 0.8, "prob": 0.5, "truth_ratio": 0.0}})
        'retain truth_ratio is 0'
    """
    zero = []
    for g in ("retain", "general"):
        r = ev.get(g)
        if not isinstance(r, dict) or "rouge_l_recall" not in r:
            continue
        prob_key = "prob_normalised" if r.get("tofu_role") == "other" and "prob_normalised" in r else "prob"
        for k in (prob_key, "rouge_l_recall", "truth_ratio"):
            v = r.get(k)
            if v is not None and v <= 0:
                zero.append(f"{g} {k} is 0")
    return ", ".join(zero) or None


def utility_score(ev: dict[str, Any]) -> float | None:
    """Mean of retain ROUGE-L recall and general accuracy: the utility whose drop is :func:`utility_drop`.

    Example:
        >>> utility_score({"retain": {"rouge_l_recall": 0.8}, "general": {"accuracy": 0.6}})
        0.7
    """
    vals = [v for v in (_get(ev, "retain", "rouge_l_recall"), general_score(ev)) if v is not None]
    return sum(vals) / len(vals) if vals else None


def utility_drop(orig: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Mean drop of retain ROUGE-L and general accuracy (original - unlearned)."""
    drops = []
    for a, b in (
        (_get(orig, "retain", "rouge_l_recall"), _get(after, "retain", "rouge_l_recall")),
        (general_score(orig), general_score(after)),
    ):
        if a is not None and b is not None:
            drops.append(a - b)
    return sum(drops) / len(drops) if drops else None


def recovery_table(method_results: dict[str, Any]) -> RecoveryTable | None:
    """The :class:`~unpact.emphasis.RecoveryTable` of one method's stage results (None without one)."""
    rec = method_results.get("recovery")
    return RecoveryTable.from_dict(rec) if rec else None


# ------------------------------------------------------------------ sections


def summary_rows(orig_eval: dict, methods: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per model (the original, then each method): the headline numbers."""

    def row(name: str, ev: dict, rec: RecoveryTable | None) -> dict[str, Any]:
        return {
            "method": name,
            "forget_rouge": _get(ev, "forget", "rouge_l_recall"),
            "retain_rouge": _get(ev, "retain", "rouge_l_recall"),
            "general_accuracy": general_score(ev),
            "forget_quality": _get(ev, "forget", "forget_quality"),
            # open-unlearning's and MUSE's checkpoint evaluations on the forget items (None where not computed)
            "forget_mia_min_k_auc": _get(ev, "forget", "mia_min_k_auc"),
            "privleak": _get(ev, "forget", "privleak"),
            "forget_exact_memorization": _get(ev, "forget", "exact_memorization"),
            "forget_extraction_strength": _get(ev, "forget", "extraction_strength"),
            "model_utility": model_utility_of(ev),
            "model_utility_components": model_utility_components_of(ev),
            "recovery_prompt": None if rec is None else rec.prompt_best,
            "recovery_activation": None if rec is None else rec.activation_best,
            "model_utility_degenerate": utility_degenerate(ev),
            "n_items": {g: len(_get(ev, g, "rouge_l_recall_per_item", default=[]) or []) for g in GROUPS},
        }

    rows = [row("original", orig_eval, None)]
    rows += [row(m, r["evaluate"], recovery_table(r)) for m, r in methods.items()]
    return rows


def examples(
    orig_attr: dict, methods: dict[str, dict], keytokens: dict[str, Any] | None = None, k: int = 3
) -> list[dict[str, Any]]:
    """Selected forget items with token heatmap views: original, after each method, under emphasis.

    The keyword marks are the original model's KeyTokens under ``keytokens`` (the run's
    :class:`~unpact.attribution.KeyTokensConfig` as a dict), the rule tracking used.
    """
    out = []
    for idx, d in enumerate(orig_attr["loo"].get("forget", [])[:k]):
        keys = set(key_tokens(Attribution.from_dict(d), **(keytokens or {})))
        key = [i in keys for i in range(len(d["tokens"]))]
        views = [{"label": "original model", "tokens": d["tokens"], "scores": d["scores"], "key": key}]
        for m, r in methods.items():
            after = r["attribution"]["loo"]["forget"][idx]
            views.append(
                {"label": f"{m}: after unlearning", "tokens": after["tokens"], "scores": after["scores"], "key": key}
            )
            rec = recovery_table(r)
            ex = (rec.rewrite_attributions if rec is not None else None) or []
            if idx < len(ex):
                e = ex[idx]
                kp = set(e.get("keyword_positions", []))
                views.append(
                    {
                        "label": f"{m}: emphasis '{e.get('template')}'",
                        "tokens": e["tokens"],
                        "scores": e["scores"],
                        "key": [i in kp for i in range(len(e["tokens"]))],
                    }
                )
        out.append({"item_id": d["item_id"], "question": d["prompt"], "answer": d["answer"], "views": views})
    return out


def route_rows(methods: dict[str, dict]) -> list[dict[str, Any]]:
    """Per method and recovery route: the best setting's raw rate and, for attacks, the rate beyond controls.

    Emphasis rows carry the emphasis table's best rates (controls: collapse of retain/general,
    no negative control yet); attack rows their best setting by the controlled rate.
    """
    rows = []
    for m, r in methods.items():
        rec = recovery_table(r)
        for kind in ("prompt", "activation"):
            best = rec.best(kind) if rec is not None else BestSetting(None, None, False, None)
            rows.append(
                {
                    "method": m,
                    "route": f"{kind} emphasis",
                    "setting": best.name,
                    "raw_rate": best.rate,
                    "controlled_rate": None,
                    "n_recovered": best.row.n_recovered if best.row else None,
                    "n_forgotten": best.row.n_forgotten if best.row else None,
                    "negative_control": False,
                }
            )
        for a, t in (r.get("attacks") or {}).items():
            best = t.get("best_setting") or next(iter(t.get("settings") or {}), None)
            row = (t.get("settings") or {}).get(best) or {}
            rows.append(
                {
                    "method": m,
                    "route": a,
                    "setting": best,
                    "raw_rate": row.get("forget_rate"),
                    "controlled_rate": row.get("controlled_rate"),
                    "n_recovered": row.get("n_recovered_beyond_controls"),
                    "n_forgotten": row.get("n_eligible"),
                    "negative_control": "negative" in (t.get("roles") or []),
                }
            )
    return rows


def assemble_results(
    cfg: RunConfig, info: dict, orig_eval: dict, orig_attr: dict, methods: dict[str, dict], analyses: dict
) -> StudyResults:
    """The run's :class:`StudyResults` from its stage results."""
    return StudyResults(
        unpact_version=__version__,
        config=cfg.to_dict(),
        model_info=info,
        summary=summary_rows(orig_eval, methods),
        original={"evaluate": orig_eval, "attribution": orig_attr},
        methods=methods,
        analyses=analyses,
        examples=examples(orig_attr, methods, dataclasses.asdict(cfg.attribution.keytokens)),
        routes=route_rows(methods),
    )


#: The matched-forgetting level at which the summary compares methods' trajectories: the first
#: checkpoint whose forget accuracy is below one half (a middle target: the method has forgotten
#: most of the set but not all, where hiding and erasing can still differ).
MATCHED_TARGET = 0.5


def matched_lines(results: dict[str, Any], target: float = MATCHED_TARGET) -> list[str]:
    """Per method with a trajectory: its checkpoint at matched forgetting (the first below ``target``)."""
    name = f"forget_below_{target:g}"
    rows = checkpoint_rows(results)
    out = []
    for m, r in (results.get("methods") or {}).items():
        traj = r.get("trajectory")
        if not traj:
            continue
        row = next((x for x in rows if x["method"] == m and name in x["names"]), None)
        if row is None:
            targets = (traj.get("result") or {}).get("settings", {}).get("targets") or []
            why = (
                f"forget accuracy never fell below {target:g} in {traj['result']['steps_run']} steps"
                if target in targets
                else f"{target:g} is not among trajectory.targets {targets}"
            )
            out.append(f"trajectory, {m}: {why}")
            continue

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        pres = (
            "" if row["hidden"] is None else f", hidden {row['hidden']} / erased {row['erased']} / known {row['known']}"
        )
        f2 = "" if row["finding2"] is None else f"; finding 2 there: {row['finding2'].split(':')[0]}"
        out.append(
            f"trajectory, {m}: monitored forget accuracy < {target:g} first at step {row['step']} "
            f"(monitor {f(row['monitor_forget_accuracy'])}; evaluated forget {f(row['forget_accuracy'])}, "
            f"utility {f(row['utility'])}, drop {f(row['utility_drop'])}"
            f"{pres}){f2}"
        )
    return out


def _summary_rows(summary: list[dict[str, Any]]) -> list[str]:
    """The header and one line per method of the summary table."""
    cols = [
        ("method", "method", 12),
        ("forget_rouge", "forget", 7),
        ("retain_rouge", "retain", 7),
        ("general_accuracy", "general", 8),
        ("forget_quality", "FQ", 9),
        ("recovery_prompt", "rec.prompt", 10),
        ("recovery_activation", "rec.act", 8),
        ("forget_mia_min_k_auc", "MIA.auc", 7),
        ("privleak", "privleak", 8),
        ("forget_exact_memorization", "EM", 6),
    ]
    lines = ["  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (_, h, w) in enumerate(cols))]
    for r in summary:
        cells = []
        for i, (k, _, w) in enumerate(cols):
            v = r.get(k)
            s = (
                "-"
                if v is None
                else (f"{v:.3g}" if k == "forget_quality" else f"{v:.1f}" if k == "privleak" else f"{v:.3f}")
                if isinstance(v, float)
                else str(v)
            )
            cells.append(f"{s:>{w}}" if i else f"{s:<{w}}")
        lines.append("  ".join(cells))
    return lines


def _verdict_lines(results: dict[str, Any]) -> list[str]:
    """The analyses' verdicts under the summary table, one line each."""
    an = results.get("analyses", {})
    lines: list[str] = []
    for name in ("recovery", "finding2", "collapse", "layer_head", "presence"):
        if an.get(name, {}).get("verdict"):
            lines.append(f"{name}: {an[name]['verdict']}")
    lines += matched_lines(results)
    for name in ("finding2_checkpoints", "dilemma"):
        if an.get(name, {}).get("verdict"):
            lines.append(f"{name}: {an[name]['verdict']}")
    nulls = an.get("keyword_focus_null", {})
    for m, r in an.get("keyword_focus", {}).items():
        if m in nulls:  # finding 1's verdict is the one against the damage-matched nulls
            lines.append(f"keyword focus, {m}: {nulls[m]['verdict']} (sign test alone: {r['verdict']})")
        else:
            lines.append(f"keyword focus, {m}: {r['verdict']}")
    return lines


def summary_table(results: dict[str, Any]) -> str:
    """The per-method summary as a plain-text table (what ``unpact run`` prints at the end)."""
    lines = _summary_rows(results["summary"])
    counts = (results["summary"][0].get("n_items") or {}) if results["summary"] else {}
    if any(counts.values()):
        lines.append(
            "(on " + ", ".join(f"{n} {g}" for g, n in counts.items() if n) + " items: at most max_items per group; "
            "`unpact unlearn` evaluates every item of a split, so its numbers differ)"
        )
    pre = results.get("analyses", {}).get("precondition") or {}
    if pre.get("holds") is False:  # said first: no number below supports a verdict
        lines.insert(0, f"not applicable: {pre['reason']}\n")
    if results["summary"] and all(r.get("forget_quality") is None for r in results["summary"]):
        config = results.get("config") or {}
        why = (
            "no retain-only reference model (reference_model is none)"
            if not config.get("reference_model")
            else "not computed"
        )
        lines.append(
            f"FQ: not applicable: {why}; TOFU's forget quality compares truth ratios with a model "
            "that never saw the forget set"
        )
    lines.append("")
    lines += _verdict_lines(results)
    return "\n".join(lines)
