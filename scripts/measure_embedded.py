"""Print the measured tables of the embedded models (docs/embedded.md holds their output).

Three tables per run:

1. the targets (``unpact.embedded.measure.measure_model``) per model;
2. TOFU's statistics (``tofu_statistics``): truth-ratio score on retain90 and on the
   general set, TOFU model utility, forget10 truth-ratio score, and the forget quality
   of each original against its ``-retain`` twin (when both are measured);
3. the rewrite-template table (``template_table``) per model: forget / retain /
   general (and MUSE QA, WMDP MC) accuracy under the plain prompt, each trained
   template and each never-trained surface variant (marked ``~``), with the
   emphasis on the whole name (``name``) or one word of it (``word``).

Usage:
    python scripts/measure_embedded.py                       # every shipped model
    python scripts/measure_embedded.py gpt2 gpt2-retain      # some of them
    python scripts/measure_embedded.py --build DIR           # the models of `unpact build-embedded --out DIR`
    python scripts/measure_embedded.py --limit 40            # a subset per metric (faster)
    python scripts/measure_embedded.py --no-templates        # skip the (slow) template table
    python scripts/measure_embedded.py --template-limit 120  # more items per template group (slower)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unpact.embedded.measure import (
    TEMPLATE_GROUPS,
    TEMPLATE_TARGET,
    TRUTH_RATIO_TARGET,
    UTILITY_TARGET,
    measure_model,
    meets_targets,
    template_table,
    tofu_statistics,
)
from unpact.embedded.world import HELDOUT_SURFACE_TEMPLATES, TRAINED_TEMPLATES
from unpact.models import EMBEDDED_MODELS_DIR, load_model

COLUMNS = [
    "tofu_trained",
    "forget10",
    "heldout_phrasing",
    "holdout",
    "holdout_baseline",
    "muse_verbatim",
    "wmdp_mc",
    "general_mc",
    "general_qa",
]
TARGET_ROW = {
    "tofu_trained": ">= 0.95",
    "forget10": "",
    "heldout_phrasing": ">= 0.5",
    "holdout": "<= baseline",
    "holdout_baseline": "",
    "muse_verbatim": ">= 0.8",
    "wmdp_mc": ">= 0.9",
    "general_mc": ">= 0.9",
    "general_qa": ">= 0.9",
}
STAT_COLUMNS = ["retain_truth_ratio", "model_utility", "general_truth_ratio", "forget_truth_ratio", "forget_quality"]
STAT_TARGETS = {
    "retain_truth_ratio": f">= {TRUTH_RATIO_TARGET}",
    "model_utility": f"> {UTILITY_TARGET}",
    "general_truth_ratio": "",
    "forget_truth_ratio": "",
    "forget_quality": "small (original vs -retain)",
}
#: Groups whose template accuracy carries the target (on the original models).
TARGET_GROUPS = ("forget", "retain", "general")


def _table(header: list[str]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")


def is_twin(name: str) -> bool:
    """A model trained without forget10 (``-retain``, and ``-retain-all``, also without MUSE's forget
    passages and WMDP: its WMDP MC is at chance by design)."""
    return name.endswith(("-retain", "-retain-all"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="embedded model names (default: all)")
    ap.add_argument("--build", default=None, help="a build directory (models/ and data/ inside)")
    ap.add_argument("--limit", type=int, default=None, help="items per target metric (default: all)")
    ap.add_argument(
        "--stats-limit",
        type=int,
        default=120,
        help="items per split for the TOFU statistics (default 120: all of forget10, 120 of retain90)",
    )
    ap.add_argument(
        "--template-limit",
        type=int,
        default=24,
        help="items per group in the template table (default 24, evenly spread)",
    )
    ap.add_argument("--no-templates", action="store_true", help="skip the template table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models_dir = Path(args.build) / "models" if args.build else EMBEDDED_MODELS_DIR
    data_dir = Path(args.build) / "data" if args.build else None
    names = args.models or sorted(p.name for p in models_dir.iterdir() if (p / "config.json").is_file())
    results: dict[str, dict] = {}

    print("## Targets\n")
    _table(["model"] + COLUMNS + ["all met"])
    print("| target | " + " | ".join(TARGET_ROW[c] for c in COLUMNS) + " | |")
    for name in names:
        t = time.time()
        model = load_model(str(models_dir / name))
        m = measure_model(model, limit=args.limit, retain_only=is_twin(name), data_dir=data_dir)
        ok = meets_targets(m)
        m["measure_seconds"] = time.time() - t
        results[name] = {"targets": m}
        cells = [f"{m[c]:.3f}" + ("" if ok.get(c, True) else " (missed)") for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {'yes' if all(ok.values()) else 'no'} |", flush=True)

    print("\n## TOFU statistics\n")
    _table(["model"] + STAT_COLUMNS)
    print("| target | " + " | ".join(STAT_TARGETS[c] for c in STAT_COLUMNS) + " |")
    for name in names:
        model = load_model(str(models_dir / name))
        twin = f"{name}-retain"
        ref = load_model(str(models_dir / twin)) if not is_twin(name) and (models_dir / twin).is_dir() else None
        s = tofu_statistics(model, reference=ref, limit=args.stats_limit, data_dir=data_dir)
        results[name]["tofu"] = s
        cells = []
        for c in STAT_COLUMNS:
            v = s.get(c)
            miss = (c == "retain_truth_ratio" and v is not None and v < TRUTH_RATIO_TARGET and not is_twin(name)) or (
                c == "model_utility" and v is not None and v <= UTILITY_TARGET
            )
            cells.append(
                ""
                if v is None
                else (f"{v:.3g}" if c == "forget_quality" else f"{v:.3f}") + (" (missed)" if miss else "")
            )
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    if args.no_templates:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return
    groups = list(TEMPLATE_GROUPS)
    for name in names:
        model = load_model(str(models_dir / name))
        if is_twin(name):  # no target: the plain prompt and the trained templates, whole names
            tt = template_table(
                model,
                templates=("none",) + TRAINED_TEMPLATES,
                kinds=("name",),
                limit=args.template_limit,
                data_dir=data_dir,
            )
        else:
            tt = template_table(model, limit=args.template_limit, data_dir=data_dir)
        results[name]["templates"] = tt
        print(f"\n## Rewrite templates: {name}\n")
        _table(["template", "keywords"] + groups + ["trained templates >= 0.9"])
        for tpl, kinds in tt.items():
            for kind, acc in kinds.items():
                held = tpl in HELDOUT_SURFACE_TEMPLATES
                if held:
                    verdict = "(held out)"
                elif is_twin(name):
                    verdict = ""
                else:
                    missed = [g for g in TARGET_GROUPS if acc[g] < TEMPLATE_TARGET]
                    verdict = "yes" if not missed else "missed: " + ", ".join(missed)
                print(
                    f"| {tpl} | {kind} | " + " | ".join(f"{acc[g]:.2f}" for g in groups) + f" | {verdict} |", flush=True
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
