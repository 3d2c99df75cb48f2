"""Finding 2 on the paper's criterion beside the fact's log-prob, from finished runs (nothing recomputed
but the verdicts).

Usage:
    python scripts/finding2_criterion.py /work/runs/seeds-gpt2 /work/runs/seeds-llama ...

Each argument is the output of ``unpact run --seeds`` (``seed<k>/`` run directories). For every
study, method and seed it reads the unlearned model's stored controlled recovery
(``stages/<method>/controlled.json``) and prints finding 2's verdict on the default outcome (the
paper's: fact token top-1 and the greedy answer right, keyword minus placebo, minus the negative
control) and on the fact's log-prob (the default before, now the secondary measure), then the
verdicts pooled over the seeds (:func:`unpact.analyses.seeds.pool_seeds`) for every checkpoint of
the trajectory, on both outcomes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from unpact.analyses.dilemma import DilemmaSettings, finding2_verdict
from unpact.analyses.seeds import SeedSettings, pool_seeds


def short(v: dict) -> str:
    head = v["verdict"].split(":")[0]
    best = v.get("best_setting")
    row = (v.get("settings") or {}).get(best) if best else None
    if not row or row.get("interval") is None:
        return head
    lo, hi = row["interval"]
    return f"{head} ({best}: {row['mean']:.3f} [{lo:.3f}, {hi:.3f}], n = {row['n'] if 'n' in row else row['n_items']})"


def study(root: Path) -> list[str]:
    seeds = sorted(p for p in root.glob("seed*") if (p / "results.json").is_file())
    primary, secondary = DilemmaSettings(), replace(DilemmaSettings(), outcome="logprob", secondary_outcome=None)
    lines = [
        f"### {root.name}",
        "",
        "| method | seed | recovered (top-1 and right): verdict | fact log-prob: verdict |",
        "|---|---|---|---|",
    ]
    results = {}
    for sd in seeds:
        k = int(sd.name.removeprefix("seed"))
        results[k] = json.loads((sd / "results.json").read_text())
        for m in results[k]["methods"]:
            f = sd / "stages" / m / "controlled.json"
            if not f.is_file():
                continue
            c = json.loads(f.read_text())
            lines.append(
                f"| {m} | {k} | {short(finding2_verdict(c, primary))} | {short(finding2_verdict(c, secondary))} |"
            )
    lines += [
        "",
        "| method | checkpoints supported over the seeds, recovered | the same, fact log-prob |",
        "|---|---|---|",
    ]
    pooled = {
        name: pool_seeds(results, SeedSettings(dilemma=d))["finding2"]
        for name, d in (("recovered", primary), ("logprob", secondary))
    }
    for m in pooled["recovered"]:
        cells = []
        for name in ("recovered", "logprob"):
            cps = pooled[name].get(m) or {}
            hits = [cp for cp, v in cps.items() if v.get("supported")]
            cells.append(f"{len(hits)} of {len(cps)}" + (f" ({', '.join(hits)})" if hits else ""))
        lines.append(f"| {m} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def main() -> None:
    for arg in sys.argv[1:]:
        print("\n".join(study(Path(arg))))


if __name__ == "__main__":
    main()
