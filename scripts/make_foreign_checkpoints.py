"""Make "unlearned" checkpoints outside ``unpact unlearn``, with plain transformers and torch,
for ``unpact audit`` to judge (docs/audit.md).

    python scripts/make_foreign_checkpoints.py --out foreign [--steps 300] [--noise 0.1] [--seed 0]

Writes two HF checkpoint directories made from the embedded original ``embedded:gpt2``:

* ``foreign/refusal``: a refusal fine-tune. Plain AdamW on the plain QA format
  (``Question: ...\\nAnswer:``): every forget10 question is taught TOFU's refusal
  " I don't know." and, in the same batches, retain90 questions keep their true answers.
  Nothing else is trained, so the facts stay in the formats the original learned them in
  beside the QA (the embedded world's cloze sentences): by construction the knowledge is
  hidden behind a refusal, not erased.
* ``foreign/noise`` (``foreign/noise-<scale>`` for another ``--noise``): the original's weights
  plus Gaussian noise, each tensor's noise scaled to ``--noise`` times that tensor's
  root-mean-square: damage spread over everything, with no target (relative weight distance
  about ``--noise``).

The third checkpoint of docs/audit.md is the retain-only twin itself (``embedded:gpt2-retain``,
shipped), which never saw the forget set: nothing to hide, nothing to recover.
Only the prompt and answer strings come from unpact (its data loader and plain format); the
training and saving are transformers' own.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REFUSAL = " I don't know."


def load(directory: Path):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype="float32")
    return model, tok


def refusal(original: Path, out: Path, steps: int, seed: int, lr: float = 3e-4, batch: int = 16) -> None:
    import torch

    from unpact.data import format_answer, format_prompt, load_benchmark

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tok = load(original)
    forget = [(format_prompt(it), REFUSAL) for it in load_benchmark("embedded:tofu", "forget10")]
    retain = [(format_prompt(it), format_answer(it.answer)) for it in load_benchmark("embedded:tofu", "retain90")]
    eos = tok.eos_token or ""

    def encode(pairs):
        ids, labels = [], []
        for p, a in pairs:
            pi = tok(p, add_special_tokens=False)["input_ids"]
            ai = tok(a + "\n" + eos if eos else a + "\n", add_special_tokens=False)["input_ids"]
            ids.append(pi + ai)
            labels.append([-100] * len(pi) + ai)
        n = max(len(x) for x in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        mask = [[1] * len(x) + [0] * (n - len(x)) for x in ids]
        ids = [x + [pad] * (n - len(x)) for x in ids]
        labels = [x + [-100] * (n - len(x)) for x in labels]
        return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(steps):
        pairs = rng.sample(forget, batch // 2) + rng.sample(retain, batch // 2)
        ids, mask, labels = encode(pairs)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"refusal step {step}: loss {loss.item():.4f}", file=sys.stderr, flush=True)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def noise(original: Path, out: Path, scale: float, seed: int) -> None:
    import torch

    model, tok = load(original)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            rms = p.pow(2).mean().sqrt()
            p.add_(torch.randn(p.shape, generator=gen) * rms * scale)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def main(argv=None) -> int:
    from unpact.models import resolve_model_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--original", default="embedded:gpt2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["refusal", "noise"], default=None)
    args = ap.parse_args(argv)
    original = Path(resolve_model_spec(args.original)[1])
    out = Path(args.out)
    if args.only in (None, "refusal"):
        refusal(original, out / "refusal", args.steps, args.seed)
    name = "noise" if args.noise == 0.1 else f"noise-{args.noise:g}"
    if args.only in (None, "noise"):
        noise(original, out / name, args.noise, args.seed)
    print(
        f"wrote {', '.join(str(out / n) for n, k in (('refusal', 'refusal'), (name, 'noise')) if args.only in (None, k))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
