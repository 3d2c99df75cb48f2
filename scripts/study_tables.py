"""Markdown tables of finished `unpact run` directories (for docs/recovery.md and docs/unlearning.md).

Usage:
    python scripts/study_tables.py runs/gpt2 runs/llama runs/qwen2

Reads each run's results.json (never recomputes) and prints, per run: the
metrics per method (forget/retain ROUGE-L, general accuracy, forget quality) and
the emphasis recovery comparison (best prompt rewrite and best activation
setting with their rates, the controls under them, holdout "recoveries"), the
recovery-route table (emphasis and every attack, attacks beyond the original and
negative controls), then the analyses' verdicts, and (when the run has the strength
trajectory) one row per method and checkpoint: plain forget accuracy, knowledge presence
(known / hidden / erased by the calibrated probes), keyword and placebo recovery of the
best controlled setting, utility, finding 2 there, and the dilemma's verdicts; last, what each
stage cost where the run recorded it (stages/timings.jsonl).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unpact.emphasis.table import RecoveryTable
from unpact.rundir import stage_timings


def f(x, d=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{d}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{d}f}"
    return str(x)


def pct(x):
    return "–" if x is None else f"{100 * x:.0f}%"


def tables(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    cfg = res["config"]
    out = [
        f"### {cfg['model']} ({res['model_info']['architecture']}, {res['model_info']['n_params']:,} parameters)",
        "",
    ]
    out += [
        "| method | forget ROUGE-L | retain ROUGE-L | general acc. | forget quality | utility drop |",
        "|---|---|---|---|---|---|",
    ]
    col = res["analyses"]["collapse"]["methods"]
    for r in res["summary"]:
        ud = col.get(r["method"], {}).get("utility_drop")
        out.append(
            f"| {r['method']} | {f(r['forget_rouge'])} | {f(r['retain_rouge'])} | {f(r['general_accuracy'])} "
            f"| {f(r['forget_quality'])} | {f(ud)} |"
        )
    out += [
        "",
        "| method | forgotten / forget items | best prompt rewrite | best activation | controls under best (retain / general acc.) | holdout recovered (best prompt / act.) |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in res["methods"].items():
        rec = RecoveryTable.from_dict(r["recovery"])
        pb, ab = rec.best("prompt"), rec.best("activation")

        def ctl(row, name, what="accuracy", d=2):
            c = row.controls.get(name) if row is not None else None
            v = getattr(c, what) if c is not None else None
            return f(v, d) if what == "accuracy" else ("–" if v is None else v)

        flag = lambda c: " (collapse)" if c else ""
        out.append(
            f"| {m} | {rec.n_forgotten} / {rec.n_forget} | {pb.name}: {pct(pb.rate)}{flag(pb.collapse)} "
            f"| {ab.name}: {pct(ab.rate)}{flag(ab.collapse)} "
            f"| {ctl(pb.row, 'retain', d=2)} / {ctl(pb.row, 'general', d=2)}; {ctl(ab.row, 'retain', d=2)} / {ctl(ab.row, 'general', d=2)} "
            f"| {ctl(pb.row, 'holdout', 'recovered')} / {ctl(ab.row, 'holdout', 'recovered')} |"
        )
    routes = [r for r in res.get("routes", []) if "emphasis" not in r["route"]]
    if routes:
        out += [
            "",
            "| method | route | best setting | raw | beyond controls (recovered / eligible) |",
            "|---|---|---|---|---|",
        ]
        for r in res["routes"]:
            items = "–" if r["n_forgotten"] is None else f"{r['n_recovered']} / {r['n_forgotten']}"
            ctl = "no negative control" if "emphasis" in r["route"] else f"{pct(r['controlled_rate'])} ({items})"
            out.append(f"| {r['method']} | {r['route']} | {r['setting']} | {pct(r['raw_rate'])} | {ctl} |")
    an = res["analyses"]
    pres = an.get("presence") or {}
    if pres.get("methods"):
        names = sorted(next(iter(pres["methods"].values())).get("share_present") or {})
        out += [
            "",
            "| method | known | hidden | erased | probes in the call | "
            + " | ".join(f"{p} present" for p in names)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(names),
        ]
        for m, x in pres["methods"].items():
            c = x["counts"]
            out.append(
                f"| {m} | {c['known']} | {c['hidden']} | {c['erased']} | {', '.join(x.get('probes_used') or []) or '–'} | "
                + " | ".join(pct((x.get("share_present") or {}).get(p)) for p in names)
                + " |"
            )
        cal = pres.get("calibration") or {}
        if cal:
            out += ["", "| probe | sensitivity (positive control) | specificity (negative control) |", "|---|---|---|"]
            for p, v in cal.items():
                ci = lambda x: "" if not x else f" [{x[0]:.2f}, {x[1]:.2f}]"
                out.append(
                    f"| {p} | {f(v.get('sensitivity'), 2)}{ci(v.get('sensitivity_ci'))} (n = {v.get('n_positive')}) "
                    f"| {f(v.get('specificity'), 2)}{ci(v.get('specificity_ci'))} (n = {v.get('n_negative')}) |"
                )
    out += [
        "",
        f"- recovery: {an['recovery']['verdict']}",
        f"- collapse: {an['collapse']['verdict']}",
        f"- layers/heads: {an['layer_head']['verdict']}",
    ]
    nulls = an.get("keyword_focus_null") or {}
    for m, r in an["keyword_focus"].items():
        if m in nulls:
            out.append(f"- keyword focus, {m}: {nulls[m]['verdict']} (the sign test alone: {r['verdict']})")
        else:
            out.append(f"- keyword focus, {m}: {r['verdict']}")
    out += checkpoint_tables(res)
    out += cost_table(run)
    return "\n".join(out) + "\n"


def cost_table(run: Path) -> list[str]:
    """Each computed stage's wall and CPU seconds and the run's peak memory so far
    (stages/timings.jsonl; a trajectory checkpoint is also inside its trajectory's seconds)."""
    rows = stage_timings(run)
    if not rows:
        return []
    out = ["", "| stage | wall (s) | CPU (s) | peak so far (GB) | finished (UTC) |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['stage']} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['peak_rss_gb']:.2f} | {r['finished'][11:19]} |"
        )
    return out


def checkpoint_tables(res: dict) -> list[str]:
    """Per method and trajectory checkpoint (unpact.results.checkpoint_rows), then the dilemma's verdicts."""
    from unpact.results import checkpoint_rows

    rows = checkpoint_rows(res)
    if not rows:
        return []
    f2 = (res["analyses"].get("finding2_checkpoints") or {}).get("per_method") or {}
    out = [
        "",
        "| method | step (checkpoint) | monitor / evaluated forget acc. | known / hidden / erased | "
        "keyword / placebo share recovered (eligible), setting | keyword − placebo ROUGE-L [interval] | "
        "finding 2's statistic: mean [interval] (n), setting | finding 2 there | utility (drop) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    measured = {
        (m, c["step"]): c for m, r in res["methods"].items() for c in (r.get("trajectory") or {}).get("measured") or []
    }
    for r in rows:
        v = (f2.get(r["method"]) or {}).get(f"step_{r['step']}") or {}
        b = (v.get("settings") or {}).get(v.get("best_setting")) or {}
        stat = (
            "–"
            if not b
            else (
                f"{f(b['mean'], 2)} [{f(b['interval'][0], 2)}, {f(b['interval'][1], 2)}] ({b['n']}), "
                f"{v['best_setting']}"
            )
        )
        names = ", ".join(n.replace("forget_below_", "<") for n in r["names"])
        pres = "–" if r["hidden"] is None else f"{r['known']} / {r['hidden']} / {r['erased']}"
        rec = (
            "–"
            if r["recovery_setting"] is None
            else f"{f(r['recovery_keyword'], 2)} / {f(r['recovery_placebo'], 2)} ({r['recovery_n']}), {r['recovery_setting']}"
        )
        call = "–" if r["finding2"] is None else r["finding2"].split(":")[0]
        summ = ((measured.get((r["method"], r["step"])) or {}).get("controlled") or {}).get("summary") or {}
        kmp = (((summ.get("settings") or {}).get(r["recovery_setting"]) or {}).get("keyword_minus_placebo") or {}).get(
            "rouge"
        )
        rouge = (
            "–"
            if not kmp or kmp.get("mean") is None
            else f"{f(kmp['mean'], 2)} [{f(kmp['interval'][0], 2)}, {f(kmp['interval'][1], 2)}]"
        )
        out.append(
            f"| {r['method']} | {r['step']} ({names}) | {f(r['monitor_forget_accuracy'], 2)} / "
            f"{f(r['forget_accuracy'], 2)} | {pres} | {rec} | {rouge} | {stat} | {call} | "
            f"{f(r['utility'], 2)} ({f(r['utility_drop'], 3)}) |"
        )
    out += [
        "",
        "Median log-prob of the fact token (teacher forcing, the true answer's prefix given) on the plain "
        "forget prompts, per checkpoint step (original / never-trained negative control: "
        f"{_median_fact_lp(measured.values(), 'original')} / {_median_fact_lp(measured.values(), 'negative')}):",
        "",
    ]
    for m, r in res["methods"].items():
        cells = [
            f"{c['step']}: {_median_fact_lp([c], 'unlearned')}"
            for c in (r.get("trajectory") or {}).get("measured") or []
        ]
        if cells:
            out.append(f"- {m}: " + ", ".join(cells))
    out.append("")
    an = res["analyses"]
    dil = an.get("dilemma") or {}
    for key in ("erasure_costs_utility", "recoverable_is_present"):
        if isinstance(dil.get(key), dict) and dil[key].get("verdict"):
            out.append(f"- dilemma, {key.replace('_', ' ')}: {dil[key]['verdict']}")
    if (an.get("finding2_checkpoints") or {}).get("verdict"):
        out.append(f"- finding 2 per checkpoint: {an['finding2_checkpoints']['verdict']}")
    return out


def _median_fact_lp(checkpoints, who: str) -> str:
    """Median plain-prompt fact log-prob of ``who`` (unlearned / original / negative) in the
    controlled-recovery runs of the first of ``checkpoints`` (measured checkpoints) that has it."""
    import statistics

    for c in checkpoints:
        run = (((c.get("controlled") or {}).get("raw") or {}).get("runs") or {}).get(who)
        if run:
            return f"{statistics.median(run['plain']['forget']['logprob']):.3f}"
    return "–"


if __name__ == "__main__":
    for d in sys.argv[1:]:
        print(tables(Path(d)))
