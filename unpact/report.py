"""``results.json`` -> ``report.html`` (self-contained) and PNG figures.

The report reads the results, never the pipeline: ``unpact report RUN_DIR``
rebuilds it without recomputing anything, reading ``results.json`` back through
:class:`unpact.results.StudyResults` (its ``schema_version`` is checked). Every image is embedded as a base64
``data:`` URI and there is no script or external link, so the page opens from
disk with no network. The same figures are written as PNG files beside it.

The page opens with the answer, on one screen (section ``answer``): what was measured (the
original, each method or audited checkpoint, the benchmark), the presence counts, the dilemma
plot (when the trajectory ran; else the recovery summary figure) and each verdict in one
line. Then: results per model; the analyses' verdicts in full; token heatmaps (before /
after unlearning / under emphasis) for selected forget items; layer x head heatmaps of the
contribution change; the recovery and routes sections; each analysis's own section (presence,
collapse, trajectory, ...); and the settings, folded, at the end.

The analyses' parts (their verdict lines, their verdicts in full, their sections and figures)
come from each registered analysis's renderer (:data:`unpact.analyses.assemble.ANALYSES`,
:mod:`unpact.analyses.render`), in registration order: an analysis shows here without this
module naming it.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from unpact.analyses.assemble import ANALYSES
from unpact.analyses.render import Rendered
from unpact.figures import CSS as FIGURE_CSS
from unpact.figures import (
    RawHtml,
    cell_html,
    data_uri,
    fmt_number,
    head_heatmap_png,
    recovery_png,
    report_table_html,
    routes_png,
    token_heatmap_html,
)
from unpact.results import load_results, recovery_table
from unpact.rundir import write_text_atomic

SECTIONS = ("answer", "results", "verdicts", "tokens", "heads", "recovery", "collapse", "settings")

#: a report cell (kept under its old name: tests read it here)
_fmt = cell_html

__all__ = ["build_report", "fmt_number", "ig_gaps_html", "render_analyses"]


# ------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.toks{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;margin:.2em 0 .6em;line-height:1.9}
.tok{padding:.1em .05em;border-radius:3px;white-space:pre} .tok.kw{outline:2px solid #b58900}
.verdict{background:#f8f8f0;border-left:4px solid #b58900;padding:.4em .8em;margin:.4em 0}
.item{margin-bottom:1.2em} .lbl{font-size:.8em;color:#666;display:inline-block;min-width:14em}
figure{display:inline-block;margin:.4em} img{max-width:100%}
.scale{font-size:.75em;color:#555;margin-left:1em;white-space:nowrap} .scale .bar{display:inline-block;width:6em;height:.8em;vertical-align:middle;border:1px solid #ccc}
.answer{border:1px solid #ddd;border-radius:6px;padding:.2em 1em .6em;background:#fcfcfa}
.answer td,.answer th{white-space:nowrap} .answer h1{margin:.3em 0 .2em} .answer p{margin:.3em 0} .answer table{margin:.3em 0}
.answer .cols{display:flex;gap:1.2em;align-items:flex-start}
.answer .cols>div{flex:0 1 auto;max-width:46em} .answer figure{margin:0;flex:1 1 0;min-width:16em;display:block}
.answer img{max-height:250px;max-width:100%;height:auto;width:auto;display:block} .answer figcaption{max-width:24em}
.oneline{margin:.15em 0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:.92em}
.oneline b{display:inline-block;min-width:17em}
.warn{background:#fff8e0;border-left:4px solid #cb4b16;padding:.3em .8em;margin:.3em 0}
.na{background:#fff4f4;border-left:4px solid #dc322f;padding:.4em .8em;margin:.4em 0} .deg{color:#b00;font-size:.85em}
"""


