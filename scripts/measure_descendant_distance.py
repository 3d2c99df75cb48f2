"""Measure the relative weight distance ||U - O|| / ||O|| that unpact's own unlearning methods
produce on the embedded models at each method's default strength, and the distance of the
retain-only twins (same configuration, trained from scratch): the basis of
``unpact.checkpoints.MAX_RELATIVE_DISTANCE``.

    python scripts/measure_descendant_distance.py [--models gpt2,llama,qwen2] [--methods all] [--out FILE.json]

Each method unlearns embedded:<model> on embedded:tofu forget10 (retain90) with its defaults and
seed 0; the checkpoint is saved to a temporary directory and measured by the same weight pass
as ``unpact audit``'s input checks (:func:`unpact.checkpoints.lineage`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def main(argv=None) -> int:
    from unpact.checkpoints import lineage
    from unpact.data import load_benchmark
    from unpact.models import load_model, save_model
    from unpact.unlearning import METHODS, unlearn

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt2,llama,qwen2")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    forget = list(load_benchmark("embedded:tofu", "forget10"))
    retain = list(load_benchmark("embedded:tofu", "retain90"))
    methods = sorted(METHODS) if args.methods == "all" else args.methods.split(",")
    rows = []
    for m in args.models.split(","):
        orig = f"embedded:{m}"
        rows.append({"model": m, "against": f"{m}-retain", **lineage(orig, f"embedded:{m}-retain")})
        print(json.dumps(rows[-1]), flush=True)
        for method in methods:
            t = time.time()
            model = load_model(orig)
            res = unlearn(model, method, forget, retain, {}, inplace=True, seed=0)
            with tempfile.TemporaryDirectory() as d:
                save_model(res.model, d)
                row = {"model": m, "method": method, **lineage(orig, d), "seconds": round(time.time() - t, 1)}
            row.pop("spec")
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
