"""One unlearning step through unpact's loop vs a plain PyTorch/HF training step.

Same model, same batch (16 forget items), gradient ascent with AdamW and
gradient clipping. unpact's per-step cost is measured as the difference of two
runs of different length divided by the difference in steps (so one-off setup
is excluded); the plain step is a hand-written loop on the HF model.

    python benchmarks/unlearning.py [--model embedded:gpt2] [--steps 20]

Prints both per-step times and their ratio (target <= 1.15x).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model spec (default: embedded:gpt2 if installed, else a tiny gpt2)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from unpact import load_model
    from unpact.data import QAItem, prompt_answer_pair
    from unpact.models import embedded_model_names, hf_model_of
    from unpact.scoring import encode_many, pack, pad_id
    from unpact.testing import make_tiny_checkpoint
    from unpact.unlearning import unlearn

    spec = args.model
    if spec is None:
        spec = (
            "embedded:gpt2"
            if "gpt2" in embedded_model_names()
            else str(make_tiny_checkpoint("gpt2", tempfile.mkdtemp(), d_model=128, n_layers=4))
        )
    model = load_model(spec)
    items = [QAItem(f"Where was the author number {i} born?", f"in the city of Lima {i}") for i in range(16)]
    cfg = {"lr": 1e-5, "batch_size": 16}

    def ours(n: int) -> float:
        t = time.perf_counter()
        unlearn(model, "ga", items, None, {**cfg, "steps": n}, inplace=False)
        return time.perf_counter() - t

    seqs = encode_many(model, *zip(*[prompt_answer_pair(it) for it in items]))
    batch = pack(seqs, pad_id(model.tokenizer))
    hf = hf_model_of(model)

    def plain(n: int) -> float:
        import copy

        net = copy.deepcopy(hf)
        params = [p for p in net.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-5)
        ids, mask = batch.input_ids, batch.target_mask
        t = time.perf_counter()
        for _ in range(n):
            logits = net(input_ids=ids).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            m = mask[:, 1:].float()
            loss = ((lp * m).sum(-1) / m.sum(-1)).mean()  # = -NLL: gradient ascent minimises it
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        return (time.perf_counter() - t) / n

    n1, n2 = 2, 2 + args.steps
    ours(n1)  # warm-up
    per_ours, per_plain = [], []
    for _ in range(args.repeats):
        per_ours.append((ours(n2) - ours(n1)) / (n2 - n1))
        per_plain.append(plain(args.steps))
    o, p = min(per_ours), min(per_plain)
    print(f"model {spec}, batch 16, {args.steps} steps, best of {args.repeats}")
    print(f"unpact loop step : {o * 1000:8.2f} ms")
    print(f"plain torch step : {p * 1000:8.2f} ms")
    print(f"ratio            : {o / p:8.3f}x  (target <= 1.15x)")


if __name__ == "__main__":
    main()