def ig_gaps_html(res: dict[str, Any]) -> str:
    """The integrated-gradients items whose completeness gap exceeds their tolerance, as a short table
    (model, group, item, steps, passes, relative gap, whether the pass/time budget stopped the
    refinement); a one-line note when every item adds up, and nothing when the run computed no IG."""
    models = [("original", (res.get("original") or {}).get("attribution") or {})]
    models += [(m, r.get("attribution") or {}) for m, r in (res.get("methods") or {}).items()]
    rows, n = [], 0
    for name, attr in models:
        for group, items in (attr.get("integrated_gradients") or {}).items():
            for item in items:
                n += 1
                extras, tol = item.get("extras") or {}, (item.get("options") or {}).get("tolerance")
                rel = extras.get("relative_gap")
                over = (
                    (extras["converged"] is False)
                    if "converged" in extras
                    else (rel is not None and tol is not None and rel > tol)
                )
                if over:
                    rows.append(
                        [
                            name,
                            group,
                            item.get("item_id"),
                            extras.get("steps"),
                            extras.get("passes"),
                            rel,
                            extras.get("stopped_by") or "no",
                        ]
                    )
    if not n:
        return ""
    if not rows:
        return (
            f"<p>Integrated gradients: all {n} items add up (completeness gap within the tolerance, "
            "|Σ IG − (LP(x) − LP(baseline))| over |LP(x) − LP(baseline)|).</p>"
        )
    return (
        f"<p>Integrated gradients: {len(rows)} of {n} items do not add up within the tolerance "
        "(relative completeness gap |Σ IG − (LP(x) − LP(baseline))| / |LP(x) − LP(baseline)|); "
        "their token scores are less exact. <i>stopped by</i>: the per-item budget that ended the "
        "refinement (passes or seconds).</p>"
        + report_table_html(["model", "group", "item", "steps", "passes", "relative gap", "stopped by"], rows)
    )


def _audited(res: dict[str, Any]) -> bool:
    """Whether the run audited given checkpoints only (``unpact audit``)."""
    cfg = res.get("config") or {}
    return bool(cfg.get("checkpoints")) and not cfg.get("methods")


def _title(res: dict[str, Any]) -> str:
    return "unpact audit" if _audited(res) else "unpact report"


def _short(verdict: str) -> str:
    """A verdict's outcome and reason on one line (the full text is in the Analyses section)."""
    return " ".join(str(verdict).split())


def render_analyses(res: dict[str, Any]) -> list[Rendered]:
    """Each registered analysis's part of the report for results dict ``res``, in registration order
    (analyses without a renderer left out)."""
    analyses = res.get("analyses") or {}
    return [analysis.render(analyses, res) for _, analysis in ANALYSES.items() if analysis.render is not None]


def _measured(res: dict[str, Any]) -> list[str]:
    """The first screen's title, what was measured against what, the lineage warnings and a failed precondition."""
    cfg, analyses, esc = res.get("config") or {}, res.get("analyses") or {}, html.escape
    methods = res.get("methods") or {}
    summary = res.get("summary") or []
    counts = (summary[0].get("n_items") or {}) if summary else {}

    def who(name: str, r: dict) -> str:
        lineage = r.get("lineage") or {}
        d = lineage.get("relative_distance")
        dist = "" if d is None else f", weights moved {fmt_number(float(d))} of the original's norm"
        src = f"<code>{esc(str(lineage['spec']))}</code>" if lineage.get("spec") else "unlearned by unpact"
        return f"<b>{esc(name)}</b> ({src}{dist})"

    what = "; ".join(who(m, r) for m, r in methods.items()) or "nothing"
    ref = cfg.get("reference_model")
    head = [
        f"<h1>{esc(_title(res))}</h1>",
        f"<p>{'Audited' if _audited(res) else 'Unlearned and measured'}: {what}; against the original "
        f"<b>{esc(str(cfg.get('model')))}</b>"
        + (
            f" and the negative control <b>{esc(str(ref))}</b>"
            if ref
            else " (no negative control: forget quality, the probes' specificity and the attacks' negative control are "
            "not applicable)"
        )
        + f". Benchmark <b>{esc(str(cfg.get('benchmark')))}</b> (forget <code>{esc(str(cfg.get('forget_split')))}"
        f"</code>, retain <code>{esc(str(cfg.get('retain_split')))}</code>"
        + (
            ", " + ", ".join(f"{n} {g}" for g, n in counts.items() if n) + " items evaluated"
            if any(counts.values())
            else ""
        )
        + ").</p>",
    ]
    for m, r in methods.items():
        for w in (r.get("lineage") or {}).get("warnings") or []:
            head.append(f"<div class='warn'><b>Warning</b> ({esc(m)}): {esc(w)}</div>")
    pre = analyses.get("precondition") or {}
    if pre.get("holds") is False:
        head.append(f"<div class='na'><b>Not applicable:</b> {esc(pre.get('reason', ''))}</div>")
    return head


