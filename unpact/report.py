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
contribution change; the recovery, routes, presence, trajectory and collapse sections; and
the settings, folded, at the end.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from unpact.figures import CSS as FIGURE_CSS
from unpact.figures import collapse_png, dilemma_png, head_heatmap_png, recovery_png, routes_png, token_heatmap_html
from unpact.results import checkpoint_rows, load_results, recovery_table
from unpact.rundir import write_text_atomic

SECTIONS = ("answer", "results", "verdicts", "tokens", "heads", "recovery", "collapse", "settings")


# ------------------------------------------------------------------- html


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(v: Any) -> str:
    """A cell: three decimals, or two significant figures below 0.01 (7.6e-07 is not 0.000)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return fmt_number(v)
    return html.escape(str(v))


def fmt_number(v: float) -> str:
    """``0.087``, ``0.0025``, ``7.6e-07``, ``0.000``: decimals for ordinary numbers, significant figures for small ones."""
    if v != 0 and abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3f}"


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


class _Raw(str):
    """A table cell that is already HTML."""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def ig_gaps_html(res: dict[str, Any]) -> str:
    """The integrated-gradients items whose completeness gap exceeds their tolerance, as a short table
    (model, group, item, steps, passes, relative gap, whether the pass/time budget stopped the
    refinement); a one-line note when every item adds up, and nothing when the run computed no IG."""
    models = [("original", (res.get("original") or {}).get("attribution") or {})]
    models += [(m, r.get("attribution") or {}) for m, r in (res.get("methods") or {}).items()]
    rows, n = [], 0
    for name, attr in models:
        for group, items in (attr.get("integrated_gradients") or {}).items():
            for a in items:
                n += 1
                x, tol = a.get("extras") or {}, (a.get("options") or {}).get("tolerance")
                rel = x.get("relative_gap")
                over = (x["converged"] is False) if "converged" in x else (
                    rel is not None and tol is not None and rel > tol)
                if over:
                    rows.append([name, group, a.get("item_id"), x.get("steps"), x.get("passes"), rel,
                                 x.get("stopped_by") or "no"])
    if not n:
        return ""
    if not rows:
        return (f"<p>Integrated gradients: all {n} items add up (completeness gap within the tolerance, "
                "|Σ IG − (LP(x) − LP(baseline))| over |LP(x) − LP(baseline)|).</p>")
    return (f"<p>Integrated gradients: {len(rows)} of {n} items do not add up within the tolerance "
            "(relative completeness gap |Σ IG − (LP(x) − LP(baseline))| / |LP(x) − LP(baseline)|); "
            "their token scores are less exact. <i>stopped by</i>: the per-item budget that ended the "
            "refinement (passes or seconds).</p>"
            + _table(["model", "group", "item", "steps", "passes", "relative gap", "stopped by"], rows))


def _audited(res: dict[str, Any]) -> bool:
    """Whether the run audited given checkpoints only (``unpact audit``)."""
    cfg = res.get("config") or {}
    return bool(cfg.get("checkpoints")) and not cfg.get("methods")


def _title(res: dict[str, Any]) -> str:
    return "unpact audit" if _audited(res) else "unpact report"


def _short(verdict: str) -> str:
    """A verdict's outcome and reason on one line (the full text is in the Analyses section)."""
    return " ".join(str(verdict).split())


#: the verdicts of the answer, in order: (analysis key, title)
ANSWER_VERDICTS = (("recovery", "Finding 2: recovery"), ("finding2", "Finding 2: keyword vs placebo"), ("presence", "Hidden or erased"),
                   ("collapse", "Finding 3: collapse"), ("layer_head", "Layers and heads"),
                   ("finding2_checkpoints", "Finding 2 per checkpoint"), ("dilemma", "The dilemma"))


