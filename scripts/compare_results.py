"""Compare two runs' results.json: every number, and the keys only one side has.

    python scripts/compare_results.py BEFORE/results.json AFTER/results.json [--rtol 0]

Prints how many numbers were compared, how many differ (beyond ``--rtol``), the largest
difference, each differing path (first 40), and the key paths (list indices collapsed to
``[]``) that exist on one side only: the renames and additions between the two layouts.
Exit status 1 when a number differs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys


def walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out["only_after"].add(re.sub(r"\[\d+\]", "[]", p))
            elif k not in b:
                out["only_before"].add(re.sub(r"\[\d+\]", "[]", p))
            else:
                walk(a[k], b[k], p, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out["diff"].append((path, f"length {len(a)} != {len(b)}", math.inf))
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out)
    elif (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        out["numbers"] += 1
        d = abs(a - b)
        scale = max(abs(a), abs(b), 1e-300)
        if d > out["rtol"] * scale:
            out["diff"].append((path, f"{a!r} != {b!r}", d))
    elif a != b:
        out["diff"].append((path, f"{a!r} != {b!r}", math.inf))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative difference counted as equal (default 0: exact)")
    ap.add_argument(
        "--ignore",
        action="append",
        default=["config.out", "unpact_version"],
        help="top-level dotted paths to leave out (default: config.out, unpact_version)",
    )
    args = ap.parse_args(argv)
    a, b = (json.load(open(p, encoding="utf-8")) for p in (args.before, args.after))
    for path in args.ignore:
        *head, last = path.split(".")
        for d in (a, b):
            for h in head:
                d = d.get(h, {})
            d.pop(last, None)
    out = {"numbers": 0, "diff": [], "only_before": set(), "only_after": set(), "rtol": args.rtol}
    walk(a, b, "", out)
    finite = [d for _, _, d in out["diff"] if math.isfinite(d)]
    print(
        f"numbers compared: {out['numbers']}; differing (rtol {args.rtol:g}): {len(out['diff'])}; "
        f"largest numeric difference: {max(finite) if finite else 0:.3g}"
    )
    for path, what, _ in out["diff"][:40]:
        print(f"  differs: {path}: {what}")
    for side in ("only_before", "only_after"):
        keys = sorted(out[side])
        print(f"keys {side.replace('_', ' ')} ({len(keys)}):")
        for k in keys:
            print(f"  {k}")
    return 1 if out["diff"] else 0


if __name__ == "__main__":
    sys.exit(main())
