"""The main job on a random GPT-2 small (124M): time and peak memory per stage, and a
projection for a 1B and a 7B model on one GPU.

The model is ``GPT2Config()``'s defaults (124M parameters, 50257-token vocabulary),
randomly initialised, with unpact's small test tokenizer; the data is the embedded TOFU
world (``--max-items`` items per group) so every stage has real work. Stages are timed
from the main job's own stage callbacks (a stage's time includes loading what it loads);
peak memory is the process's resident memory (sampled every 5 ms) on CPU and
``torch.cuda.max_memory_allocated`` on a GPU, both per stage.

    python benchmarks/main_job_scale.py                      # 124M, cpu, 8 items, 2 methods
    python benchmarks/main_job_scale.py --small              # a seconds-long check (tiny model)
    python benchmarks/main_job_scale.py --device cuda --json out.json

The projection (printed after the measurement, marked as such) scales each stage's time
by the ratio of parameter counts (every stage's work is forward/backward passes over the
same tokens, whose cost is proportional to the parameters at fixed sequence lengths) and
states the memory a model of that size needs for its weights, its AdamW state in
unlearning, and the measured activation share scaled by the width x depth ratio. It is an
estimate for the same kind of device as the measurement: a CPU measurement says nothing
about a GPU, whose times must be measured there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

#: Models the projection is made for: parameters, d_model, layers (Llama-3.2-1B, Llama-2-7B).
PROJECT = {"1B (Llama-3.2-1B)": (1.24e9, 2048, 16), "7B (Llama-2-7B)": (6.74e9, 4096, 32)}


class PeakMemory:
    """Peak memory since the last :meth:`reset`: CUDA allocator peak, or sampled process RSS."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        if not self.cuda:
            import psutil

            self._proc = psutil.Process()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self._proc.memory_info().rss

    def read(self) -> int:
        return int(torch.cuda.max_memory_allocated()) if self.cuda else self.peak

    def close(self) -> None:
        self._stop.set()


def make_model(root: Path, small: bool) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from unpact.testing import make_tiny_checkpoint, make_tokenizer

    d = root / ("tiny-gpt2" if small else "gpt2-small")
    if small:
        return make_tiny_checkpoint("gpt2", d)
    tok = make_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0, pad_token_id=1)).eval().save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="a tiny model and 2 items: checks the script runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-items", type=int, default=8)
    ap.add_argument("--methods", default="ga_gdr,npo_gdr")
    ap.add_argument("--steps", type=int, default=5, help="unlearning steps per method")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unpact.config import RunConfig, config_from_dict
    from unpact.pipeline import run_study

    root = Path(tempfile.mkdtemp(prefix="unpact-scale-"))
    model_dir = make_model(root, args.small)
    methods = [m for m in args.methods.split(",") if m]
    items = 2 if args.small else args.max_items
    cfg: RunConfig = config_from_dict(
        {
            "model": str(model_dir),
            "reference_model": None,
            "methods": methods,
            "device": args.device,
            "max_items": items,
            "out": str(root / "run"),
            "method_config": {m: {"steps": 2 if args.small else args.steps, "batch_size": 4} for m in methods},
            "attribution": {"subset": 1 if args.small else 2},
            "emphasis": {"max_control_items": items},
        }
    )
    mem = PeakMemory(args.device)
    mem.reset()
    baseline = 0 if mem.cuda else mem.read()  # the process before any model: libraries, data
    rows: list[dict] = []
    last = [time.perf_counter()]

    def on_stage(name: str, computed: bool) -> None:
        now = time.perf_counter()
        if computed:
            rows.append({"stage": name, "seconds": now - last[0], "peak_bytes": mem.read()})
        last[0] = now
        mem.reset()

    mem.reset()
    t0 = time.perf_counter()
    results = run_study(cfg, on_stage=on_stage)
    total = time.perf_counter() - t0
    mem.close()
    info = results["model_info"]
    n_params = int(info["n_params"])

    print(
        f"model: random GPT-2 ({n_params / 1e6:.0f}M parameters), device {args.device}, "
        f"{torch.get_num_threads()} threads, {items} items per group, methods {', '.join(methods)}"
    )
    print(f"{'stage':<28} {'seconds':>9} {'peak GB':>8}")
    for r in rows:
        print(f"{r['stage']:<28} {r['seconds']:>9.1f} {r['peak_bytes'] / 1e9:>8.2f}")
    print(f"{'whole job':<28} {total:>9.1f} {max(r['peak_bytes'] for r in rows) / 1e9:>8.2f}")
    if not mem.cuda:
        print(f"(peak = process RSS; {baseline / 1e9:.2f} GB of it before any model was loaded)")

    # ---- projection (an estimate, see the module docstring)
    # activations and buffers: the peak beyond the process baseline and the fp32 weights
    base_act = {r["stage"]: max(0, r["peak_bytes"] - baseline - 4 * n_params) for r in rows}
    width, depth = info["d_model"], info["n_layers"]
    proj = {}
    print("\nPROJECTION (not a measurement): same device kind, same items; time x parameter ratio;")
    print("memory = weights (bf16, 2 B/param) [+ fp32 master weights, grads and AdamW state, 16 B/param,")
    print("in unlearning] + the measured activation share x (d_model x layers) ratio")
    for label, (p, d, n) in PROJECT.items():
        ratio = p / n_params
        act_ratio = (d * n) / (width * depth)
        stages = []
        for r in rows:
            train = r["stage"].endswith("/unlearn")
            weights = p * (2 + (16 if train else 0))
            stages.append(
                {
                    "stage": r["stage"],
                    "seconds": r["seconds"] * ratio,
                    "peak_bytes": weights + base_act[r["stage"]] * act_ratio,
                }
            )
        proj[label] = stages
        peak = max(s["peak_bytes"] for s in stages)
        print(
            f"  {label}: whole job ~{sum(s['seconds'] for s in stages) / 3600:.1f} h on this device kind, "
            f"peak ~{peak / 1e9:.0f} GB (unlearning: {p * 18 / 1e9:.0f} GB of weights and optimizer state)"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": args.device,
                    "threads": torch.get_num_threads(),
                    "n_params": n_params,
                    "items": items,
                    "methods": methods,
                    "total_seconds": total,
                    "baseline_bytes": baseline,
                    "stages": rows,
                    "projection": proj,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
