"""Build the presence model pools and meta-evaluate the probes and the combined call on them.

    python scripts/presence_pools.py build --out runs/pools [--world /tmp/world-v3]
    python scripts/presence_pools.py evaluate --pools runs/pools [--world ...] --json runs/pools/meta.json

``build`` writes every member of :func:`unpact.pools.pool_members` (resumable: a member
already built is kept). ``evaluate`` prints the meta-evaluation table (markdown) of
:func:`unpact.meta_evaluation.meta_evaluate` and writes the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from unpact.meta_evaluation import CALL, MetaSettings, meta_evaluate
from unpact.pools import PoolSettings, build_pools
from unpact.progress import tqdm_progress


def fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def ci(v) -> str:
    return "-" if not v else f"[{v[0]:.2f}, {v[1]:.2f}]"


def table(res: dict) -> str:
    """The meta-evaluation table and the per-member rows, as markdown."""
    lines = [
        f"Held-out members: {res['n_positive_members']} positives, {res['n_negative_members']} negatives; "
        f"{res['n_items']} forget facts each. Probes the call uses (calibrated on the study's two controls): "
        f"{', '.join(res['probes_used']) or 'none'}"
        + (f"; left out: {res['probes_left_out']}" if res["probes_left_out"] else ""),
        "",
        "| probe / call | faithfulness AUC | sensitivity (held-out positives) | specificity (held-out negatives) "
        "| false-hidden rate (negatives, plain wrong) | hidden found (positives, plain wrong) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in res["table"].items():
        n_pos = row.get("n_positive", row.get("n"))
        n_neg = row.get("n_negative", row.get("n"))
        fh = (
            f"{fmt(row['false_hidden'])} {ci(row['false_hidden_ci'])} (n={row['n_plain_wrong']})"
            if name == CALL
            else "-"
        )
        hf = f"{fmt(row['hidden_found'])} {ci(row['hidden_found_ci'])}" if name == CALL else "-"
        lines.append(
            f"| {name} | {fmt(row['auc'], 3)} | {fmt(row['sensitivity'])} {ci(row['sensitivity_ci'])} (n={n_pos}) "
            f"| {fmt(row['specificity'])} {ci(row['specificity_ci'])} (n={n_neg}) | {fh} | {hf} |"
        )
    lines += ["", "| bar | value | target | met |", "|---|---|---|---|"]
    for name, b in res["bars"].items():
        lines.append(f"| {name} | {fmt(b['value'])} | {b['bar']} | {'yes' if b['met'] else 'no'} |")
    lines += [
        "",
        "| member | plain right | " + " | ".join(res["probes_used"] or ["-"]) + " | known / hidden / erased |",
    ]
    lines.append("|---" * (3 + max(1, len(res["probes_used"]))) + "|")
    for name, m in res["members"].items():
        shares = " | ".join(fmt(m["share_present"][p]) for p in res["probes_used"]) or "-"
        c = m["counts"]
        lines.append(
            f"| {name} | {fmt(m['plain_correct'])} | {shares} | {c['known']} / {c['hidden']} / {c['erased']} |"
        )
    lines += ["", "| robustness | after | known / hidden / erased |", "|---|---|---|"]
    for name, r in res["robustness"].items():
        for what in ("quantized", "before_relearning", "relearned"):
            if what in r:
                c = r[what]
                extra = ""
                if what == "before_relearning":
                    extra = " (the authors asked after relearning)"
                elif what == "relearned":
                    extra = f" (the same authors; the relearned ones answered {fmt(r['relearned_plain_correct'])})"
                lines.append(f"| {name} | {what}{extra} | {c['known']} / {c['hidden']} / {c['erased']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the pools")
    b.add_argument("--out", required=True)
    b.add_argument("--world", default=None, help="a built world (default: the shipped one)")
    b.add_argument("--only", action="append", default=None, help="build only this member (repeatable)")
    e = sub.add_parser("evaluate", help="meta-evaluate the probes and the call on built pools")
    e.add_argument("--pools", required=True)
    e.add_argument("--world", default=None)
    e.add_argument("--json", default=None, help="write the whole result here")
    args = p.parse_args(argv)
    if args.command == "build":
        build_pools(args.out, PoolSettings(), world_dir=args.world, only=args.only, progress=tqdm_progress)
        print(f"pools written to {args.out}")
        return 0
    res = meta_evaluate(args.pools, MetaSettings(), world_dir=args.world, progress=tqdm_progress)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