ANSWER_NOTE = (
    "<p class='lbl'>Per forget item: <em>known</em> (the plain prompt answers it), <em>hidden</em> (only a "
    "probe finds it), <em>erased</em> (no probe finds it); rec.: share of forgotten items emphasis "
    "brought back (best setting whose controls held); best attack: forgotten items it brings back beyond "
    "the controls, of those eligible; forget, retain: ROUGE-L recall of the greedy answers.</p>"
)


def _answer_table(res: dict[str, Any]) -> str:
    """The first screen's table: per model the presence counts, forget and retain recall, emphasis
    recovery and the best attack; and the note that says what the columns are."""
    pres = ((res.get("analyses") or {}).get("presence") or {}).get("methods") or {}
    by_name = {r.get("method"): r for r in res.get("summary") or []}
    original = by_name.get("original") or {}
    routes = res.get("routes") or []
    rows = [
        ["original", None, None, None, original.get("forget_rouge"), original.get("retain_rouge"), None, None, None]
    ]
    for m in res.get("methods") or {}:
        counts = (pres.get(m) or {}).get("counts") or {}
        summary = by_name.get(m) or {}
        attacks = [
            r for r in routes if r["method"] == m and r.get("controlled_rate") is not None and r.get("n_forgotten")
        ]
        best = max(attacks, key=lambda r: (r["controlled_rate"], r["n_forgotten"]), default=None)
        rows.append(
            [
                m,
                counts.get("known"),
                counts.get("hidden"),
                counts.get("erased"),
                summary.get("forget_rouge"),
                summary.get("retain_rouge"),
                summary.get("recovery_prompt"),
                summary.get("recovery_activation"),
                None if best is None else f"{best['route']} {best['n_recovered']}/{best['n_forgotten']}",
            ]
        )
    table = report_table_html(
        ["model", "known", "hidden", "erased", "forget", "retain", "rec. prompt", "rec. activation", "best attack"],
        rows,
    )
    note = ANSWER_NOTE if pres else "<p class='lbl'>No presence probes ran (presence.probes is empty).</p>"
    return table + note


def _has_attack_routes(routes: list[dict[str, Any]]) -> bool:
    """Whether some recovery route is an attack (not an emphasis kind)."""
    return any(r["route"] not in ("prompt emphasis", "activation emphasis") for r in routes)


def _answer_figure(res: dict[str, Any], rendered: list[Rendered], figures: dict[str, bytes]) -> str:
    """The first screen's figure: the first an analysis gives (the dilemma plot), else every recovery
    route's best setting (when an attack ran), else the emphasis recovery."""
    given = next((r.figure for r in rendered if r.figure), "")
    if given:
        return given
    routes = res.get("routes") or []
    why = (
        "(the strength trajectory, and so the dilemma plot, is "
        + ("an <code>unpact run</code> feature: it needs the unlearning run" if _audited(res) else "off in this run")
        + ")"
    )
    if _has_attack_routes(routes):
        png = figures["routes.png"] = routes_png(routes)
        return (
            f"<figure><img alt='recovery routes by model' src='{data_uri(png)}'><figcaption class='lbl'>Every "
            "recovery route's best setting per model (attacks: beyond the original's and the negative control's "
            f"runs) {why}</figcaption></figure>"
        )
    png = figures["recovery.png"] = recovery_png(res.get("summary") or [])
    return (
        f"<figure><img alt='recovery by model' src='{data_uri(png)}'><figcaption class='lbl'>Emphasis recovery, "
        f"best setting per model {why}</figcaption></figure>"
    )


def _answer(res: dict[str, Any], rendered: list[Rendered], figures: dict[str, bytes]) -> str:
    """The report's first screen: what was measured, the presence counts, the dilemma (or the
    recovery) figure and each analysis's verdicts in one line."""
    esc = html.escape
    lines = [line for r in rendered for line in r.headlines]
    verdicts = "".join(
        f"<div class='oneline' title='{esc(_short(v))}'><b>{esc(t)}</b> {esc(_short(v))}</div>" for t, v in lines
    )
    return (
        "<section id='answer' class='answer'>"
        + "".join(_measured(res))
        + f"<div class='cols'><div>{_answer_table(res)}</div>{_answer_figure(res, rendered, figures)}</div>"
        + verdicts
        + "<p class='lbl'>Each verdict in full, every number and the settings follow below.</p></section>"
    )


