"""Benchmark: unpact attribution vs captum, side by side in one process (NOT a test).

Models: (a) the embedded model ``embedded:gpt2`` (1.9M parameters) and (b) a randomly initialised
GPT-2-small-size checkpoint (124M parameters, ``GPT2Config()`` defaults, 50257
vocab) made on the fly. Items: prompts of 32-128 tokens with 8-token answers.

Printed ratios (targets from issue 4):
  loo            captum LLMAttribution(FeatureAblation) default / unpact loo          >= 5
                 (captum's default forward mode is token by token, ``forward_in_tokens=True``;
                 its default ``use_cached_outputs=True`` raises IndexError on transformers 5,
                 so it runs with the cache off)
  loo per-seq    captum FeatureAblation, one forward per perturbation
                 (``forward_in_tokens=False``, captum's fastest per-perturbation mode) / unpact   info
  loo batched    captum FeatureAblation, all perturbations in one batch / unpact      >= 1
  IG             captum LLMGradientAttribution(LayerIntegratedGradients) / unpact IG  >= 3   (equal steps)
  heads          unpact heads / one forward pass of the same items                    <= 3
  IG memory      peak RSS of IG on a 512-token prompt of the 124M model at 64 steps,  < 4 GB
                 sampled every 5 ms in a fresh process that loads only that model

On a 2-core CPU the 124M model is slow, so by default (b) runs a subset of the
prompts and fewer IG steps (the memory row always runs 64 steps); ``--full`` runs
everything at the issue's sizes (20 prompts, 64 steps; hours on 2 cores).

Usage:
    python benchmarks/attribution.py            # ~15 min on an idle 2-core CPU
    python benchmarks/attribution.py --quick    # a few minutes: smaller subsets, no memory row
    python benchmarks/attribution.py --full     # everything at the issue's sizes (long on CPU)
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the author Ana Lind was born in Lima and writes crime fiction about a quick brown fox "
    "that jumps over the lazy dog while the cat sat on the mat question answer genre capital "
    "of France Paris unlearning methods mostly hide knowledge instead of erasing it"
).split()


def make_models(root: Path):
    """(name, bridge, checkpoint directory or None) for the embedded model and the 124M model."""
    from unpact import load_model

    return [("embedded:gpt2", load_model("embedded:gpt2"), None)] + _big(root)


def _big(root: Path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from unpact import load_model
    from unpact.testing import make_tokenizer

    big_dir = root / "gpt2-small"
    tok = make_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0, pad_token_id=1)).eval().save_pretrained(str(big_dir))
    tok.save_pretrained(str(big_dir))
    return [("random GPT-2 small (124M)", load_model(big_dir), big_dir)]


def make_items(tokenizer, n: int, seed: int = 0, lo: int = 32, hi: int = 128, answer_len: int = 8):
    """n (prompt, answer) pairs: prompts of lo..hi tokens (BOS included), answers of answer_len tokens."""
    from unpact.scoring import tokenize

    rng = random.Random(seed)
    items = []
    while len(items) < n:
        target = rng.randint(lo, hi) - 1
        words, ids = [], []
        while len(ids) < target:
            words.append(rng.choice(WORDS))
            ids = tokenize(tokenizer, " ".join(words))
        prompt = tokenizer.decode(ids[:target])
        ans = tokenizer.decode(tokenize(tokenizer, " " + " ".join(rng.choice(WORDS) for _ in range(8)))[:answer_len])
        if len(tokenize(tokenizer, prompt)) == target and len(tokenize(tokenizer, ans)) == answer_len:
            items.append((prompt, ans))
    return items


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def hf_of(model_dir, model):
    if model_dir is None:  # embedded model: its HF model, as captum would get it
        return model.original_model
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager").eval()


def captum_input(tok, prompt, baseline_id):
    from captum.attr import TextTokenInput

    adds_bos = tok.encode(prompt)[:1] == [tok.bos_token_id]
    return TextTokenInput(
        prompt if adds_bos else tok.bos_token + prompt, tok, baselines=baseline_id, skip_tokens=[tok.bos_token_id]
    )


def run_captum_fa_default(hf, tok, items, bid):
    """captum LLMAttribution(FeatureAblation) at its defaults: one perturbation per call and
    the answer scored token by token (``forward_in_tokens=True``). Its default KV cache for
    that loop (``use_cached_outputs=True``) raises IndexError on transformers 5 (in GPT-2's
    position embedding ``wpe``, index out of range), so the cache is off."""
    from captum.attr import FeatureAblation, LLMAttribution

    llm = LLMAttribution(FeatureAblation(hf), tok)
    for p, a in items:
        llm.attribute(captum_input(tok, p, bid), target=a, use_cached_outputs=False)


def run_captum_fa_by_seq(hf, tok, items, bid):
    """captum LLMAttribution(FeatureAblation) with ``forward_in_tokens=False``: one forward of
    prompt + answer per perturbation (captum's fastest per-perturbation mode)."""
    from captum.attr import FeatureAblation, LLMAttribution

    llm = LLMAttribution(FeatureAblation(hf), tok)
    for p, a in items:
        llm.attribute(captum_input(tok, p, bid), target=a, forward_in_tokens=False)


def run_captum_fa_batched(hf, tok, items, bid):
    """captum FeatureAblation on a batched forward: all perturbations of a prompt in one batch."""
    from captum.attr import FeatureAblation

    for p, a in items:
        pid = torch.tensor([[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"]])
        aid = torch.tensor(tok(a, add_special_tokens=False)["input_ids"])

        def fwd(ids):
            full = torch.cat([ids, aid.expand(ids.shape[0], -1)], 1)
            lp = hf(full).logits[:, ids.shape[1] - 1 : -1].log_softmax(-1)
            return lp.gather(-1, aid.expand(ids.shape[0], -1)[..., None])[..., 0].mean(-1)

        mask = torch.arange(pid.shape[1])[None]
        with torch.no_grad():
            FeatureAblation(fwd).attribute(pid, baselines=bid, feature_mask=mask, perturbations_per_eval=pid.shape[1])


def run_captum_ig(hf, tok, items, bid, steps):
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution

    llm = LLMGradientAttribution(LayerIntegratedGradients(hf, hf.get_input_embeddings()), tok)
    for p, a in items:
        llm.attribute(captum_input(tok, p, bid), target=a, n_steps=steps)


def ig_memory(model_dir: Path, n_tokens: int, steps: int) -> tuple[float, float]:
    """(peak RSS during IG minus RSS before it, peak RSS during IG) in GB, for IG on one
    n_tokens prompt in a fresh process that loads only this model (RSS sampled every 5 ms)."""
    code = f"""
import threading, time, torch, sys
torch.set_num_threads({torch.get_num_threads()})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from attribution import make_items
from unpact import load_model
from unpact.attribution import attribute
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
m = load_model({str(model_dir)!r})
items = make_items(m.tokenizer, 1, seed=7, lo={n_tokens}, hi={n_tokens})
attribute(m, (items[0][0][:200], items[0][1]), method="integrated_gradients", steps=2, max_passes=2)  # warm-up
before = rss(); peak = [before]; done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
t = threading.Thread(target=sample); t.start()
attribute(m, items, method="integrated_gradients", steps={steps}, max_passes={steps})
done.set(); t.join()
print(before, max(peak[0], rss()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, peak = map(int, out.stdout.split()[-2:])
    return (peak - before) / 2**30, peak / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets (~2 minutes)")
    ap.add_argument("--full", action="store_true", help="the issue's sizes on both models (long on CPU)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from unpact import scoring
    from unpact.attribution import attribute

    # per model: (n prompts, IG steps, n prompts for the per-perturbation captum runs and IG)
    if args.full:
        plans = [(20, 64, 20), (20, 64, 20)]
    elif args.quick:
        plans = [(4, 16, 2), (1, 4, 1)]
    else:
        plans = [(20, 64, 5), (3, 8, 1)]
    rows = []
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        for (name, model, mdir), (n, steps, n_cap) in zip(models, plans):
            tok = model.tokenizer
            hf = hf_of(mdir, model)
            bid = scoring.pad_id(tok)
            items = make_items(tok, n)
            sub = items[:n_cap]
            ntok = sum(len(tok(p)["input_ids"]) for p, _ in items)
            print(
                f"\n== {name}: {sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M params, {n} prompts "
                f"({ntok} prompt tokens), IG steps {steps}, captum-default subset {n_cap}",
                flush=True,
            )
            with torch.no_grad():
                attribute(model, items[:1], method="loo")  # warm-up
            t_loo_sub = timed(lambda: attribute(model, sub, method="loo", mode="baseline"))
            t_fa = timed(lambda: run_captum_fa_default(hf, tok, sub, bid))
            rows.append(
                (
                    name,
                    f"loo vs captum FeatureAblation default (token by token, cache off) ({n_cap} prompts)",
                    t_loo_sub,
                    t_fa,
                    t_fa / t_loo_sub,
                    ">= 5",
                )
            )
            t_fas = timed(lambda: run_captum_fa_by_seq(hf, tok, sub, bid))
            rows.append(
                (
                    name,
                    f"loo vs captum FeatureAblation forward_in_tokens=False ({n_cap} prompts)",
                    t_loo_sub,
                    t_fas,
                    t_fas / t_loo_sub,
                    "info",
                )
            )
            t_loo = timed(lambda: attribute(model, items, method="loo", mode="baseline"))
            t_fab = timed(lambda: run_captum_fa_batched(hf, tok, items, bid))
            rows.append(
                (name, f"loo vs captum FeatureAblation one batch ({n} prompts)", t_loo, t_fab, t_fab / t_loo, ">= 1")
            )
            t_del = timed(lambda: attribute(model, items, method="loo", mode="delete"))
            rows.append(
                (name, f"loo delete mode (paper) vs baseline mode ({n} prompts)", t_del, t_loo, t_loo / t_del, "info")
            )
            t_ig = timed(lambda: attribute(model, sub, method="integrated_gradients", steps=steps, max_passes=steps))
            t_cig = timed(lambda: run_captum_ig(hf, tok, sub, bid, steps))
            rows.append(
                (
                    name,
                    f"IG vs captum LLMGradientAttribution(LIG), {steps} steps ({n_cap} prompts)",
                    t_ig,
                    t_cig,
                    t_cig / t_ig,
                    ">= 3",
                )
            )
            seqs = scoring.encode_many(model, [p for p, _ in items], [a for _, a in items])
            t_fwd = min(timed(lambda: scoring.score_sequences(model, seqs, max_batch_tokens=4096)) for _ in range(2))
            t_heads = min(timed(lambda: attribute(model, items, method="heads")) for _ in range(2))  # as the forward
            rows.append(
                (
                    name,
                    f"heads (all layers/heads) vs one forward ({n} prompts)",
                    t_heads,
                    t_fwd,
                    t_heads / t_fwd,
                    "<= 3 (unpact/forward)",
                )
            )
            if "124M" in name and not args.quick:
                grow, peak = ig_memory(mdir, 512, 64)
                rows.append((name, "IG memory, 512-token prompt, 64 steps (GB)", grow, peak, peak, "< 4 GB"))
            del hf
            for r in rows[done:]:
                print("  ", r, flush=True)
            done = len(rows)
    print("\n| model | measurement | unpact (s) | reference (s) | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name, what, a, b, r, target in rows:
        if "GB" in what:
            print(
                f"| {name} | {what} | IG's own peak {a:.2f} GB | process peak RSS {b:.2f} GB | {r:.2f} GB | {target} |"
            )
        else:
            print(f"| {name} | {what} | {a:.2f} | {b:.2f} | {r:.2f}x | {target} |")


if __name__ == "__main__":
    main()
