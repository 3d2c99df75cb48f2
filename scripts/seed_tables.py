"""Markdown tables of a study run at several seeds (``unpact run --seeds ... --out OUT``), for docs/recovery.md.

Reads ``OUT/seed<k>/results.json`` and ``OUT/pooled.json`` (nothing recomputed) and prints:
the summary metrics per seed, finding 1 per seed beside its pooled verdict, and, per method, the
mildest trajectory checkpoint of each seed with its keyword vs placebo recovery (the pattern
docs/recovery.md reads into seed 0), then the pooled verdicts of ``pooled.md``.

Usage: python scripts/seed_tables.py OUT [OUT ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unpact.results import checkpoint_rows


#: The mildest checkpoint shown is the first along the trajectory with at least this many eligible
#: items in its best setting (fewer make a share of 0 or 1 from one or two items).
MIN_ELIGIBLE = 5


def f(x, d=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and 0 < abs(x) < 10**-d:
        return f"{x:.2e}"
    return f"{x:.{d}f}" if isinstance(x, float) else str(x)


def seeds_of(out: Path) -> dict[int, dict]:
    dirs = sorted(out.glob("seed*"), key=lambda p: int(p.name[4:]))
    return {
        int(d.name[4:]): json.loads((d / "results.json").read_text()) for d in dirs if (d / "results.json").is_file()
    }


def summary_table(runs: dict[int, dict]) -> list[str]:
    seeds = list(runs)
    keys = [
        ("forget_rouge", "forget ROUGE-L", 3),
        ("retain_rouge", "retain ROUGE-L", 3),
        ("general_accuracy", "general acc.", 3),
        ("forget_quality", "forget quality", 3),
    ]
    head = " / ".join(f"s{s}" for s in seeds)
    out = ["| method | " + " | ".join(f"{name} ({head})" for _, name, _ in keys) + " |", "|---" * (1 + len(keys)) + "|"]
    by_seed = {s: {r["method"]: r for r in res["summary"]} for s, res in runs.items()}
    for method in by_seed[seeds[0]]:
        cells = [" / ".join(f(by_seed[s].get(method, {}).get(k), d) for s in seeds) for k, _, d in keys]
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    return out


def finding1_table(runs: dict[int, dict], pooled: dict) -> list[str]:
    seeds = list(runs)
    out = [
        "| method | "
        + " | ".join(f"seed {s}: method − nulls [95% interval], rank p" for s in seeds)
        + " | pooled: method − nulls [interval], stratified p, null draws | pooled verdict |",
        "|---" * (len(seeds) + 3) + "|",
    ]
    for method, pv in (pooled.get("finding1") or {}).items():
        cells = []
        for s in seeds:
            t = (runs[s]["analyses"].get("keyword_focus_null") or {}).get(method) or {}
            mark = "holds" if t.get("supported") else "no"
            cells.append(
                "–"
                if t.get("interval") is None
                else f"{f(t['statistic'] - sum(t['null_statistics']) / len(t['null_statistics']))} "
                f"[{f(t['interval'][0])}, {f(t['interval'][1])}], {f(t['p_value'])} ({mark})"
            )
        pooled_cell = (
            "–"
            if pv.get("interval") is None
            else f"{f(pv['difference'])} [{f(pv['interval'][0])}, {f(pv['interval'][1])}], {f(pv['p_value'], 6)}, "
            f"{pv['n_null_draws']}"
        )
        out.append(f"| {method} | " + " | ".join(cells) + f" | {pooled_cell} | {pv['verdict'].split(':')[0]} |")
    return out


def mildest_checkpoint_table(runs: dict[int, dict]) -> list[str]:
    seeds = list(runs)
    out = [
        "| method | "
        + " | ".join(
            f"seed {s}: first step with >= {MIN_ELIGIBLE} eligible, keyword / placebo share (eligible), setting, "
            "keyword − placebo ROUGE-L [interval]"
            for s in seeds
        )
        + " |",
        "|---" * (len(seeds) + 1) + "|",
    ]
    firsts: dict[str, dict[int, str]] = {}
    for s, res in runs.items():
        measured = {
            (m, c["step"]): c
            for m, r in res["methods"].items()
            for c in (r.get("trajectory") or {}).get("measured") or []
        }
        seen = set()
        for r in checkpoint_rows(res):
            if r["method"] in seen or r["recovery_setting"] is None or (r["recovery_n"] or 0) < MIN_ELIGIBLE:
                continue
            seen.add(r["method"])
            summ = ((measured.get((r["method"], r["step"])) or {}).get("controlled") or {}).get("summary") or {}
            kmp = (
                ((summ.get("settings") or {}).get(r["recovery_setting"]) or {}).get("keyword_minus_placebo") or {}
            ).get("rouge") or {}
            rouge = (
                "–"
                if kmp.get("mean") is None
                else f"{f(kmp['mean'], 2)} [{f(kmp['interval'][0], 2)}, {f(kmp['interval'][1], 2)}]"
            )
            firsts.setdefault(r["method"], {})[s] = (
                f"{r['step']}: {f(r['recovery_keyword'], 2)} / {f(r['recovery_placebo'], 2)} ({r['recovery_n']}), "
                f"{r['recovery_setting']}, {rouge}"
            )
    for method, cells in firsts.items():
        out.append(f"| {method} | " + " | ".join(cells.get(s, "–") for s in seeds) + " |")
    return out


def tables(out: Path) -> str:
    runs = seeds_of(out)
    pooled = json.loads((out / "pooled.json").read_text())
    cfg = runs[next(iter(runs))]["config"]
    title = f"{cfg['model']}, {cfg['benchmark']} {cfg['forget_split']}"
    lines = [
        f"#### {title}: seeds {', '.join(map(str, runs))}",
        "",
        *summary_table(runs),
        "",
        *finding1_table(runs, pooled),
        "",
        *mildest_checkpoint_table(runs),
        "",
    ]
    md = (out / "pooled.md").read_text()
    verdicts = md.split("## Verdicts", 1)[1].split("## Rules", 1)[0].strip().splitlines()
    lines += [v for v in verdicts if not v.startswith("- finding 2, ")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(tables(Path(arg)))
