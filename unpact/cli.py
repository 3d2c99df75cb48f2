"""The ``unpact`` command line: parses arguments, shows progress, prints errors.

Library code never prints; this module owns the terminal. Bad input ends with a
one-line ``unpact: error: ...`` on stderr and exit status 2.

Each command is one ``add_<name>`` function (its arguments) and one
``cmd_<name>`` function (what it does), registered in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from unpact.errors import UnpactError

EXIT_BAD_INPUT = 2


class CommandError(UnpactError):
    """Raised by a command for bad input it detects itself."""


# ----------------------------------------------------------------------- info


def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint directory, hub id or embedded:<name>")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def cmd_info(args: argparse.Namespace) -> int:
    from unpact.models import load_model, model_info

    info = model_info(load_model(args.model, device=args.device))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        ("model", info["spec"]),
        ("architecture", f"{info['architecture']} ({info['model_type']})"),
        ("layers", info["n_layers"]),
        ("heads", info["n_heads"]),
        ("d_model", info["d_model"]),
        ("d_head", info["d_head"]),
        ("vocabulary", info["d_vocab"]),
        ("context", info["n_ctx"]),
        ("parameters", f"{info['n_params']:,}"),
        ("dtype", info["dtype"]),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ------------------------------------------------------------------------ run


def add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML or JSON file with the same options (command-line flags win)")
    p.add_argument("--model", help="embedded:<name>, a checkpoint directory or a hub id (default embedded:gpt2)")
    p.add_argument("--reference-model", help="retain-only model for forget quality ('none' to skip)")
    p.add_argument("--benchmark", help="embedded:tofu (default), tofu, muse, wmdp, or a hub id")
    p.add_argument("--benchmark-path", help="local directory or file with the benchmark's splits")
    p.add_argument("--forget-split", help="forget split (default forget10)")
    p.add_argument("--retain-split", help="retain split (default retain90)")
    p.add_argument("--general", help="general-ability benchmark (default embedded:general; 'none' to skip)")
    p.add_argument("--general-split", help="its split (default qa)")
    p.add_argument("--general-path", help="local directory or file with the general benchmark")
    p.add_argument("--methods", help="comma-separated unlearning methods (default: the paper's six)")
    p.add_argument("--max-items", type=int, help="items per group to evaluate and attribute (default 24)")
    p.add_argument("--attribution", help="comma-separated attribution methods (loo is always computed)")
    p.add_argument("--factors", help="comma-separated activation-emphasis factors (default 1,2,4,8)")
    p.add_argument("--out", help="run directory (default ./unpact-run); an existing one is resumed")
    p.add_argument("--device", help="cpu (default), cuda, ...")
    p.add_argument("--seed", type=int)
    _add_format_args(p, default=None)
    p.add_argument("--max-batch-tokens", type=int, help="token budget of one forward batch in every stage (default 16384)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in unlearning's backward pass (less memory, more compute)")


def _add_format_args(p: argparse.ArgumentParser, default: str | None = "plain") -> None:
    p.add_argument("--prompt-format", choices=["plain", "chat"], default=default,
                   help="plain: 'Question: ...\\nAnswer:' (the embedded models'); chat: the tokenizer's chat "
                        "template, as open-unlearning's TOFU instruct models were fine-tuned (default plain)")
    p.add_argument("--system-prompt", default=None,
                   help="system message of the chat format (open-unlearning's TOFU models: "
                        "'You are a helpful assistant.')")


def _prompt_format(args: argparse.Namespace, model):
    from unpact.data import resolve_format

    return resolve_format(args.prompt_format, model.tokenizer, args.system_prompt)


def _run_config(args: argparse.Namespace):
    from unpact.config import config_from_dict, read_config_file

    data = read_config_file(args.config) if args.config else {}
    flags = {
        "model": args.model, "reference_model": args.reference_model, "benchmark": args.benchmark,
        "benchmark_path": args.benchmark_path, "forget_split": args.forget_split,
        "retain_split": args.retain_split, "general": args.general, "general_split": args.general_split,
        "general_path": args.general_path,
        "methods": args.methods, "max_items": args.max_items, "out": args.out, "device": args.device,
        "seed": args.seed, "prompt_format": args.prompt_format, "system_prompt": args.system_prompt,
        "max_batch_tokens": args.max_batch_tokens, "gradient_checkpointing": args.gradient_checkpointing,
    }
    for k, v in flags.items():
        if v is not None:
            data[k] = None if (k in ("reference_model", "general") and str(v).lower() == "none") else v
    if args.attribution:
        data.setdefault("attribution", {})["methods"] = [m.strip() for m in args.attribution.split(",") if m.strip()]
    if args.factors:
        try:
            data.setdefault("emphasis", {})["factors"] = [float(f) for f in args.factors.split(",")]
        except ValueError:
            raise CommandError(f"--factors must be comma-separated numbers, got {args.factors!r}") from None
    return config_from_dict(data)


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from unpact.pipeline import run_study, summary_table
    from unpact.progress import tqdm_progress

    cfg = _run_config(args)
    start = time.time()
    stages: list[str] = []

    def on_stage(name: str, computed: bool) -> None:
        if not stages:  # inputs are validated before the first stage: say where the run goes
            print(f"unpact run -> {cfg.out}", file=sys.stderr)
        stages.append(name)
        print(f"  {'done ' if computed else 'kept '} {name}", file=sys.stderr)

    results = run_study(cfg, progress=tqdm_progress, on_stage=on_stage)
    print(summary_table(results))
    print(f"\nresults: {os.path.join(cfg.out, 'results.json')}\nreport:  {os.path.join(cfg.out, 'report.html')}"
          f"\n({time.time() - start:.0f} s)")
    return 0


# --------------------------------------------------------------------- report


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (holds results.json)")


def cmd_report(args: argparse.Namespace) -> int:
    from unpact.report import build_report

    print(build_report(args.run_dir))
    return 0


# ------------------------------------------------------------ build-embedded


def add_build_embedded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None,
                   help="output directory (default: the installed package's shipped files)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long toy build (for tests)")
    p.add_argument("--arch", action="append", default=None,
                   help="architecture to train (repeatable; default: gpt2, llama, qwen2)")
    p.add_argument("--no-retain", action="store_true", help="skip the retain-only (-retain) twins")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training")


def cmd_build_embedded(args: argparse.Namespace) -> int:
    from unpact.embedded import SHIPPED_DIR
    from unpact.embedded.build import build_embedded
    from unpact.embedded.train import ARCHITECTURES, TrainConfig
    from unpact.progress import tqdm_progress

    archs = args.arch or list(ARCHITECTURES)
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise CommandError(f"unknown architecture {unknown[0]!r}; choose from {', '.join(ARCHITECTURES)}")
    tcfg = TrainConfig.tiny() if args.tiny else TrainConfig()
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError(f"--threads must be at least 1, got {args.threads}")
        tcfg.threads = args.threads
    out = args.out or str(SHIPPED_DIR)
    build_embedded(out, seed=args.seed, tiny=args.tiny, archs=archs, retain=not args.no_retain,
                   train_config=tcfg, progress=tqdm_progress)
    print(f"built the embedded world in {out}")
    return 0


# -------------------------------------------------------------------- unlearn


def add_unlearn(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint directory, hub id or embedded:<name>")
    p.add_argument("--method", required=True, help="unlearning method (ga_gdr, ga_klr, npo_gdr, npo_klr, task_vector, rmu, ga, npo, simnpo, idk)")
    p.add_argument("--benchmark", default="embedded:tofu", help="benchmark of the splits (default embedded:tofu)")
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument("--forget", required=True, help="forget split, e.g. forget10")
    p.add_argument("--retain", default=None, help="retain split, e.g. retain90 (needed by the GDR/KLR methods and rmu)")
    p.add_argument("--out", required=True, help="output directory: the checkpoint and unlearn.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter of the method's config (repeatable), e.g. --set lr=1e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-model", default=None, help="retain-only model for forget quality (optional)")
    p.add_argument("--no-eval", action="store_true", help="skip the before/after metrics")
    p.add_argument("--device", default=None)
    _add_format_args(p)


def _parse_overrides(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CommandError(f"--set takes KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cmd_unlearn(args: argparse.Namespace) -> int:
    from unpact.data import load_benchmark
    from unpact.metrics import evaluate
    from unpact.models import load_model, save_model
    from unpact.progress import tqdm_progress
    from unpact.unlearning import unlearn

    model = load_model(args.model, device=args.device)
    fmt = _prompt_format(args, model)
    forget = load_benchmark(args.benchmark, args.forget, path=args.benchmark_path)
    retain = load_benchmark(args.benchmark, args.retain, path=args.benchmark_path) if args.retain else None
    reference = load_model(args.reference_model, device=args.device) if args.reference_model else None
    splits = {"forget": forget, **({"retain": retain} if retain is not None else {})}

    def metrics(m) -> dict:
        out = {}
        for name, bench in splits.items():
            res = evaluate(m, bench, reference=reference if name == "forget" else None,
                           forget=(name == "forget"), progress=tqdm_progress, fmt=fmt)
            out[name] = {k: v for k, v in res.items() if not k.endswith("per_item") and k != "truth_ratios"}
        return out

    before = None if args.no_eval else metrics(model)
    result = unlearn(model, args.method, forget, retain, _parse_overrides(args.set), seed=args.seed,
                     progress=tqdm_progress, fmt=fmt)
    if result.stopped_early:
        print(f"unpact: warning: {result.message}", file=sys.stderr)
    save_model(result.model, args.out)
    report = {"model": args.model, "benchmark": args.benchmark, "forget": args.forget, "retain": args.retain,
              "seed": args.seed, "prompt_format": args.prompt_format, "system_prompt": args.system_prompt,
              **result.summary()}
    if before is not None:
        report["metrics"] = {"before": before, "after": metrics(result.model)}
    with open(os.path.join(args.out, "unlearn.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    last = result.losses[-1]["loss"] if result.losses else float("nan")
    print(f"{result.method}: {len(result.losses)} steps, final loss {last:.4g} -> {args.out}")
    if before is not None:
        for name in splits:
            b, a = before[name].get("rouge_l_recall"), report["metrics"]["after"][name].get("rouge_l_recall")
            if b is not None:
                print(f"  {name} ROUGE-L recall {b:.3f} -> {a:.3f}")
    return 0


# ------------------------------------------------------------------- recover


def add_recover(p: argparse.ArgumentParser) -> None:
    p.add_argument("--original", required=True, help="the model before unlearning (its KeyTokens give the keywords)")
    p.add_argument("--unlearned", required=True, help="the model after unlearning")
    p.add_argument("--benchmark", default="embedded:tofu/forget10",
                   help="forget items as BENCHMARK/SPLIT (default embedded:tofu/forget10)")
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument("--retain", default="retain90",
                   help="control split of the same benchmark, or BENCHMARK/SPLIT ('none' to skip; default retain90)")
    p.add_argument("--general", default="embedded:general/qa",
                   help="general-ability control as BENCHMARK/SPLIT ('none' to skip; default embedded:general/qa)")
    p.add_argument("--control", action="append", default=[], metavar="NAME=BENCHMARK/SPLIT",
                   help="another control set (repeatable), e.g. holdout=embedded:tofu/holdout10")
    p.add_argument("--method", default=None, help="name of the unlearning method (recorded in the table)")
    p.add_argument("--max-items", type=int, default=None, help="at most this many forget items (evenly spaced)")
    p.add_argument("--max-control-items", type=int, default=60, help="at most this many items per control (default 60)")
    p.add_argument("--threshold", type=float, default=0.5, help="ROUGE-L recall counted as right (default 0.5)")
    p.add_argument("--margin", type=float, default=0.1, help="control accuracy drop that flags collapse (default 0.1)")
    p.add_argument("--templates", default=None, help="comma-separated rewrite templates (default: all defaults)")
    p.add_argument("--factors", default="1,2,4,8", help="comma-separated activation factors (default 1,2,4,8)")
    p.add_argument("--layers", default="all,early,middle,late",
                   help="comma-separated layer sets, or index lists like 0-1-2 (default all,early,middle,late)")
    p.add_argument("--kinds", default="attention,value", help="activation kinds: attention, value, residual")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--device", default=None)
    _add_format_args(p)


def _split_spec(spec: str, default_bench: str | None = None) -> tuple[str, str]:
    if "/" in spec:
        bench, split = spec.rsplit("/", 1)
        return bench, split
    if default_bench is None:
        raise CommandError(f"give a split as BENCHMARK/SPLIT (e.g. embedded:tofu/forget10), got {spec!r}")
    return default_bench, spec


def _csv(text: str | None, what: str, conv=str) -> tuple:
    if text is None:
        return ()
    try:
        return tuple(conv(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise CommandError(f"{what} must be a comma-separated list, got {text!r}") from None


def cmd_recover(args: argparse.Namespace) -> int:
    from unpact.data import load_benchmark
    from unpact.emphasis import RecoveryConfig, recover, render_table
    from unpact.data import spread_sample
    from unpact.models import load_model
    from unpact.progress import tqdm_progress

    cfg_kw = dict(threshold=args.threshold, control_margin=args.margin, factors=_csv(args.factors, "--factors", float),
                  layer_sets=tuple(x.replace("-", ",") for x in _csv(args.layers, "--layers")),
                  kinds=_csv(args.kinds, "--kinds"), max_new_tokens=args.max_new_tokens,
                  max_control_items=args.max_control_items)
    if args.templates:
        cfg_kw["templates"] = _csv(args.templates, "--templates")
    cfg = RecoveryConfig(**cfg_kw)
    bench, split = _split_spec(args.benchmark)
    forget = load_benchmark(bench, split, path=args.benchmark_path)
    controls = {}
    if args.retain and args.retain.lower() != "none":
        b, s = _split_spec(args.retain, bench)
        controls["retain"] = load_benchmark(b, s, path=args.benchmark_path if b == bench else None)
    if args.general and args.general.lower() != "none":
        b, s = _split_spec(args.general)
        controls["general"] = load_benchmark(b, s)
    for c in args.control:
        if "=" not in c:
            raise CommandError(f"--control takes NAME=BENCHMARK/SPLIT, got {c!r}")
        name, spec = c.split("=", 1)
        b, s = _split_spec(spec, bench)
        controls[name.strip()] = load_benchmark(b, s, path=args.benchmark_path if b == bench else None)
    original = load_model(args.original, device=args.device)
    unlearned = load_model(args.unlearned, device=args.device)
    items = spread_sample(list(forget), args.max_items)
    table = recover(unlearned, items, original=original, controls=controls, config=cfg,
                    method=args.method or args.unlearned, fmt=_prompt_format(args, original), progress=tqdm_progress)
    table["original"], table["unlearned"], table["benchmark"] = args.original, args.unlearned, args.benchmark
    print(render_table(table))
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(directory, exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=2)
        os.replace(tmp, args.out)
        print(f"\ntable: {args.out}")
    return 0


# ----------------------------------------------------------------------- grid


def add_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the grid's TOML or JSON file (models, benchmarks, methods, [run])")
    p.add_argument("--out", default=None, help="grid directory (default: the config's out); an existing one is resumed")
    p.add_argument("--ray-address", default=None, help="address of a Ray cluster (default: start a local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run the cells one after the other in this process")


def cmd_grid(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from unpact.grid import read_grid, render_markdown, run_grid

    grid = read_grid(args.config)
    updates = {k: v for k, v in (("out", args.out), ("ray_address", args.ray_address)) if v is not None}
    if args.no_ray:
        updates["executor"] = "local"
    grid = dataclasses.replace(grid, **updates)
    start = time.time()

    def on_start(cells, todo) -> None:
        print(f"unpact grid -> {grid.out}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
              f"{len(todo)} to run ({'Ray' if grid.executor == 'ray' else 'in this process'})", file=sys.stderr)

    def on_cell(cell, outcome) -> None:
        status = outcome["status"]
        print(f"  {status:<6} {cell.name}" + (f": {outcome['error']}" if status != "done" else ""), file=sys.stderr)

    report = run_grid(grid, on_cell=on_cell, on_start=on_start)
    print(render_markdown(report))
    print(f"\ngrid report: {os.path.join(grid.out, 'grid.html')} (and grid.md, grid.json)\n({time.time() - start:.0f} s)")
    if report["n_failed"]:
        print(f"unpact: {report['n_failed']} of {report['n_cells']} cells did not finish (listed above); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------- registry

#: name -> (help, add-arguments function, run function)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "build-embedded": ("regenerate the embedded benchmarks and models from a seed", add_build_embedded,
                       cmd_build_embedded),
    "grid": ("run the study grid (models x benchmarks x methods) on Ray or in this process; one report",
             add_grid, cmd_grid),
    "info": ("print a model's architecture and sizes", add_info, cmd_info),
    "recover": ("emphasis recovery: prompt rewrites vs activation scaling on an unlearned model, with controls",
                add_recover, cmd_recover),
    "run": ("run the whole study: unlearn, attribute, emphasise, analyse, report", add_run, cmd_run),
    "report": ("rebuild report.html from a run's results.json", add_report, cmd_report),
    "unlearn": ("unlearn a forget split from a model with one method; save the checkpoint and losses", add_unlearn, cmd_unlearn),
}


def build_parser() -> argparse.ArgumentParser:
    from unpact import __version__

    parser = argparse.ArgumentParser(
        prog="unpact",
        description="See what LLM unlearning really does to a model: unlearn, attribute, "
        "emphasise, and check for collapse.",
    )
    parser.add_argument("--version", action="version", version=f"unpact {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _help, _add, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except UnpactError as exc:
        msg = " ".join(str(exc).split())
        print(f"unpact: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("unpact: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
