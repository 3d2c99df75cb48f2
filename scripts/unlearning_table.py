"""The measured table of docs/unlearning.md: every method on every embedded model.

For each embedded model (``embedded:<arch>``, with ``embedded:<arch>-retain`` as the
forget-quality reference when it exists) and each method, with the default
hyperparameters: unlearn TOFU-shaped forget10 (retain90 as retain set), then
measure forget ROUGE-L recall, retain ROUGE-L recall (first ``--retain-items``
retain90 items), general accuracy (``metrics.answer_accuracy`` on embedded:general ``qa``) and forget quality;
rmu is also run on the WMDP-shaped corpora (forget_corpus / retain_corpus),
measured by WMDP-shaped test accuracy.

    python scripts/unlearning_table.py [--models gpt2,llama] [--methods ga_gdr,...] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--models", default=None, help="comma-separated embedded model names (default: all without -retain)"
    )
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: all ten)")
    ap.add_argument("--retain-items", type=int, default=120)
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from unpact import load_model
    from unpact.data import load_benchmark
    from unpact.metrics import answer_accuracy, evaluate, mc_accuracy
    from unpact.models import embedded_model_names
    from unpact.unlearning import METHODS, unlearn

    names = embedded_model_names()
    models = args.models.split(",") if args.models else [n for n in names if not n.endswith("-retain")]
    methods = args.methods.split(",") if args.methods else sorted(METHODS)
    forget = load_benchmark("embedded:tofu", "forget10")
    retain = load_benchmark("embedded:tofu", "retain90")
    retain_eval = retain[: args.retain_items]
    general = load_benchmark("embedded:general", "qa")  # general accuracy: metrics.answer_accuracy

    def general_acc(m) -> float:
        return answer_accuracy(evaluate(m, general)["rouge_l_recall_per_item"])

    wmdp_forget = load_benchmark("embedded:wmdp", "forget_corpus")
    wmdp_retain = load_benchmark("embedded:wmdp", "retain_corpus")
    wmdp_test = load_benchmark("embedded:wmdp", "test")

    rows, record = [], {}
    for arch in models:
        model = load_model(f"embedded:{arch}")
        ref_name = f"{arch}-retain"
        reference = load_model(f"embedded:{ref_name}") if ref_name in names else None
        ref_tr = evaluate(reference, forget)["truth_ratios"] if reference is not None else None

        def measure(m) -> dict:
            f = evaluate(m, forget, reference=ref_tr)
            r = evaluate(m, retain_eval)
            return {
                "forget_rouge": f["rouge_l_recall"],
                "retain_rouge": r["rouge_l_recall"],
                "general_acc": general_acc(m),
                "forget_quality": f.get("forget_quality"),
            }

        base = measure(model)
        record[arch] = {"before": base, "methods": {}}
        rows.append((arch, "(before)", base, None, None))
        for name in methods:
            t = time.time()
            res = unlearn(model, name, forget, retain, seed=0)
            secs = time.time() - t
            after = measure(res.model)
            entry = {
                "after": after,
                "seconds": secs,
                "stopped_early": res.stopped_early,
                "message": res.message,
                "config": res.config.to_dict(),
            }
            if name == "rmu":
                acc0 = mc_accuracy(model, list(wmdp_test))
                w = unlearn(model, "rmu", wmdp_forget, wmdp_retain, seed=0)
                entry["wmdp"] = {
                    "before": acc0,
                    "after": mc_accuracy(w.model, list(wmdp_test)),
                    "general_after": general_acc(w.model),
                }
            record[arch]["methods"][name] = entry
            rows.append((arch, name, after, secs, entry.get("wmdp")))
            print(
                f"{arch:8s} {name:12s} forget {base['forget_rouge']:.3f}->{after['forget_rouge']:.3f} "
                f"retain {after['retain_rouge']:.3f} general {after['general_acc']:.3f} ({secs:.1f}s)",
                file=sys.stderr,
                flush=True,
            )

    def fmt(x):
        return "–" if x is None else (f"{x:.2e}" if x < 0.01 else f"{x:.3f}")

    lines = [
        "| model | method | forget ROUGE-L | halved? | retain ROUGE-L | general acc. | forget quality | time (s) | WMDP-shaped acc. (rmu) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, name, m, secs, wmdp in rows:
        w = f"{wmdp['before']:.3f} → {wmdp['after']:.3f} (general {wmdp['general_after']:.3f})" if wmdp else ""
        before = record[arch]["before"]["forget_rouge"]
        halved = "" if secs is None else ("yes" if m["forget_rouge"] <= 0.5 * before else "**no**")
        lines.append(
            f"| {arch} | {name} | {fmt(m['forget_rouge'])} | {halved} | {fmt(m['retain_rouge'])} | "
            f"{fmt(m['general_acc'])} | {fmt(m['forget_quality'])} | {'' if secs is None else f'{secs:.1f}'} | {w} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
