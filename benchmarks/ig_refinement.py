"""Benchmark: integrated gradients' old refinement vs the nested, budgeted one, side by side (NOT a test).

Old (the code at ``--old-rev``, by default where this branch left main): 64 Gauss-Legendre
steps, an item whose relative completeness gap exceeds 5% starts over at twice the steps, up
to 1024 (so up to 64 + 128 + ... + 1024 = 1984 passes per item). New (this tree's defaults):
Fejer's second rule warped towards alpha = 0, 63 -> 127 -> 255 points, each refinement
evaluating only its new points, at most 256 passes per item (``IGConfig.max_passes``).

Models, each on the same items in one process:
  embedded:gpt2 / embedded:llama (pad baseline; llama's pad row is zero) / embedded:qwen2
  (``baseline="zero"``): forget10 items of embedded:tofu;
  llama30 (init s): a random 30-layer Llama (width 128, 4 heads, 2 KV heads; SmolLM2-135M's depth,
  a fraction of its width so the old refinement finishes on a CPU) with embedded:llama's
  tokenizer, built with ``transformers``, saved and loaded through ``unpact.load_model``;
  ``initializer_range`` s = 0.02 (the HF default: a smooth integrand), 0.1 (a rough one) and 0.2
  (one no refinement closes: the old code spends 1984 passes per item, the new one stops at its budget).

Printed per model and variant: passes per item (mean / max), wall seconds per item, the
largest relative completeness gap, how many items stay above 5%, how many the budget stopped,
and the cosine similarity of the old and new scores (per item, the smallest).

Usage:
    python benchmarks/ig_refinement.py                 # ~10 min on a busy 2-core CPU
    python benchmarks/ig_refinement.py --items 2 --models gpt2,llama
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from unpact import load_model
from unpact.attribution import attribute, prepare_items
from unpact.attribution.base import ATTRIBUTION_METHODS
from unpact.data import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def old_ig_class(rev: str):
    """The IntegratedGradients class of ``rev``, loaded from git without touching the registry."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:unpact/attribution/gradients.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix="_old_gradients.py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("unpact_old_gradients", f.name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    with ATTRIBUTION_METHODS.scoped():  # the old class registers itself; the registry is restored
        spec.loader.exec_module(mod)
    cls = mod.IntegratedGradients
    if not hasattr(cls, "config_class"):  # a revision whose methods name their settings class Config
        cls.config_class = cls.Config
    return cls


def llama30(init: float, tok, workdir: Path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    d = workdir / f"llama30_{init}"
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=30,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=init,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def cosine(a, b) -> float:
    num = sum(x * y for x, y in zip(a, b))
    den = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return num / den if den else 1.0


def summarise(res, seconds, passes) -> dict:
    gaps = [a.extras["relative_gap"] or 0.0 for a in res]
    return {
        "passes_mean": sum(passes) / len(passes),
        "passes_max": max(passes),
        "s_per_item": seconds / len(res),
        "gap_max": max(gaps),
        "over": sum(g > 0.05 for g in gaps),
        "stopped": sum(bool(a.extras.get("budget_stopped")) for a in res),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default=None, help="git revision of the old code (default: merge-base with main)")
    ap.add_argument("--items", type=int, default=4, help="items per embedded model (llama30 gets half)")
    ap.add_argument("--models", default="gpt2,llama,qwen2-zero,llama30-0.02,llama30-0.1,llama30-0.2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rev = (
        args.old_rev
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    OldIG = old_ig_class(rev)
    items_all = list(load_benchmark("embedded:tofu", "forget10"))
    workdir = Path(tempfile.mkdtemp(prefix="ig_refinement_"))
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"old code: {rev[:10]} (64 Gauss-Legendre steps, doubling from scratch to 1024); new: this tree's defaults")
    print(
        f"{'model':<16}{'variant':<6}{'passes/item':>14}{'s/item':>9}{'max gap':>9}{'>5%':>5}{'stopped':>8}"
        f"{'min cos':>9}"
    )
    for name in args.models.split(","):
        baseline = "zero" if name.endswith("-zero") else "pad"
        if name.startswith("llama30"):
            path = llama30(float(name.split("-")[1]), load_model("embedded:llama").tokenizer, workdir)
            n = max(1, args.items // 2)
        else:
            path, n = f"embedded:{name.removesuffix('-zero')}", args.items
        model = load_model(path)
        items = items_all[:n]
        attribute(model, items[:1], method="ig", steps=2, max_passes=2)  # warm-up
        prepared, _ = prepare_items(model, items)
        t = time.perf_counter()
        old = OldIG(baseline=baseline).run(model, prepared)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        new = attribute(model, items, method="ig", baseline=baseline)
        t_new = time.perf_counter() - t
        rows = {
            "old": summarise(old, t_old, [2 * a.extras["steps"] - 64 for a in old]),
            "new": summarise(new, t_new, [a.extras["passes"] for a in new]),
        }
        cos = min(cosine(a.scores, b.scores) for a, b in zip(old, new))
        for variant, r in rows.items():
            print(
                f"{name:<16}{variant:<6}{r['passes_mean']:>8.0f} /{r['passes_max']:>4}{r['s_per_item']:>9.2f}"
                f"{r['gap_max']:>9.4f}{r['over']:>5}{r['stopped'] if variant == 'new' else '-':>8}"
                + (f"{cos:>9.4f}" if variant == "new" else f"{'-':>9}"),
                flush=True,
            )
        print(
            f"{'':<16}old/new: passes x{rows['old']['passes_mean'] / rows['new']['passes_mean']:.2f}, "
            f"wall x{t_old / t_new:.2f}",
            flush=True,
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
