"""Emphasis recovery: the batched ``recover`` vs the reference path (one evaluation per setting and group).

Both compute the same table (checked here: same recovered items, rates, flags;
log-prob deltas within 1e-5). The cost that matters on the TransformerBridge is
the number of forward calls (a large fixed Python cost each), so that is counted
(a forward pre-hook on the model) next to the wall time and the ratio old/new.

    python benchmarks/recovery.py [--model SPEC] [--items 4] [--max-new-tokens 24] [--kinds attention]

Default model: ``embedded:gpt2`` when built, else a tiny random 2-layer gpt2
(the forward counts do not depend on the weights, only on when answers end).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch


#: Author names and the question of each group that :func:`qa_items` builds items from.
NAMES = ["Ana Lind", "Bo Reyes", "Cara Moll", "Dan Oduya", "Eva Sol", "Finn Ware", "Gia Pratt", "Hugo Tan"]
QUESTIONS = {
    "forget": ("Where was the author {n} born?", "Lima"),
    "retain": ("What genre does {n} write?", "crime fiction"),
    "general": ("What is the favourite colour of {n}?", "deep blue"),
}


def qa_items(n: int, start: int, kind: str, names=NAMES, questions=QUESTIONS):
    """``n`` QA items of group ``kind`` about ``names`` from the ``start``-th on (a number appended
    once the names run out), and each item's keywords (its name)."""
    from unpact.data import QAItem

    q, a = questions[kind]
    out, kws = [], []
    for i in range(n):
        name = names[(start + i) % len(names)] + ("" if start + i < len(names) else f" {start + i}")
        out.append(QAItem(q.format(n=name), a, id=f"{kind}{i}"))
        kws.append([name])
    return out, kws


def table_differences(a, b, tol: float = 1e-5, path: str = "") -> list[str]:
    """Where two recovery tables' ``to_dict()`` differ (floats named ``*logprob*`` compared within ``tol``)."""
    diffs: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        for k in a:
            diffs += table_differences(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        for i, (x, y) in enumerate(zip(a, b)):
            diffs += table_differences(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and "logprob" in path:
        if not (math.isclose(a, b, abs_tol=tol) or (math.isnan(a) and math.isnan(b))):
            diffs.append(f"{path}: {a} != {b}")
    elif a != b:
        diffs.append(f"{path}: {a!r} != {b!r}")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--items", type=int, default=4, help="items per group (forget, retain, general)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--kinds", default="attention")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from unpact import load_model
    from unpact.emphasis import RecoveryConfig
    from unpact.emphasis import recover
    from unpact.models import embedded_model_names
    from unpact.testing import make_tiny_checkpoint

    spec = args.model
    if spec is None:
        spec = (
            "embedded:gpt2"
            if "gpt2" in embedded_model_names()
            else str(make_tiny_checkpoint("gpt2", tempfile.mkdtemp(), n_layers=2))
        )
    model = load_model(spec)
    forget, fk = qa_items(args.items, 0, "forget")
    retain, rk = qa_items(args.items, args.items, "retain")
    general, gk = qa_items(args.items, 2 * args.items, "general")
    cfg = RecoveryConfig(max_new_tokens=args.max_new_tokens, kinds=tuple(args.kinds.split(",")))

    calls = {"n": 0}
    model.register_forward_pre_hook(lambda mod, inp: calls.__setitem__("n", calls["n"] + 1))

    def run(batched: bool):
        calls["n"] = 0
        t = time.perf_counter()
        table = recover(
            model,
            forget,
            original=model,
            controls={"retain": retain, "general": general},
            keywords=fk,
            control_keywords={"retain": rk, "general": gk},
            config=cfg,
            batched=batched,
        )
        return table, calls["n"], time.perf_counter() - t

    old, n_old, t_old = run(False)
    new, n_new, t_new = run(True)
    diffs = table_differences(old.to_dict(), new.to_dict())
    n_runs = 1 + len(cfg.templates) + sum(s.factor != 1 for s in cfg.settings())
    print(
        f"model {spec}: {model.cfg.n_layers} layers; {args.items} items x 3 groups; {n_runs} runs "
        f"(plain + {len(cfg.templates)} templates + activation settings); max_new_tokens {args.max_new_tokens}"
    )
    print(f"{'':16}{'reference':>12}{'batched':>12}{'ratio':>9}")
    print(f"{'forward calls':16}{n_old:>12}{n_new:>12}{n_old / max(n_new, 1):>8.1f}x")
    print(f"{'wall seconds':16}{t_old:>12.2f}{t_new:>12.2f}{t_old / t_new:>8.1f}x")
    print("tables equal (log-probs within 1e-5)" if not diffs else "TABLES DIFFER:\n  " + "\n  ".join(diffs[:20]))


if __name__ == "__main__":
    main()
