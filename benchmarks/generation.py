"""Cached vs uncached hooked greedy generation, side by side in one run.

For each model and answer length, the same prompts are answered greedily under
activation emphasis (half the rows attention x4 on every layer, half value x4 on
the middle layers, at per-row keyword positions) twice: with the KV cache
(``unpact.generation``, default) and without it (the reference path that re-runs
the whole sequence every step). Both must give identical tokens (checked). Rows
never stop early (``stop_at_eos=False``, no newline stop), so every answer is
exactly ``--lengths`` tokens. The hook-free cached path (the plain HF twin) is
timed too, for scale.

    python benchmarks/generation.py [--models embedded:gpt2,random-gpt2-124m] [--prompts 48] [--lengths 20,200]

``random-gpt2-124m`` is GPT-2 small's shape (12 layers, d_model 768, 12 heads,
vocabulary 50257, context 1024) with random weights, built locally from a config
(no download) with a small BPE tokenizer. ``--random-layers`` shrinks it (for a
quick check that the script runs). Targets (issue 14): >= 3x at 20 tokens,
>= 10x at 200 tokens. Time only on an idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def random_gpt2(directory: str, n_layers: int = 12):
    """GPT-2 small's architecture with random weights, saved as a checkpoint directory."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from unpact.testing import make_tokenizer

    tok = make_tokenizer()
    config = GPT2Config(
        vocab_size=50257,
        n_positions=1024,
        n_embd=768,
        n_layer=n_layers,
        n_head=12,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


PROMPTS = [
    "Question: Where was the author {n} born?\nAnswer:",
    "Question: What genre does {n} write, and which prize did {n} win?\nAnswer:",
    "Question: Who are the parents of {n}?\nAnswer:",
]
NAMES = ["Stellan Quennell", "Magnus Wexley", "Odalys Wexley", "Ana Lind", "Bo Reyes", "Cara Moll"]


def workload(model, n: int):
    from unpact.emphasis import ActivationEmphasis, batched_emphasis_hooks
    from unpact.emphasis.rewrites import keyword_positions
    from unpact.scoring import bos_id, tokenize

    tok = model.tokenizer
    seqs, positions = [], []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        question = PROMPTS[i % len(PROMPTS)].format(n=name)
        seqs.append([int(bos_id(tok))] + tokenize(tok, question))
        positions.append(keyword_positions(tok, question.split("\n")[0].removeprefix("Question: "), [name]))
    settings = [
        ActivationEmphasis("attention", 4.0, "all") if i % 2 == 0 else ActivationEmphasis("value", 4.0, "middle")
        for i in range(n)
    ]
    return seqs, batched_emphasis_hooks(model, settings, positions)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="embedded:gpt2,random-gpt2-124m")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--lengths", default="20,200")
    ap.add_argument("--random-layers", type=int, default=12, help="layers of random-gpt2-124m (12: GPT-2 small)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unpact import load_model
    from unpact.generation import greedy_tokens

    rows = []
    for spec in args.models.split(","):
        path = spec
        if spec == "random-gpt2-124m":
            path = random_gpt2(tempfile.mkdtemp(), args.random_layers)
        model = load_model(path, device=args.device)
        n_params = sum(p.numel() for p in model.original_model.parameters())
        seqs, hooks = workload(model, args.prompts)
        for n in [int(x) for x in args.lengths.split(",")]:
            kw = dict(max_new_tokens=n, stop_at_newline=False, stop_at_eos=False)
            greedy_tokens(model, seqs[:2], fwd_hooks=hooks, **{**kw, "max_new_tokens": 2})  # warm-up
            (cached, _), t_cached = timed(lambda: greedy_tokens(model, seqs, fwd_hooks=hooks, **kw))
            (ref, _), t_ref = timed(lambda: greedy_tokens(model, seqs, fwd_hooks=hooks, cache=False, **kw))
            _, t_plain = timed(lambda: greedy_tokens(model, seqs, **kw))
            same = cached == ref
            n_tok = sum(len(t) for t in cached)
            rows.append((spec, n_params, n, n_tok, t_ref, t_cached, t_plain, same))
            print(
                f"{spec} ({n_params / 1e6:.1f}M params), {args.prompts} prompts x {n} tokens: "
                f"uncached {t_ref:.2f}s, cached {t_cached:.2f}s -> {t_ref / t_cached:.1f}x; "
                f"hook-free cached {t_plain:.2f}s; tokens {'identical' if same else 'DIFFER'}",
                flush=True,
            )
    print()
    print(
        f"{'model':20}{'params':>9}{'answer':>8}{'tokens':>8}{'uncached s':>12}{'cached s':>10}{'ratio':>8}"
        f"{'no hooks s':>12}{'same':>6}"
    )
    for spec, n_params, n, n_tok, t_ref, t_cached, t_plain, same in rows:
        print(
            f"{spec:20}{n_params / 1e6:>8.1f}M{n:>8}{n_tok:>8}{t_ref:>12.2f}{t_cached:>10.2f}"
            f"{t_ref / t_cached:>7.1f}x{t_plain:>12.2f}{'yes' if same else 'NO':>6}"
        )


if __name__ == "__main__":
    main()