RESULT_COLUMNS = [
    "method",
    "forget_rouge",
    "retain_rouge",
    "general_accuracy",
    "forget_quality",
    "model_utility",
    "recovery_prompt",
    "recovery_activation",
    "forget_mia_min_k_auc",
    "privleak",
    "forget_exact_memorization",
    "forget_extraction_strength",
]


def _results_section(res: dict[str, Any]) -> str:
    """One row per model of the summary's numbers, degenerate ones marked, with what each column is."""
    summary = res.get("summary", [])
    counts = (summary[0].get("n_items") or {}) if summary else {}
    counted = ", ".join(f"{n} {g}" for g, n in counts.items() if n)
    rows = []
    for r in summary:
        row = [r.get(c) for c in RESULT_COLUMNS]
        if r.get("model_utility_degenerate"):
            row[RESULT_COLUMNS.index("model_utility")] = RawHtml(
                f"{cell_html(r.get('model_utility'))} <span class='deg'>(degenerate: "
                f"{html.escape(r['model_utility_degenerate'])})</span>"
            )
        rows.append(row)
    max_items = html.escape(str(res.get("config", {}).get("max_items")))
    return (
        '<section id="results"><h2>Results per method</h2>'
        "<p>ROUGE-L recall of greedy answers on forget and retain items, general-ability accuracy, "
        "TOFU forget quality (KS-test p-value against the retain-only model), and the share of "
        "forgotten items that emphasis brought back (best prompt rewrite / best activation scaling whose "
        "control did not collapse), and what the checkpoint still memorises of the forget items as "
        "open-unlearning and MUSE measure it: the Min-K% membership-inference AUC against holdout items "
        "(1: the forget items still look trained on), privleak against the retain-only model's AUC, exact "
        "memorization and extraction strength. "
        + (
            f"Evaluated on {counted} items (at most max_items = {max_items} "
            "per group, evenly spaced); <code>unpact unlearn</code> evaluates every item of a split, so its "
            "forget and retain numbers for the same method differ. "
            if counted
            else ""
        )
        + "A number marked <i>degenerate</i> is computed but carries no information (e.g. a harmonic mean "
        "with a zero component).</p>" + report_table_html(RESULT_COLUMNS, rows) + "</section>"
    )


def _tokens_section(res: dict[str, Any]) -> str:
    """Token heatmaps of the selected forget items (before, after, under emphasis), and the IG check."""
    parts = [
        "<p>Leave-one-out contribution of each prompt token to the answer's log-prob "
        "(blue raises it, red lowers it, as in every heatmap of this report; each row has its own colour "
        "scale; outlined: the original model's KeyTokens).</p>"
    ]
    for ex in res.get("examples", []):
        rows = [f"<div class='item'><b>{html.escape(ex.get('question', ''))}</b> → {html.escape(ex.get('answer', ''))}"]
        for view in ex.get("views", []):
            rows.append(
                f"<div><span class='lbl'>{html.escape(view['label'])}</span>"
                + token_heatmap_html(view["tokens"], view["scores"], view.get("key"))
                + "</div>"
            )
        rows.append("</div>")
        parts.append("".join(rows))
    parts.append(ig_gaps_html(res))
    return '<section id="tokens"><h2>Token heatmaps</h2>' + "".join(parts) + "</section>"