def _answer(res: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The report's first screen: what was measured, the presence counts, the dilemma (or the
    recovery) figure and each verdict in one line."""
    cfg, an = res.get("config") or {}, res.get("analyses") or {}
    methods = res.get("methods") or {}
    summary = res.get("summary") or []
    counts = (summary[0].get("n_items") or {}) if summary else {}
    audited = _audited(res)
    e = html.escape

    def who(m: str, r: dict) -> str:
        ck = r.get("lineage") or {}
        d = ck.get("relative_distance")
        dist = "" if d is None else f", weights moved {fmt_number(float(d))} of the original's norm"
        src = f"<code>{e(str(ck['spec']))}</code>" if ck.get("spec") else "unlearned by unpact"
        return f"<b>{e(m)}</b> ({src}{dist})"

    what = "; ".join(who(m, r) for m, r in methods.items()) or "nothing"
    ref = cfg.get("reference_model")
    head = [f"<h1>{e(_title(res))}</h1>",
            f"<p>{'Audited' if audited else 'Unlearned and measured'}: {what}; against the original "
            f"<b>{e(str(cfg.get('model')))}</b>"
            + (f" and the negative control <b>{e(str(ref))}</b>" if ref else
               " (no negative control: forget quality, the probes' specificity and the attacks' negative control are "
               "not applicable)")
            + f". Benchmark <b>{e(str(cfg.get('benchmark')))}</b> (forget <code>{e(str(cfg.get('forget_split')))}"
            f"</code>, retain <code>{e(str(cfg.get('retain_split')))}</code>"
            + (", " + ", ".join(f"{n} {g}" for g, n in counts.items() if n) + " items evaluated" if any(counts.values())
               else "") + ").</p>"]
    for m, r in methods.items():
        for w in (r.get("lineage") or {}).get("warnings") or []:
            head.append(f"<div class='warn'><b>Warning</b> ({e(m)}): {e(w)}</div>")
    pre = an.get("precondition") or {}
    if pre.get("holds") is False:
        head.append(f"<div class='na'><b>Not applicable:</b> {e(pre.get('reason', ''))}</div>")

    # presence counts and the headline numbers, side by side with the figure
    pres = (an.get("presence") or {}).get("methods") or {}
    by_name = {r.get("method"): r for r in summary}
    o = by_name.get("original") or {}
    rows = [["original", None, None, None, o.get("forget_rouge"), o.get("retain_rouge"), None, None]]
    routes = res.get("routes") or []
    rows[0].append(None)
    for m in methods:
        c = (pres.get(m) or {}).get("counts") or {}
        s = by_name.get(m) or {}
        attacks = [r for r in routes if r["method"] == m and r.get("controlled_rate") is not None and r.get("n_forgotten")]
        best = max(attacks, key=lambda r: (r["controlled_rate"], r["n_forgotten"]), default=None)
        rows.append([m, c.get("known"), c.get("hidden"), c.get("erased"), s.get("forget_rouge"), s.get("retain_rouge"),
                     s.get("recovery_prompt"), s.get("recovery_activation"),
                     None if best is None else f"{best['route']} {best['n_recovered']}/{best['n_forgotten']}"])
    table = _table(["model", "known", "hidden", "erased", "forget", "retain", "rec. prompt", "rec. activation",
                    "best attack"], rows)
    note = ("<p class='lbl'>Per forget item: <em>known</em> (the plain prompt answers it), <em>hidden</em> (only a "
            "probe finds it), <em>erased</em> (no probe finds it); rec.: share of forgotten items emphasis "
            "brought back (best setting whose controls held); best attack: forgotten items it brings back beyond the "
            "controls, of those eligible; forget, retain: ROUGE-L recall of the greedy answers.</p>" if pres else "<p class='lbl'>No presence probes ran (presence.probes is empty).</p>")
    dil = an.get("dilemma") or {}
    if checkpoint_rows(res):
        png = dilemma_png(dil.get("points") or [], dil.get("recovery") or None)
        figures["dilemma.png"] = png
        fig = f"<figure><img alt='the dilemma: trajectories in forget accuracy and utility' src='{_b64(png)}'></figure>"
    elif any(r["route"] not in ("prompt emphasis", "activation emphasis") for r in routes):
        png = routes_png(routes)
        figures["routes.png"] = png
        fig = (f"<figure><img alt='recovery routes by model' src='{_b64(png)}'><figcaption class='lbl'>Every recovery "
               "route's best setting per model (attacks: beyond the original's and the negative control's runs) "
               "(the strength trajectory, and so the dilemma plot, is "
               + ("an <code>unpact run</code> feature: it needs the unlearning run" if audited else "off in this run")
               + ")</figcaption></figure>")
    else:
        png = recovery_png(summary)
        figures["recovery.png"] = png
        fig = (f"<figure><img alt='recovery by model' src='{_b64(png)}'><figcaption class='lbl'>Emphasis recovery, best setting per model "
               "(the strength trajectory, and so the dilemma plot, is "
               + ("an <code>unpact run</code> feature: it needs the unlearning run" if audited else "off in this run")
               + ")</figcaption></figure>")
    lines = []
    nulls = an.get("keyword_focus_null") or {}
    for m, r in (an.get("keyword_focus") or {}).items():
        v = (nulls.get(m) or {}).get("verdict") or r.get("verdict")
        if v:
            lines.append((f"Finding 1: keyword focus, {m}", v))
    for key, title in ANSWER_VERDICTS:
        v = (an.get(key) or {}).get("verdict")
        if v:
            lines.append((title, v))
    verdicts = "".join(f"<div class='oneline' title='{e(_short(v))}'><b>{e(t)}</b> {e(_short(v))}</div>"
                       for t, v in lines)
    return ("<section id='answer' class='answer'>" + "".join(head)
            + f"<div class='cols'><div>{table}{note}</div>{fig}</div>{verdicts}"
            + "<p class='lbl'>Each verdict in full, every number and the settings follow below.</p></section>")


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` and ``figures/*.png`` for the finished run in ``run_dir``."""
    run_dir = Path(run_dir)
    res = load_results(run_dir).to_dict()  # read back through the typed results (schema_version checked)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: dict[str, bytes] = {}
    parts: list[str] = []

    cfg = res.get("config", {})
    an = res.get("analyses", {})
    summary = res.get("summary", [])
    parts.append(_answer(res, figures))

    # results
    cols = ["method", "forget_rouge", "retain_rouge", "general_accuracy", "forget_quality",
            "model_utility", "recovery_prompt", "recovery_activation", "forget_mia_min_k_auc", "privleak",
            "forget_exact_memorization", "forget_extraction_strength"]
    counts = (summary[0].get("n_items") or {}) if summary else {}
    counted = ", ".join(f"{n} {g}" for g, n in counts.items() if n)
    rows = []
    for r in summary:
        row = [r.get(c) for c in cols]
        if r.get("model_utility_degenerate"):
            i = cols.index("model_utility")
            row[i] = _Raw(f"{_fmt(r.get('model_utility'))} <span class='deg'>(degenerate: "
                          f"{html.escape(r['model_utility_degenerate'])})</span>")
        rows.append(row)
    parts.append('<section id="results"><h2>Results per method</h2>'
                 "<p>ROUGE-L recall of greedy answers on forget and retain items, general-ability accuracy, "
                 "TOFU forget quality (KS-test p-value against the retain-only model), and the share of "
                 "forgotten items that emphasis brought back (best prompt rewrite / best activation scaling whose "
                 "control did not collapse), and what the checkpoint still memorises of the forget items as "
                 "open-unlearning and MUSE measure it: the Min-K% membership-inference AUC against holdout items "
                 "(1: the forget items still look trained on), privleak against the retain-only model's AUC, exact "
                 "memorization and extraction strength. "
                 + (f"Evaluated on {counted} items (at most max_items = {html.escape(str(cfg.get('max_items')))} "
                    "per group, evenly spaced); <code>unpact unlearn</code> evaluates every item of a split, so its "
                    "forget and retain numbers for the same method differ. " if counted else "")
                 + "A number marked <i>degenerate</i> is computed but carries no information (e.g. a harmonic mean "
                 "with a zero component).</p>"
                 + _table(cols, rows) + "</section>")

    # verdicts
    v_html = []
    for name, title in (("keyword_focus", "Finding 1 — keyword focus"), ("recovery", "Finding 2 — emphasis recovery"),
                        ("finding2", "Finding 2 — keyword vs placebo emphasis"),
                        ("collapse", "Finding 3 — collapse"), ("layer_head", "Where it changed — layers and heads")):
        a = an.get(name, {})
        if name == "keyword_focus":
            nulls = an.get("keyword_focus_null") or {}
            inner = "".join(
                f"<div class='verdict'><b>{html.escape(m)}</b>: "
                + (f"{html.escape(nulls[m].get('verdict', ''))} <span class='lbl'>(against {nulls[m].get('n_null_draws')} "
                   f"damage-matched weight-noise nulls; the sign test alone: {html.escape(r.get('verdict', ''))})</span>"
                   if m in nulls else html.escape(r.get("verdict", "")))
                + "</div>" for m, r in a.items())
        else:
            inner = f"<div class='verdict'>{html.escape(a.get('verdict', ''))}</div>"
        v_html.append(f"<h3>{title}</h3>{inner}")
    parts.append('<section id="verdicts"><h2>Analyses</h2>' + "".join(v_html) + "</section>")

    # token heatmaps
    tok_html = ["<p>Leave-one-out contribution of each prompt token to the answer's log-prob "
                "(blue raises it, red lowers it, as in every heatmap of this report; each row has its own colour "
                "scale; outlined: the original model's KeyTokens).</p>"]
    for ex in res.get("examples", []):
        rows = [f"<div class='item'><b>{html.escape(ex.get('question', ''))}</b> → {html.escape(ex.get('answer', ''))}"]
        for view in ex.get("views", []):
            rows.append(f"<div><span class='lbl'>{html.escape(view['label'])}</span>"
                        + token_heatmap_html(view["tokens"], view["scores"], view.get("key")) + "</div>")
        rows.append("</div>")
        tok_html.append("".join(rows))
    tok_html.append(ig_gaps_html(res))
    parts.append('<section id="tokens"><h2>Token heatmaps</h2>' + "".join(tok_html) + "</section>")

    # heads
    head_imgs = []
    for m, r in res.get("methods", {}).items():
        hd = (r.get("tracking") or {}).get("head_delta")
        if hd:
            png = head_heatmap_png(m, hd)
            figures[f"heads_{m}.png"] = png
            head_imgs.append(f"<figure><img alt='layer x head change for {html.escape(m)}' src='{_b64(png)}'></figure>")
    parts.append('<section id="heads"><h2>Layer × head contribution change</h2>' + "".join(head_imgs) + "</section>")

    # recovery
    rec_rows = []
    for m, r in res.get("methods", {}).items():
        table = recovery_table(r)
        for row in table.rows() if table is not None else []:
            ctl = row.controls
            rec_rows.append([m, row.route, row.name, row.forget_rate, row.n_recovered,
                             ctl["retain"].accuracy if "retain" in ctl else None,
                             ctl["general"].accuracy if "general" in ctl else None,
                             ctl["holdout"].recovered if "holdout" in ctl else None, row.collapse])
    png = figures.get("recovery.png") or recovery_png(summary)
    figures["recovery.png"] = png
    parts.append('<section id="recovery"><h2>Emphasis recovery</h2>'
                 f"<figure><img alt='recovery by method' src='{_b64(png)}'></figure>"
                 + "<p>Per setting: the share of forgotten forget items brought back (and how many), the "
                 "accuracy of the retain and general controls under the same emphasis, how many holdout items "
                 "(authors the model never saw) it \"recovered\" (should be 0), and whether a control collapsed "
                 "(accuracy fell by more than the margin: such a setting's recovery does not count).</p>"
                 + f"<details><summary>every setting ({len(rec_rows)} rows)</summary>"
                 + _table(["method", "emphasis", "setting", "forget recovered", "items", "retain accuracy",
                           "general accuracy", "holdout recovered", "control collapsed"], rec_rows)
                 + "</details>"
                 + "</section>")

    # recovery routes beyond emphasis
    routes = res.get("routes") or []
    if any(r["route"] not in ("prompt emphasis", "activation emphasis") for r in routes):
        png = routes_png(routes)
        figures["routes.png"] = png
        rrows = [[r["method"], r["route"], r["setting"], r["raw_rate"], r["controlled_rate"],
                  None if r["n_forgotten"] is None else f"{r['n_recovered']}/{r['n_forgotten']}",
                  "yes" if r["negative_control"] else "no"] for r in routes]
        parts.append('<section id="routes"><h2>Recovery routes</h2>'
                     f"<figure><img alt='recovery routes by method' src='{_b64(png)}'></figure>"
                     + "<p>Each route's best setting. <em>raw</em>: forgotten items answered again; <em>beyond "
                     "controls</em> (attacks): of the forgotten items the original model still answers under the same "
                     "attack, those the negative control (a model that never saw the forget set) does not answer "
                     "under it: what the attack teaches or guesses is not counted. Emphasis rows have no negative "
                     "control yet (their controls are the collapse checks above).</p>"
                     + _table(["method", "route", "best setting", "raw", "beyond controls", "items",
                               "negative control"], rrows) + "</section>")

    # knowledge presence
    pres = an.get("presence") or {}
    if pres.get("methods"):
        prow = [[m, x["counts"]["known"], x["counts"]["hidden"], x["counts"]["erased"], x["counts"]["unprobed"],
                 ", ".join(x.get("probes_used") or []) or "–",
                 *[(x.get("share_present") or {}).get(p) for p in sorted(pres["calibration"] or x.get("share_present") or {})]]
                for m, x in pres["methods"].items()]
        pnames = sorted(pres["calibration"] or next(iter(pres["methods"].values())).get("share_present") or {})
        crows = [[p, v.get("sensitivity"), v.get("n_positive"), v.get("specificity"), v.get("n_negative")]
                 for p, v in (pres.get("calibration") or {}).items()]
        parts.append('<section id="presence"><h2>Knowledge presence</h2>'
                     "<p>Is a forgotten fact still in the model? Per forget item: <em>known</em> (the plain prompt "
                     "answers it), <em>hidden</em> (the plain prompt misses it, some probe finds it) or <em>erased</em> "
                     "(no probe finds it). Probes: the fact asked in another trained format (<code>format</code>), the "
                     "true answer against the perturbed ones (<code>choice</code>), the fact token read from the residual "
                     "stream at each layer (<code>logit_lens</code>); the columns on the right are the share of items each "
                     "probe finds. Only probes whose specificity on the negative control is at least "
                     f"{html.escape(str((cfg.get('presence') or {}).get('min_specificity', '')))} make the hidden / erased "
                     "call (the others are shown, not counted). Each probe is calibrated on a model known to hide the facts (sensitivity: the original "
                     f"fine-tuned to refuse the plain questions; it hid {pres.get('positive_hidden')} of "
                     f"{pres.get('positive_items')} items) and on one that never had them (specificity: the retain-only "
                     "model).</p>"
                     + _table(["method", "known", "hidden", "erased", "unprobed", "probes in the call",
                               *[f"{p} present" for p in pnames]], prow)
                     + (_table(["probe", "sensitivity", "n", "specificity", "n"], crows) if crows else
                        "<p>No calibration: the run has no positive or negative control.</p>")
                     + "</section>")

    # unlearning strength as a trajectory (opt-in: trajectory.enabled)
    dil = an.get("dilemma") or {}
    trows = checkpoint_rows(res)
    if trows:
        png = figures.get("dilemma.png") or dilemma_png(dil.get("points") or [], dil.get("recovery") or None)
        figures["dilemma.png"] = png
        verdicts = "".join(
            f"<div class='verdict'><b>{title}</b>: {html.escape(str(v.get('verdict', '')))}</div>"
            for title, v in (("Finding 2 per checkpoint", an.get("finding2_checkpoints") or {}),
                             ("Erasure costs utility (within matched forgetting)", dil.get("erasure_costs_utility") or {}),
                             ("Recoverable knowledge is probe-present", dil.get("recoverable_is_present") or {}))
            if v.get("verdict"))
        crow = [[r["method"], r["step"], ", ".join(r["names"]), r["monitor_forget_accuracy"], r["forget_accuracy"],
                 r["utility"], r["utility_drop"], r["known"], r["hidden"], r["erased"], r["recovery_setting"],
                 None if r["recovery_n"] is None else r["recovery_n"], r["recovery_keyword"], r["recovery_placebo"],
                 None if r["finding2"] is None else r["finding2"].split(":")[0]] for r in trows]
        parts.append('<section id="trajectory"><h2>Unlearning strength: trajectories and the dilemma</h2>'
                     "<p>Each method run once on a gentle schedule, measured at step marks, at the first checked step "
                     "whose monitored forget accuracy fell below each target, and at the end. Per checkpoint: forget "
                     "accuracy on the evaluated items, utility (mean of retain ROUGE-L recall and general accuracy) and "
                     "its drop from the original, the presence calls (known / hidden / erased), and controlled recovery: "
                     "keyword vs placebo emphasis on the items eligible under both in the setting with the most such "
                     "items (the original answers them under that emphasis, the checkpoint misses them plainly), and "
                     "finding 2 at that checkpoint (keyword-specific gain against the original or the negative control, "
                     "with intervals).</p>"
                     f"<figure><img alt='the dilemma: trajectories in forget accuracy and utility' src='{_b64(png)}'>"
                     "</figure>" + verdicts
                     + _table(["method", "step", "checkpoints", "monitor forget acc.", "forget acc.", "utility",
                               "utility drop", "known", "hidden", "erased", "setting", "eligible", "keyword recovered",
                               "placebo recovered", "finding 2"], crow) + "</section>")

    # collapse
    png = collapse_png(an.get("collapse", {}))
    figures["collapse.png"] = png
    crow = [[m, r.get("share_tokens_fell"), r.get("share_function_words_fell"), r.get("drop_concentration_gini"), r.get("utility_drop")]
            for m, r in an.get("collapse", {}).get("methods", {}).items()]
    parts.append('<section id="collapse"><h2>Collapse analysis</h2>'
                 f"<figure><img alt='collapse plot' src='{_b64(png)}'></figure>"
                 + _table(["method", "tokens fell", "function words fell", "drop Gini", "utility drop"], crow) + "</section>")

    # settings, folded at the end
    flat = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in cfg.items()]
    info = res.get("model_info", {})
    parts.append('<section id="settings"><details><summary><b>Settings</b> '
                 f"({len(flat)} settings and the original model's sizes)</summary>" + _table(["setting", "value"], flat)
                 + (_table(["model", "value"], [[k, v] for k, v in info.items()]) if info else "")
                 + "</details></section>")

    for name, png in figures.items():
        (fig_dir / name).write_bytes(png)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(_title(res))}</title>"
            f"<style>{_CSS}{FIGURE_CSS}</style></head><body class='unpact'>" + "\n".join(parts) + "</body></html>")
    return write_text_atomic(run_dir / "report.html", page)
