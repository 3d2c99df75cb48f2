"""Measure the emphasis-recovery comparison table for docs/recovery.md.

For each embedded model and each of the paper's six unlearning methods: unlearn
TOFU-shaped forget10 (retain90 as the retain set, the method's default
hyperparameters), then run :func:`unpact.emphasis.recover` with the original
model's KeyTokens as keywords and three controls: retain90, general QA, and
holdout10 (authors no model ever saw: emphasis must recover nothing there).
Writes one JSON per (model, method) and a Markdown summary.

    python scripts/recovery_table.py --out docs/recovery_results [--models gpt2,llama,qwen2]
        [--methods ga_gdr,...] [--max-items 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def fmt_pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/recovery_results")
    p.add_argument("--models", default=None, help="embedded model names (default: all shipped)")
    p.add_argument("--methods", default=None, help="default: the paper's six")
    p.add_argument("--max-items", type=int, default=40, help="forget items (evenly spaced)")
    p.add_argument("--max-control-items", type=int, default=40)
    p.add_argument("--kinds", default="attention,value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        help="ROUGE-L recall counted as right (default 0.95: on embedded TOFU a wrong attribute in the "
        "answer sentence still scores 0.71-0.88, so 0.5 cannot tell right from wrong)",
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from unpact.data import load_benchmark
    from unpact.emphasis import RecoveryConfig, recover, render_table
    from unpact.data import spread_sample
    from unpact.models import embedded_model_names, load_model
    from unpact.unlearning import PAPER_METHODS, unlearn

    models = args.models.split(",") if args.models else [m for m in embedded_model_names() if not m.endswith("-retain")]
    methods = args.methods.split(",") if args.methods else list(PAPER_METHODS)
    forget_all = load_benchmark("embedded:tofu", "forget10")
    retain_all = load_benchmark("embedded:tofu", "retain90")
    forget = spread_sample(list(forget_all), args.max_items)
    controls = {
        "retain": list(retain_all),
        "general": list(load_benchmark("embedded:general", "qa")),
        "holdout": list(load_benchmark("embedded:tofu", "holdout10")),
    }
    cfg = RecoveryConfig(
        kinds=tuple(args.kinds.split(",")), max_control_items=args.max_control_items, threshold=args.threshold
    )
    os.makedirs(args.out, exist_ok=True)
    summary = []
    for name in models:
        original = load_model(f"embedded:{name}")
        for method in methods:
            t0 = time.time()
            res = unlearn(original, method, forget_all, retain_all, seed=args.seed)
            t1 = time.time()
            table = recover(res.model, forget, original=original, controls=controls, config=cfg, method=method)
            table.extra.update(model=f"embedded:{name}", unlearn_seconds=t1 - t0, recover_seconds=time.time() - t1)
            with open(os.path.join(args.out, f"{name}_{method}.json"), "w") as f:
                json.dump(table.to_dict(), f, indent=2)
            print(render_table(table), file=sys.stderr)
            pb, ab = table.best("prompt"), table.best("activation")
            base = table.baseline

            def general_acc(row):
                return row.controls["general"].accuracy if row is not None and "general" in row.controls else None

            summary.append(
                {
                    "model": name,
                    "method": method,
                    "original_acc": base.original_forget_accuracy,
                    "forget_acc": base.forget_accuracy,
                    "forgotten": table.n_forgotten,
                    "n": table.n_forget,
                    "prompt_best": pb.rate,
                    "prompt_setting": pb.name,
                    "prompt_collapse": pb.collapse,
                    "activation_best": ab.rate,
                    "activation_setting": ab.name,
                    "activation_collapse": ab.collapse,
                    "retain_acc": base.controls["retain"].accuracy,
                    "general_acc": base.controls["general"].accuracy,
                    "holdout_recovered_max": max([r.controls["holdout"].recovered for r in table.rows()] or [0]),
                    "prompt_general_acc": general_acc(pb.row),
                    "activation_general_acc": general_acc(ab.row),
                }
            )
            print(f"{name} {method}: unlearn {t1 - t0:.0f}s, recover {time.time() - t1:.0f}s", file=sys.stderr)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    lines = [
        "| model | method | original acc | unlearned acc | forgotten | prompt: best rate (template) | "
        "activation: best rate (setting) | retain acc | general acc (plain / best prompt / best activation) | "
        "holdout recovered (max over settings) |",
        "|" + "---|" * 10,
    ]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['method']} | {fmt_pct(s['original_acc'])} | {fmt_pct(s['forget_acc'])} | "
            f"{s['forgotten']}/{s['n']} | {fmt_pct(s['prompt_best'])} ({s['prompt_setting']}{', collapsed' if s['prompt_collapse'] else ''}) | "
            f"{fmt_pct(s['activation_best'])} ({s['activation_setting']}{', collapsed' if s['activation_collapse'] else ''}) | "
            f"{fmt_pct(s['retain_acc'])} | {fmt_pct(s['general_acc'])} / {fmt_pct(s['prompt_general_acc'])} / "
            f"{fmt_pct(s['activation_general_acc'])} | {s['holdout_recovered_max']} |"
        )
    md = "\n".join(lines)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