def _heads_section(res: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The layer x head contribution change of each model that has one."""
    images = []
    for m, r in res.get("methods", {}).items():
        head_delta = (r.get("tracking") or {}).get("head_delta")
        if head_delta:
            png = figures[f"heads_{m}.png"] = head_heatmap_png(m, head_delta)
            images.append(
                f"<figure><img alt='layer x head change for {html.escape(m)}' src='{data_uri(png)}'></figure>"
            )
    return '<section id="heads"><h2>Layer × head contribution change</h2>' + "".join(images) + "</section>"


def _recovery_section(res: dict[str, Any], figures: dict[str, bytes]) -> str:
    """Emphasis recovery: the summary figure and, folded, every setting of every model."""
    rows = []
    for m, r in res.get("methods", {}).items():
        table = recovery_table(r)
        for row in table.rows() if table is not None else []:
            ctl = row.controls
            rows.append(
                [
                    m,
                    row.route,
                    row.name,
                    row.forget_rate,
                    row.n_recovered,
                    ctl["retain"].accuracy if "retain" in ctl else None,
                    ctl["general"].accuracy if "general" in ctl else None,
                    ctl["holdout"].recovered if "holdout" in ctl else None,
                    row.collapse,
                ]
            )
    png = figures.get("recovery.png") or recovery_png(res.get("summary", []))
    figures["recovery.png"] = png
    return (
        '<section id="recovery"><h2>Emphasis recovery</h2>'
        f"<figure><img alt='recovery by method' src='{data_uri(png)}'></figure>"
        "<p>Per setting: the share of forgotten forget items brought back (and how many), the "
        "accuracy of the retain and general controls under the same emphasis, how many holdout items "
        '(authors the model never saw) it "recovered" (should be 0), and whether a control collapsed '
        "(accuracy fell by more than the margin: such a setting's recovery does not count).</p>"
        f"<details><summary>every setting ({len(rows)} rows)</summary>"
        + report_table_html(
            [
                "method",
                "emphasis",
                "setting",
                "forget recovered",
                "items",
                "retain accuracy",
                "general accuracy",
                "holdout recovered",
                "control collapsed",
            ],
            rows,
        )
        + "</details></section>"
    )


def _routes_section(res: dict[str, Any], figures: dict[str, bytes]) -> str:
    """Every recovery route's best setting, when an attack ran ('' otherwise)."""
    routes = res.get("routes") or []
    if not _has_attack_routes(routes):
        return ""
    png = figures.get("routes.png") or routes_png(routes)
    figures["routes.png"] = png
    rows = [
        [
            r["method"],
            r["route"],
            r["setting"],
            r["raw_rate"],
            r["controlled_rate"],
            None if r["n_forgotten"] is None else f"{r['n_recovered']}/{r['n_forgotten']}",
            "yes" if r["negative_control"] else "no",
        ]
        for r in routes
    ]
    return (
        '<section id="routes"><h2>Recovery routes</h2>'
        f"<figure><img alt='recovery routes by method' src='{data_uri(png)}'></figure>"
        "<p>Each route's best setting. <em>raw</em>: forgotten items answered again; <em>beyond "
        "controls</em> (attacks): of the forgotten items the original model still answers under the same "
        "attack, those the negative control (a model that never saw the forget set) does not answer "
        "under it: what the attack teaches or guesses is not counted. Emphasis rows have no negative "
        "control yet (their controls are the collapse checks above).</p>"
        + report_table_html(
            ["method", "route", "best setting", "raw", "beyond controls", "items", "negative control"], rows
        )
        + "</section>"
    )


def _settings_section(res: dict[str, Any]) -> str:
    """Every setting and the original model's sizes, folded."""
    flat = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in res.get("config", {}).items()]
    info = res.get("model_info", {})
    return (
        '<section id="settings"><details><summary><b>Settings</b> '
        f"({len(flat)} settings and the original model's sizes)</summary>"
        + report_table_html(["setting", "value"], flat)
        + (report_table_html(["model", "value"], [[k, v] for k, v in info.items()]) if info else "")
        + "</details></section>"
    )


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` and ``figures/*.png`` for the finished run in ``run_dir``.

    Example (+SKIP: it needs a finished run directory, so the doctest run skips them):
        >>> build_report("runs/demo")  # doctest: +SKIP
        PosixPath('runs/demo/report.html')
    """
    run_dir = Path(run_dir)
    res = load_results(run_dir).to_dict()  # read back through the typed results (schema_version checked)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    rendered = render_analyses(res)
    figures: dict[str, bytes] = {name: png for r in rendered for name, png in r.figures.items()}
    parts = [
        _answer(res, rendered, figures),
        _results_section(res),
        '<section id="verdicts"><h2>Analyses</h2>' + "".join(r.verdicts for r in rendered) + "</section>",
        _tokens_section(res),
        _heads_section(res, figures),
        _recovery_section(res, figures),
        _routes_section(res, figures),
        *(r.section for r in rendered),
        _settings_section(res),
    ]
    for name, png in figures.items():
        (fig_dir / name).write_bytes(png)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(_title(res))}</title>"
        f"<style>{_CSS}{FIGURE_CSS}</style></head><body class='unpact'>"
        + "\n".join(p for p in parts if p)
        + "</body></html>"
    )
    return write_text_atomic(run_dir / "report.html", page)
