"""The faithful experiment's leaf modules end to end on an embedded model (until the main job wires them).

For each method: one gentle trajectory (unpact.trajectory); at each checkpoint the plain
forget accuracy, a utility (mean accuracy on retain and general items), the presence probes
(cloze, choice, logit lens) and controlled recovery (keyword minus placebo, against the
original); then finding 2 per checkpoint, the dilemma verdict and the dilemma plot.

    python scripts/faithful_demo.py --model embedded:gpt2 --methods ga_gdr,npo_gdr --out /tmp/faithful
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:gpt2")
    ap.add_argument("--methods", default="ga_gdr,npo_gdr")
    ap.add_argument("--items", type=int, default=24, help="forget items measured at each checkpoint")
    ap.add_argument("--controls", type=int, default=16, help="retain and general items each (controls, utility)")
    ap.add_argument("--only-targets", action="store_true", help="measure only the target and final checkpoints")
    ap.add_argument("--out", default="/tmp/faithful")
    args = ap.parse_args()

    from unpact import load_model
    from unpact.analyses.dilemma import checkpoint_point, dilemma_verdict, finding2_verdict, recovered_ids
    from unpact.data import load_benchmark, spread_sample
    from unpact.emphasis.controlled import ControlledSettings, controlled_recovery
    from unpact.emphasis.recovery import keytoken_positions
    from unpact.figures import dilemma_png
    from unpact.metrics import answer_accuracy, rouge_recalls
    from unpact.probes import attach_cloze, classify, probe
    from unpact.trajectory import run_trajectory
    from unpact.unlearning.base import copy_model

    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    original = load_model(args.model)
    forget_all = list(load_benchmark("embedded:tofu", "forget10"))
    retain_all = list(load_benchmark("embedded:tofu", "retain90"))
    forget = attach_cloze(spread_sample(forget_all, args.items), list(load_benchmark("embedded:tofu", "cloze")))
    retain = spread_sample(retain_all, args.controls)
    general = spread_sample([it for it in load_benchmark("embedded:general", "qa") if it.kind == "qa"], args.controls)
    kw = keytoken_positions(original, forget)
    ckw = {"retain": keytoken_positions(original, retain), "general": keytoken_positions(original, general)}
    cset = ControlledSettings()

    def acc(model, items):
        return answer_accuracy(rouge_recalls(model, items), 0.9)

    def utility(model):
        return (acc(model, retain) + acc(model, general)) / 2

    u0 = utility(original)
    print(f"original: forget accuracy {acc(original, forget):.3f}, utility {u0:.3f} ({time.time() - t0:.0f}s)")
    points, recovery, f2 = [], [], {}
    first = None  # the original's runs are measured once and reused at every checkpoint
    for method in args.methods.split(","):
        saved = {}

        def keep(name, step, model, a):
            if args.only_targets and not (name.startswith("forget_below") or name == "final"):
                return
            if step not in saved:
                saved[step] = {"names": [], "model": copy_model(model), "monitor": a}
            saved[step]["names"].append(name)

        t = time.time()
        traj = run_trajectory(original, method, forget_all, retain_all, on_checkpoint=keep)
        print(f"{method}: {traj.steps_run} steps, targets {traj.targets} ({time.time() - t:.0f}s)")
        f2[method] = {}
        for step, c in sorted(saved.items()):
            t = time.time()
            m = c["model"]
            plain = [r >= 0.9 for r in rouge_recalls(m, forget)]
            probes = {n: probe(m, forget, n) for n in ("format", "choice", "logit_lens")}
            kinds = classify(plain, probes, [str(it.id) for it in forget])
            cr = controlled_recovery(
                m,
                original,
                forget,
                controls={"retain": retain, "general": general},
                keywords=kw,
                control_keywords=ckw,
                settings=cset,
                method=f"{method}@{step}",
                reuse=first,
            )
            first = first or cr
            v = finding2_verdict(cr)
            f2[method][step] = v
            stratum = next((n for n in c["names"] if n.startswith("forget_below")), None)
            ut = utility(m)
            p = checkpoint_point(
                method,
                "+".join(c["names"]),
                kinds,
                [str(it.id) for it in forget],
                utility_drop=u0 - ut,
                utility=ut,
                forget_accuracy=sum(plain) / len(plain),
                step=step,
                stratum=stratum,
                recovered=recovered_ids(cr),
            )
            points.append(p)
            best = v.get("best_setting") or next(iter(cr.summary["settings"]))
            b = cr.summary["settings"][best]["binary"]["0.9"]["paired"]
            recovery.append(
                {
                    "method": method,
                    "checkpoint": f"step {step}",
                    "keyword": b["keyword_rate"],
                    "placebo": b["placebo_rate"],
                }
            )
            did = cr.summary["settings"][best]["did"]["logprob"]
            print(
                f"  step {step:3d} {'+'.join(c['names']):40s} forget acc {p['forget_accuracy']:.2f} utility {ut:.2f} "
                f"hidden {p['n_hidden']} erased {p['n_erased']} known {p['n_known']} | {best}: eligible {b['n']}, "
                f"keyword {b['keyword_rate']} placebo {b['placebo_rate']}, DiD logprob {did['mean']} {did['interval']} "
                f"| finding 2: {'supported' if v['supported'] else 'not supported'} ({time.time() - t:.0f}s)"
            )
    d = dilemma_verdict(points)
    print("dilemma (a):", d["erasure_costs_utility"]["verdict"])
    print("dilemma (b):", d["recoverable_is_present"]["verdict"])
    with open(os.path.join(args.out, "dilemma.png"), "wb") as fh:
        fh.write(dilemma_png(points, recovery))
    with open(os.path.join(args.out, "faithful.json"), "w") as fh:
        json.dump(
            {
                "points": points,
                "recovery": recovery,
                "dilemma": d,
                "finding2": {m: {str(s): v for s, v in r.items()} for m, r in f2.items()},
            },
            fh,
            indent=1,
            default=str,
        )
    print(f"wrote {args.out}/dilemma.png and faithful.json ({time.time() - t0:.0f}s in all)")


if __name__ == "__main__":
    main()
