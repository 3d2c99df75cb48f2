"""How each analysis shows in the report: one renderer per registered analysis.

A renderer is ``render(analyses, results) -> Rendered``: ``analyses`` is results.json's
``analyses`` (the sections every analysis wrote; a renderer reads its own, and may read
another's, as finding 1's reads the damage-matched nulls), ``results`` the whole results dict
(the settings under ``config``, the per-model stage results under ``methods``). The report
(:func:`unpact.report.build_report`) calls the renderer of every registered analysis, in
registration order, and puts each part of the :class:`Rendered` where it belongs, so an
analysis shows in the report without the report naming it.

Example:
    >>> part = render_recovery({"recovery": {"verdict": "supported: 3 of 4"}}, {})
    >>> part.headlines, part.verdicts
    ([('Finding 2: recovery', 'supported: 3 of 4')], "<h3>Finding 2 — emphasis recovery</h3><div class='verdict'>supported: 3 of 4</div>")
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unpact.analyses.dilemma import checkpoint_rows
from unpact.figures import collapse_png, data_uri, dilemma_png, report_table_html


@dataclass
class Rendered:
    """What one analysis adds to the report; every part may be left empty.

    * ``headlines``: (title, verdict) pairs, each one line on the report's first screen;
    * ``figure``: an HTML ``<figure>`` for the first screen (the first analysis that gives one
      stands in for the report's recovery figure);
    * ``verdicts``: HTML in the report's *Analyses* section (the verdicts in full);
    * ``section``: a ``<section>`` of its own, after the report's recovery sections;
    * ``figures``: PNG files (name -> bytes) written beside the report, in ``figures/``.
    """

    headlines: list[tuple[str, str]] = field(default_factory=list)
    figure: str = ""
    verdicts: str = ""
    section: str = ""
    figures: dict[str, bytes] = field(default_factory=dict)


#: ``render(analyses, results) -> Rendered``: how one analysis shows in the report.
Renderer = Callable[[dict[str, Any], dict[str, Any]], Rendered]


def headline(title: str, section: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``[(title, verdict)]`` when ``section`` has a verdict, else ``[]``."""
    verdict = (section or {}).get("verdict")
    return [(title, verdict)] if verdict else []


def verdict_block(title: str, section: dict[str, Any]) -> str:
    """A verdict in full under its title (an empty box when the analysis did not run)."""
    return f"<h3>{title}</h3><div class='verdict'>{html.escape(section.get('verdict', ''))}</div>"


def render_keyword_focus(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Finding 1 per method: the verdict against the damage-matched nulls where they ran, else the sign test's."""
    focus = analyses.get("keyword_focus", {})
    nulls = analyses.get("keyword_focus_null") or {}
    headlines = []
    for method, r in (analyses.get("keyword_focus") or {}).items():
        verdict = (nulls.get(method) or {}).get("verdict") or r.get("verdict")
        if verdict:
            headlines.append((f"Finding 1: keyword focus, {method}", verdict))
    blocks = "".join(
        f"<div class='verdict'><b>{html.escape(method)}</b>: "
        + (
            f"{html.escape(nulls[method].get('verdict', ''))} <span class='lbl'>(against "
            f"{nulls[method].get('n_null_draws')} damage-matched weight-noise nulls; the sign test alone: "
            f"{html.escape(r.get('verdict', ''))})</span>"
            if method in nulls
            else html.escape(r.get("verdict", ""))
        )
        + "</div>"
        for method, r in focus.items()
    )
    return Rendered(headlines=headlines, verdicts=f"<h3>Finding 1 — keyword focus</h3>{blocks}")


def render_recovery(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Finding 2: emphasis brings answers back."""
    return Rendered(
        headlines=headline("Finding 2: recovery", analyses.get("recovery")),
        verdicts=verdict_block("Finding 2 — emphasis recovery", analyses.get("recovery", {})),
    )


def render_finding2(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Finding 2 with the placebo, per model."""
    return Rendered(
        headlines=headline("Finding 2: keyword vs placebo", analyses.get("finding2")),
        verdicts=verdict_block("Finding 2 — keyword vs placebo emphasis", analyses.get("finding2", {})),
    )


def render_layer_head(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Where in the network the contribution changed."""
    return Rendered(
        headlines=headline("Layers and heads", analyses.get("layer_head")),
        verdicts=verdict_block("Where it changed — layers and heads", analyses.get("layer_head", {})),
    )


def render_collapse(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Finding 3: its verdict, and a section with the collapse plot and one row per method."""
    collapse = analyses.get("collapse", {})
    png = collapse_png(collapse)
    rows = [
        [
            m,
            r.get("share_tokens_fell"),
            r.get("share_function_words_fell"),
            r.get("drop_concentration_gini"),
            r.get("utility_drop"),
        ]
        for m, r in collapse.get("methods", {}).items()
    ]
    section = (
        '<section id="collapse"><h2>Collapse analysis</h2>'
        f"<figure><img alt='collapse plot' src='{data_uri(png)}'></figure>"
        + report_table_html(["method", "tokens fell", "function words fell", "drop Gini", "utility drop"], rows)
        + "</section>"
    )
    return Rendered(
        headlines=headline("Finding 3: collapse", analyses.get("collapse")),
        verdicts=verdict_block("Finding 3 — collapse", collapse),
        section=section,
        figures={"collapse.png": png},
    )


PRESENCE_TEXT = (
    "<p>Is a forgotten fact still in the model? Per forget item: <em>known</em> (the plain prompt "
    "answers it), <em>hidden</em> (the plain prompt misses it, some probe finds it) or <em>erased</em> "
    "(no probe finds it). Probes: the fact asked in another trained format (<code>format</code>), the "
    "true answer against the perturbed ones (<code>choice</code>), the fact token read from the residual "
    "stream at each layer (<code>logit_lens</code>); the columns on the right are the share of items each "
    "probe finds. Only probes whose specificity on the negative control is at least "
    "{min_specificity} make the hidden / erased "
    "call (the others are shown, not counted). Each probe is calibrated on a model known to hide the facts "
    "(sensitivity: the original "
    "fine-tuned to refuse the plain questions; it hid {hidden} of "
    "{items} items) and on one that never had them (specificity: the retain-only "
    "model).</p>"
)


def render_presence(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Hidden or erased: per method the presence calls and each probe's share, and the probes' calibration."""
    pres = analyses.get("presence") or {}
    out = Rendered(headlines=headline("Hidden or erased", analyses.get("presence")))
    if not pres.get("methods"):
        return out
    calibration = pres["calibration"]
    method_rows = [
        [
            m,
            x["counts"]["known"],
            x["counts"]["hidden"],
            _net_text(x.get("net_hidden")),
            _chance_text(x.get("chance_hidden")),
            x["counts"]["erased"],
            x["counts"]["unprobed"],
            ", ".join(x.get("probes_used") or []) or "–",
            *[(x.get("share_present") or {}).get(p) for p in sorted(calibration or x.get("share_present") or {})],
        ]
        for m, x in pres["methods"].items()
    ]
    probes = sorted(calibration or next(iter(pres["methods"].values())).get("share_present") or {})
    probe_rows = [
        [p, v.get("sensitivity"), v.get("n_positive"), v.get("specificity"), v.get("n_negative")]
        for p, v in (calibration or {}).items()
    ]
    min_specificity = ((results.get("config") or {}).get("presence") or {}).get("min_specificity", "")
    text = PRESENCE_TEXT.format(
        min_specificity=html.escape(str(min_specificity)),
        hidden=pres.get("positive_hidden"),
        items=pres.get("positive_items"),
    )
    out.section = (
        '<section id="presence"><h2>Knowledge presence</h2>'
        + text
        + report_table_html(
            [
                "method",
                "known",
                "hidden",
                "hidden net of false alarms",
                "hidden by answer-space chance",
                "erased",
                "unprobed",
                "probes in the call",
                *[f"{p} present" for p in probes],
            ],
            method_rows,
        )
        + _call_table(pres.get("calls") or [])
        + (
            report_table_html(["probe", "sensitivity", "n", "specificity", "n"], probe_rows)
            if probe_rows
            else "<p>No calibration: the run has no positive or negative control.</p>"
        )
        + "</section>"
    )
    return out


def _net_text(net: dict[str, Any] | None) -> str:
    return "–" if not net else f"{net['net']:.1f} [{net['interval'][0]:.1f}, {net['interval'][1]:.1f}]"


def _chance_text(chance: dict[str, Any] | None) -> str:
    """The hidden calls expected from guessing among each forgotten item's attribute's answers."""
    if not chance or not chance.get("n"):
        return "–"
    return f"{chance['expected']:.1f} of {chance['n']}"


def _share_text(share: dict[str, Any] | None, count_key: str) -> str:
    if not share or share.get("rate") is None:
        return "–"
    low, high = share["interval"]
    return f"{share['rate']:.2f} [{low:.2f}, {high:.2f}] ({share[count_key]} of {share['n']})"


def _call_table(calls: list[dict[str, Any]]) -> str:
    """The combined call (the union of the probes in it) on the controls, and whether it decides."""
    if not calls:
        return ""
    rows = [
        [
            ", ".join(c["probes"]) or "–",
            _share_text(c.get("false_hidden"), "n_false"),
            _share_text(c.get("sensitivity"), "n_found"),
            c["why"],
        ]
        for c in calls
    ]
    return (
        "<p>The call as a whole: an item is hidden when any probe in the call finds it, so the call's own "
        "false-hidden rate (the share of the negative control's items it finds) and sensitivity (the share "
        "of the positive control's hidden items it finds) are measured too; the hidden count net of false "
        "alarms subtracts that rate times the forgotten items. The answer-space chance is what a probe "
        "guessing among the distinct answers each forgotten item's attribute takes in the benchmark "
        "would find (1 / that number per item, summed; per item in the run's presence results).</p>"
        + report_table_html(
            [
                "probes in the call",
                "false-hidden rate [95%] (negative control)",
                "sensitivity [95%] (positive control)",
                "decides",
            ],
            rows,
        )
    )


TRAJECTORY_TEXT = (
    "<p>Each method run once on a gentle schedule, measured at step marks, at the first checked step "
    "whose monitored forget accuracy fell below each target, and at the end. Per checkpoint: forget "
    "accuracy on the evaluated items, utility (mean of retain ROUGE-L recall and general accuracy) and "
    "its drop from the original, the presence calls (known / hidden / erased), and controlled recovery: "
    "keyword vs placebo emphasis on the items eligible under both in the setting with the most such "
    "items (the original answers them under that emphasis, the checkpoint misses them plainly), and "
    "finding 2 at that checkpoint (keyword-specific gain against the original or the negative control, "
    "with intervals).</p>"
)

TRAJECTORY_COLUMNS = [
    "method",
    "step",
    "checkpoints",
    "monitor forget acc.",
    "forget acc.",
    "utility",
    "utility drop",
    "known",
    "hidden",
    "erased",
    "setting",
    "eligible",
    "keyword recovered",
    "placebo recovered",
    "finding 2",
]


def render_trajectory(analyses: dict[str, Any], results: dict[str, Any]) -> Rendered:
    """Finding 2 per checkpoint and the dilemma: their verdicts, the dilemma plot (also on the first
    screen) and one row per measured checkpoint; only the verdict lines without a trajectory."""
    dilemma = analyses.get("dilemma") or {}
    out = Rendered(
        headlines=headline("Finding 2 per checkpoint", analyses.get("finding2_checkpoints"))
        + headline("The dilemma", analyses.get("dilemma"))
    )
    rows = checkpoint_rows(results)
    if not rows:
        return out
    png = dilemma_png(dilemma.get("points") or [], dilemma.get("recovery") or None)
    out.figures["dilemma.png"] = png
    out.figure = (
        f"<figure><img alt='the dilemma: trajectories in forget accuracy and utility' src='{data_uri(png)}'></figure>"
    )
    verdicts = "".join(
        f"<div class='verdict'><b>{title}</b>: {html.escape(str(v.get('verdict', '')))}</div>"
        for title, v in (
            ("Finding 2 per checkpoint", analyses.get("finding2_checkpoints") or {}),
            ("Erasure costs utility (within matched forgetting)", dilemma.get("erasure_costs_utility") or {}),
            ("Recoverable knowledge is probe-present", dilemma.get("recoverable_is_present") or {}),
        )
        if v.get("verdict")
    )
    table = [
        [
            r["method"],
            r["step"],
            ", ".join(r["names"]),
            r["monitor_forget_accuracy"],
            r["forget_accuracy"],
            r["utility"],
            r["utility_drop"],
            r["known"],
            r["hidden"],
            r["erased"],
            r["recovery_setting"],
            r["recovery_n"],
            r["recovery_keyword"],
            r["recovery_placebo"],
            None if r["finding2"] is None else r["finding2"].split(":")[0],
        ]
        for r in rows
    ]
    out.section = (
        '<section id="trajectory"><h2>Unlearning strength: trajectories and the dilemma</h2>'
        + TRAJECTORY_TEXT
        + out.figure
        + verdicts
        + report_table_html(TRAJECTORY_COLUMNS, table)
        + "</section>"
    )
    return out


__all__ = [
    "Rendered",
    "Renderer",
    "headline",
    "verdict_block",
    "render_keyword_focus",
    "render_recovery",
    "render_finding2",
    "render_layer_head",
    "render_collapse",
    "render_presence",
    "render_trajectory",
]
