"""Peak memory of emphasis recovery on a random GPT-2 small (124M), before and after logits
only at the scored positions, in one run.

    OMP_NUM_THREADS=1 python benchmarks/recovery_memory.py [--before REV] [--items 8] [--json out.json]

The model is ``GPT2Config()``'s defaults (124M parameters, 50257-token vocabulary), random,
with the tiny BPE tokenizer of :mod:`unpact.testing` (as ``benchmarks/main_job_scale.py``):
no download. ``unpact.emphasis.recover`` runs with the default :class:`RecoveryConfig` (every
template and activation setting, ``max_batch_tokens`` 16,384, ``max_new_tokens`` 20) on
``--items`` forget, retain and general items with given keywords (no attribution), one
torch thread.

Each side runs in its own fresh process, one after the other: first the code of ``--before``
(a git revision, default: where this branch left ``main``; its tree is exported to a temporary
folder and imported from there), then this working tree. Peak memory is the process's
high-water resident set (``VmHWM`` of ``/proc/self/status``, exact, kernel-kept), next to the
resident set after loading the model; the two tables must be equal (log-probs within 1e-5).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _SourceFinder:
    """Imports ``unpact`` (and its ``hooks``/``analyses`` packages, as pyproject's package-dir
    maps them) from the source tree ``root`` instead of the installed one."""

    def __init__(self, root: Path):
        self.map = {"unpact": root / "unpact", "unpact.hooks": root / "hooks", "unpact.analyses": root / "analyses"}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.map:
            d = self.map[fullname]
            return importlib.util.spec_from_file_location(
                fullname, d / "__init__.py", submodule_search_locations=[str(d)]
            )
        if fullname.startswith("unpact.") and path is not None:
            return importlib.machinery.PathFinder.find_spec(fullname, path)
        return None


def _status(key: str) -> int:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


#: Longer questions and more names than benchmarks/recovery.py's, for a 124M model's batches.
NAMES = [
    "Ana Lind",
    "Bo Reyes",
    "Cara Moll",
    "Dan Oduya",
    "Eva Sol",
    "Finn Ware",
    "Gia Pratt",
    "Hugo Tan",
    "Ines Vale",
    "Jon Abel",
    "Kira Holm",
    "Lev Mora",
]
QUESTIONS = {
    "forget": ("Where was the author {n} born, according to the archive of the society?", "Lima, in Peru"),
    "retain": ("What genre does the writer {n} mostly write in?", "crime fiction"),
    "general": ("What is the favourite colour of {n}?", "deep blue"),
}


def make_model(root: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from unpact.testing import make_tokenizer

    d = root / "gpt2-small"
    tok = make_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0, pad_token_id=1)).eval().save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def child(args) -> None:
    """One side: load, recover, print a JSON line with the memory and the table."""
    if args.src:
        sys.meta_path.insert(0, _SourceFinder(Path(args.src)))
    import torch

    torch.set_num_threads(1)
    import unpact
    from unpact import load_model
    from unpact.emphasis import RecoveryConfig, recover

    model = load_model(args.model)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recovery import qa_items

    forget, fk = qa_items(args.items, 0, "forget", NAMES, QUESTIONS)
    retain, rk = qa_items(args.items, args.items, "retain", NAMES, QUESTIONS)
    general, gk = qa_items(args.items, 2 * args.items, "general", NAMES, QUESTIONS)
    cfg = RecoveryConfig()
    loaded = _status("VmRSS")
    t = time.perf_counter()
    table = recover(
        model,
        forget,
        original=model,
        controls={"retain": retain, "general": general},
        keywords=fk,
        control_keywords={"retain": rk, "general": gk},
        config=cfg,
    )
    secs = time.perf_counter() - t
    print(
        json.dumps(
            {
                "unpact": unpact.__file__,
                "loaded_rss": loaded,
                "peak_rss": _status("VmHWM"),
                "seconds": secs,
                "table": table.to_dict(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=8, help="items per group (forget, retain, general)")
    ap.add_argument("--before", default=None, help="git revision of the 'before' code (default: merge-base with main)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recovery import table_differences

    rev = (
        args.before
        or subprocess.check_output(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], text=True).strip()
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        before_src = Path(tmp) / "before"
        before_src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive, check=True)
        model_dir = make_model(Path(tmp))
        runs = {}
        for side, src in (("before", before_src), ("after", ROOT)):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--model",
                    str(model_dir),
                    "--src",
                    str(src),
                    "--items",
                    str(args.items),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            runs[side] = json.loads(out.stdout.strip().splitlines()[-1])
    diffs = table_differences(runs["before"]["table"], runs["after"]["table"])
    gb = 1e9
    print(
        f"random GPT-2 small (124M, vocab 50257); recover() with the default RecoveryConfig; {args.items} items "
        f"x 3 groups; 1 thread; before = {rev[:10]}"
    )
    print(f"{'':8}{'unpact from':>40}{'RSS loaded (GB)':>17}{'peak RSS (GB)':>15}{'peak - loaded':>15}{'wall (s)':>10}")
    for side, r in runs.items():
        print(
            f"{side:8}{str(Path(r['unpact']).parent)[-40:]:>40}{r['loaded_rss'] / gb:>17.2f}{r['peak_rss'] / gb:>15.2f}"
            f"{(r['peak_rss'] - r['loaded_rss']) / gb:>15.2f}{r['seconds']:>10.1f}"
        )
    print("tables equal (log-probs within 1e-5)" if not diffs else "TABLES DIFFER:\n  " + "\n  ".join(diffs[:20]))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "before_rev": rev,
                    "items": args.items,
                    "differences": diffs,
                    **{s: {k: v for k, v in r.items() if k != "table"} for s, r in runs.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
