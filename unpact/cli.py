"""The ``unpact`` command line: parses arguments, shows progress, prints errors.

Library code never prints; this module owns the terminal. Bad input ends with a
one-line ``unpact: error: ...`` on stderr and exit status 2.

Each command is one ``add_<name>`` function (its arguments) and one
``cmd_<name>`` function (what it does), registered in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from unpact import __version__, threads
from unpact.data import QAItem, format_names, load_benchmark, resolve_format, spread_sample
from unpact.embedded import SHIPPED_DIR
from unpact.errors import InputError, UnpactError
from unpact.model_specs import check_model_spec
from unpact.packaged_models import PACKAGED_MODELS
from unpact.progress import ConsoleProgress, tqdm_progress
from unpact.rundir import write_json_atomic, write_text_atomic
from unpact.threads import describe

EXIT_BAD_INPUT = 2
#: what every --model / model argument accepts
MODEL_HELP = (
    "embedded:<name>, a checkpoint directory, a .gguf file (or a directory holding one), "
    "a short name of a packaged model ({packaged_models}), or a hub id"
)


def registered_names() -> dict[str, str]:
    """The names each registry holds now, by the placeholder that stands for them in a help text
    (``{methods}``, ``{attacks}``, ...). The registries are imported here, when a help text is
    shown, since they import torch: the thread policy is set first, and ``unpact --help`` stays fast.

    Example:
        >>> registered_names()["attacks"]
        'quantization, paraphrase, in_context, relearning'
    """
    threads.set_wait_policy()
    from unpact.attacks import ATTACKS
    from unpact.attribution import ATTRIBUTION_METHODS
    from unpact.emphasis import KINDS, TEMPLATES
    from unpact.probes import PROBES
    from unpact.unlearning import METHODS, PAPER_METHODS

    def with_aliases(name: str) -> str:
        aliases = ATTRIBUTION_METHODS.aliases(name)
        return f"{name} ({', '.join(aliases)})" if aliases else name

    return {
        "methods": ", ".join(METHODS),
        "paper_methods": ", ".join(PAPER_METHODS),
        "attacks": ", ".join(ATTACKS),
        "probes": ", ".join(PROBES),
        "templates": ", ".join(TEMPLATES),
        "kinds": ", ".join(KINDS),
        "attribution": ", ".join(map(with_aliases, ATTRIBUTION_METHODS)),
        "packaged_models": ", ".join(PACKAGED_MODELS) or "none registered",
    }


class RegistryHelpFormatter(argparse.HelpFormatter):
    """Argparse's help formatter, with each ``{placeholder}`` of :func:`registered_names` in a help
    text replaced by the names registered when the help is shown (so a registered component
    appears in ``--help`` without editing it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if not text or "{" not in text:
            return text
        for key, names in registered_names().items():
            text = text.replace("{" + key + "}", names)
        return text


class CommandError(UnpactError):
    """Raised by a command for bad input it detects itself."""


# ----------------------------------------------------------------------- info


def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def cmd_info(args: argparse.Namespace) -> int:
    from unpact.models import load_model, model_info
    from unpact.validation import check_device

    check_device(args.device)
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
        (
            "source",
            info["source_format"] + (f" ({info['quantization']}, de-quantized)" if info["quantization"] else ""),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ------------------------------------------------------------------------ run


def _add_dtype(p: argparse.ArgumentParser, default: str | None = "float32") -> None:
    from unpact.models import DTYPE_CHOICES

    p.add_argument(
        "--dtype",
        default=default,
        choices=DTYPE_CHOICES,
        help="precision of the models: float32 (default), bfloat16 or float16",
    )


def _add_study_args(p: argparse.ArgumentParser, out_default: str = "./unpact-run") -> None:
    """The options ``unpact run`` and ``unpact audit`` share (the benchmark, its splits, the answer
    format, the budget, --set ...): one builder, so both commands take them alike."""
    p.add_argument("--config", help="a TOML or JSON file with the same options (command-line flags win)")
    p.add_argument("--benchmark", help="embedded:tofu (default), tofu, muse, wmdp, or a hub id")
    p.add_argument("--benchmark-path", help="local directory or file with the benchmark's splits")
    p.add_argument("--forget-split", help="forget split (default forget10)")
    p.add_argument("--retain-split", help="retain split (default retain90)")
    p.add_argument("--general", help="general-ability benchmark (default embedded:general; 'none' to skip)")
    p.add_argument("--general-split", help="its split (default qa)")
    p.add_argument("--general-path", help="local directory or file with the general benchmark")
    p.add_argument("--max-items", type=int, help="items per group to evaluate and attribute (default 24)")
    p.add_argument("--attribution", help="comma-separated attribution methods: {attribution} (loo is always computed)")
    p.add_argument("--factors", help="comma-separated activation-emphasis factors (default 1,2,4,8)")
    p.add_argument("--out", help=f"run directory (default {out_default}); an existing one is resumed")
    p.add_argument("--device", help="cpu (default), cuda, ...")
    _add_dtype(p, None)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--seeds",
        help="comma-separated seeds, e.g. 0,1,2: the study once per seed, each in its own "
        "resumable run directory OUT/seed<k>, then verdicts pooled over them in "
        "OUT/pooled.json, pooled.md, pooled.html (default: one run at --seed)",
    )
    _add_format_args(p, default=None)
    p.add_argument(
        "--max-batch-tokens", type=int, help="token budget of one forward batch in every stage (default 16384)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, dotted for nested settings, with a JSON value (repeatable; wins over "
        "--config and the flags above), e.g. --set emphasis.threshold=0.8 --set "
        'attribution.keytokens.alpha=0.2 --set \'method_config={"ga_gdr": {"steps": 5}}\' '
        "(registered: attacks.names {attacks}; presence.probes {probes}; emphasis.templates "
        "{templates}; emphasis.kinds {kinds})",
    )


def add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=MODEL_HELP + " (default embedded:gpt2)")
    p.add_argument("--reference-model", help="retain-only model for forget quality ('none' to skip)")
    p.add_argument(
        "--methods", help="comma-separated unlearning methods: {methods} (default: the paper's six, {paper_methods})"
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in unlearning's backward pass (less memory, more compute)",
    )
    _add_study_args(p)


#: ``unpact run``'s named flags -> the config key each sets (every other key: ``--set KEY=VALUE``)
RUN_FLAGS = {
    "model": "model",
    "reference_model": "reference_model",
    "benchmark": "benchmark",
    "benchmark_path": "benchmark_path",
    "forget_split": "forget_split",
    "retain_split": "retain_split",
    "general": "general",
    "general_split": "general_split",
    "general_path": "general_path",
    "methods": "methods",
    "max_items": "max_items",
    "out": "out",
    "device": "device",
    "seed": "seed",
    "dtype": "dtype",
    "prompt_format": "prompt_format",
    "system_prompt": "system_prompt",
    "max_batch_tokens": "max_batch_tokens",
    "gradient_checkpointing": "gradient_checkpointing",
    "attribution": "attribution.methods",
    "factors": "emphasis.factors",
}


def _set_dotted(data: dict, key: str, value) -> None:
    """``data[a][b] = value`` for ``key = "a.b"`` (tables made as needed; a non-table in the way is an error)."""
    *path, last = key.split(".")
    d = data
    for i, part in enumerate(path):
        d = d.setdefault(part, {})
        if not isinstance(d, dict):
            raise CommandError(f"--set {key}: {'.'.join(path[: i + 1])!r} is not a table of settings")
    d[last] = value


def _add_format_args(p: argparse.ArgumentParser, default: str | None = "plain") -> None:
    p.add_argument(
        "--prompt-format",
        choices=format_names(),
        default=default,
        help="plain: 'Question: ...\\nAnswer:' (the embedded models'); chat: the tokenizer's chat "
        "template, as open-unlearning's TOFU instruct models were fine-tuned (default plain)",
    )
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system message of the chat format (open-unlearning's TOFU models: 'You are a helpful assistant.')",
    )


def _prompt_format(args: argparse.Namespace, model):
    return resolve_format(args.prompt_format, model.tokenizer, args.system_prompt)


#: ``unpact audit``'s named flags -> the config key each sets (the shared ones are ``unpact run``'s)
AUDIT_FLAGS = {
    **{
        f: k for f, k in RUN_FLAGS.items() if f not in ("model", "reference_model", "methods", "gradient_checkpointing")
    },
    "original": "model",
    "reference": "reference_model",
}


def _config_data(args: argparse.Namespace, flags: dict[str, str]) -> tuple[dict, dict]:
    """The config file's settings with the flags and ``--set`` on top, and the ``--set`` pairs alone."""
    from unpact.config import read_config_file

    data = read_config_file(args.config) if args.config else {}
    for flag, key in flags.items():
        v = getattr(args, flag)
        if v is None:
            continue
        if flag == "attribution":
            v = [m.strip() for m in v.split(",") if m.strip()]
        elif flag == "factors":
            v = list(_csv(v, "--factors", float))
        _set_dotted(data, key, v)
    overrides = _parse_overrides(args.set)
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    return data, overrides


def _run_config(args: argparse.Namespace):
    from unpact.config import config_from_dict

    return config_from_dict(_config_data(args, RUN_FLAGS)[0])


def cmd_run(args: argparse.Namespace) -> int:

    from unpact.pipeline import run_study, summary_table

    cfg = _run_config(args)
    if getattr(args, "seeds", None) is not None:
        return _run_seeds(args, cfg)
    start = time.time()
    stages: list[str] = []

    with _console() as progress:

        def on_start() -> None:  # inputs are validated: say where the run goes
            progress.log(f"unpact run -> {cfg.out} ({describe(args.threads_info)})")

        def on_stage(name: str, computed: bool) -> None:
            stages.append(name)
            progress.log(f"  {'done' if computed else 'kept'}  {name}")

        results = run_study(cfg, progress=progress, on_stage=on_stage, on_start=on_start)
    for m, r in results["methods"].items():  # e.g. an unlearning run that changed nothing
        for w in (r.get("lineage") or {}).get("warnings") or []:
            print(f"unpact: warning: {m}: {w}", file=sys.stderr)
    print(summary_table(results))
    print(
        f"\nresults: {os.path.join(cfg.out, 'results.json')}\nreport:  {os.path.join(cfg.out, 'report.html')}"
        f"\n({time.time() - start:.0f} s)"
    )
    return 0


# ---------------------------------------------------------------------- audit

AUDIT_HELP = (
    "audit unlearned checkpoints someone else made: every stage of `unpact run` after unlearning "
    "(evaluation, presence, attribution and tracking, emphasis recovery with its placebo, the other "
    "recovery routes, collapse, the verdicts) on each, against the original"
)


def add_audit(p: argparse.ArgumentParser) -> None:
    p.description = (
        AUDIT_HELP + ". The inputs are checked before any work: the same tokenizer and architecture "
        "as the original, descent from it (relative weight distance at most audit.max_relative_distance), "
        "intact safetensors files, finite weights; a checkpoint identical to the original is a warning. "
        "The strength trajectory is an `unpact run` feature (it needs the unlearning run), so the audit "
        "has none; methods in --config are not run (the audit unlearns nothing)."
    )
    p.add_argument(
        "--original",
        required=True,
        help="the model before unlearning: a checkpoint directory, hub id or embedded:<name>",
    )
    p.add_argument(
        "--unlearned",
        required=True,
        nargs="+",
        metavar="CHECKPOINT",
        help="one or more unlearned checkpoints (directories, hub ids, embedded:<name>); each is named by "
        "its directory name (a repeated name gets -2, -3, ...)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="a model that never saw the forget set (e.g. the retain-only twin): forget quality and the "
        "negative control of presence and the attacks (default none: those say 'not applicable')",
    )
    _add_study_args(p, out_default="./unpact-audit")


def _audit_config(args: argparse.Namespace):
    from unpact.checkpoints import name_checkpoints
    from unpact.config import config_from_dict

    data, overrides = _config_data(args, AUDIT_FLAGS)
    if (data.get("trajectory") or {}).get("enabled") is True or overrides.get("trajectory.enabled") is True:
        raise CommandError(
            "trajectory.enabled = true: the strength trajectory unlearns the original again on a gentle "
            "schedule, so it is an `unpact run` feature; `unpact audit` measures given checkpoints "
            "(drop the setting, or run `unpact run --methods ...`)"
        )
    data.setdefault("trajectory", {})["enabled"] = False
    data["methods"], data["method_config"] = [], {}
    if args.reference is None and "reference_model" not in data:
        data["reference_model"] = None  # no negative control unless one is given
    data["checkpoints"] = name_checkpoints(list(args.unlearned))
    data.setdefault("out", "unpact-audit")
    return config_from_dict(data)


def cmd_audit(args: argparse.Namespace) -> int:
    from unpact.pipeline import run_study, summary_table
    from unpact.threads import describe

    cfg = _audit_config(args)
    start = time.time()
    with _console() as progress:

        def on_start() -> None:
            names = ", ".join(f"{k} ({v})" for k, v in cfg.checkpoints.items())
            progress.log(f"unpact audit -> {cfg.out}: {names} against {cfg.model} ({describe(args.threads_info)})")

        def on_warning(msg: str) -> None:
            print(f"unpact: warning: {msg}", file=sys.stderr)

        def on_stage(name: str, computed: bool) -> None:
            progress.log(f"  {'done' if computed else 'kept'}  {name}")

        results = run_study(cfg, progress=progress, on_stage=on_stage, on_start=on_start, on_warning=on_warning)
    print(summary_table(results))
    print(
        f"\nresults: {os.path.join(cfg.out, 'results.json')}\nreport:  {os.path.join(cfg.out, 'report.html')}"
        f"\n({time.time() - start:.0f} s)"
    )
    return 0


def _run_seeds(args: argparse.Namespace, cfg) -> int:
    """``unpact run --seeds``: the study at each seed (OUT/seed<k>), then the pooled summary."""
    from unpact.seeds import parse_seeds, run_seeds, summary_text
    from unpact.threads import describe

    seeds = parse_seeds(args.seeds)
    if args.seed is not None or "seed" in _parse_overrides(args.set):
        raise CommandError("--seed and --seeds both given; --seeds sets every run's seed")
    start = time.time()
    with _console() as progress:

        def on_seed(seed: int, c) -> None:
            progress.log(f"unpact run, seed {seed} -> {c.out} ({describe(args.threads_info)})")

        def on_stage(name: str, computed: bool) -> None:
            progress.log(f"  {'done' if computed else 'kept'}  {name}")

        pooled = run_seeds(cfg, seeds, progress=progress, on_stage=on_stage, on_seed=on_seed)
    print(summary_text(pooled))
    print(
        f"\nper seed: {', '.join(os.path.join(cfg.out, f'seed{k}') for k in seeds)}"
        f"\npooled:   {os.path.join(cfg.out, 'pooled.json')} (and pooled.md, pooled.html)"
        f"\n({time.time() - start:.0f} s)"
    )
    return 0


def _console():
    """The one progress display of every command (see :class:`unpact.progress.ConsoleProgress`)."""
    return ConsoleProgress()


# --------------------------------------------------------------------- report


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (holds results.json)")


def cmd_report(args: argparse.Namespace) -> int:
    from unpact.report import build_report

    if not os.path.isdir(args.run_dir):
        raise CommandError(f"run directory {args.run_dir!r} does not exist; give the --out of an `unpact run`")
    print(build_report(args.run_dir))
    return 0


# ------------------------------------------------------------ build-embedded


def add_build_embedded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output directory (default: the installed package's shipped files)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long toy build (for tests)")
    p.add_argument(
        "--arch", action="append", default=None, help="architecture to train (repeatable; default: gpt2, llama, qwen2)"
    )
    p.add_argument("--no-retain", action="store_true", help="skip the retain-only (-retain) twins")
    p.add_argument(
        "--retain-all",
        action="store_true",
        help="also train -retain-all twins (without every forget set: the forget10 authors, the MUSE "
        "forget passages, the WMDP hazard domain): the negative control of MUSE/WMDP-shaped studies",
    )
    p.add_argument("--no-original", action="store_true", help="skip the original models (train only the twins)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training")


def cmd_build_embedded(args: argparse.Namespace) -> int:
    from unpact.embedded.build import build_embedded
    from unpact.embedded.train import ARCHITECTURES, TrainConfig

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
    with _console() as progress:
        build_embedded(
            out,
            seed=args.seed,
            tiny=args.tiny,
            archs=archs,
            retain=not args.no_retain,
            train_config=tcfg,
            progress=progress,
            retain_all=args.retain_all,
            original=not args.no_original,
        )
    print(f"built the embedded world in {out}")
    return 0


# -------------------------------------------------------------------- unlearn


def add_unlearn(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--method", required=True, help="unlearning method: {methods}")
    p.add_argument("--benchmark", default="embedded:tofu", help="benchmark of the splits (default embedded:tofu)")
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument("--forget", required=True, help="forget split, e.g. forget10")
    p.add_argument("--retain", default=None, help="retain split, e.g. retain90 (needed by the GDR/KLR methods and rmu)")
    p.add_argument("--out", required=True, help="output directory: the checkpoint and unlearn.json")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter of the method's config (repeatable), e.g. --set lr=1e-4",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reference-model", default=None, help="retain-only model for forget quality and privleak (optional)"
    )
    p.add_argument(
        "--holdout",
        default=None,
        help="holdout split never trained on, e.g. holdout10: the membership-inference AUCs (forget vs "
        "holdout) and, with --reference-model, privleak (optional)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the before/after metrics")
    p.add_argument("--device", default=None)
    _add_dtype(p)
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
    from unpact.metrics import evaluate
    from unpact.models import load_model, save_model
    from unpact.unlearning import get_method, make_config, unlearn
    from unpact.validation import check_device, check_model_available, check_output_dir

    # every check before any work: the method and its hyperparameters, the device, the output, the data, the models
    overrides = _parse_overrides(args.set)
    make_config(get_method(args.method).config_class, overrides)
    check_device(args.device)
    check_output_dir(args.out)
    forget = load_benchmark(args.benchmark, args.forget, path=args.benchmark_path)
    retain = load_benchmark(args.benchmark, args.retain, path=args.benchmark_path) if args.retain else None
    holdout = load_benchmark(args.benchmark, args.holdout, path=args.benchmark_path) if args.holdout else None
    for spec in (args.model, args.reference_model):
        if spec:
            check_model_available(spec)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    fmt = _prompt_format(args, model)
    reference = load_model(args.reference_model, device=args.device, dtype=args.dtype) if args.reference_model else None
    splits = {"forget": forget, **({"retain": retain} if retain is not None else {})}

    progress = _console()

    def metrics(m) -> dict:
        out = {}
        for name, bench in splits.items():
            res = evaluate(
                m,
                bench,
                reference=reference if name == "forget" else None,
                forget=(name == "forget"),
                progress=progress,
                fmt=fmt,
                holdout=holdout if name == "forget" else None,
            )
            out[name] = {k: v for k, v in res.items() if not k.endswith("per_item") and k != "truth_ratios"}
        return out

    with progress:
        before = None if args.no_eval else metrics(model)
        result = unlearn(model, args.method, forget, retain, overrides, seed=args.seed, progress=progress, fmt=fmt)
        after = None if args.no_eval else metrics(result.model)
    if result.stopped_early:
        print(f"unpact: warning: {result.message}", file=sys.stderr)
    save_model(result.model, args.out)
    write_json_atomic(os.path.join(args.out, "unlearn.json"), _unlearn_report(args, result, before, after))
    _print_unlearn_summary(args, result, splits, before, after)
    return 0


def _unlearn_report(args: argparse.Namespace, result, before: dict | None, after: dict | None) -> dict:
    """The contents of unlearn.json: the command's inputs, the result's summary and the metrics before and after."""
    report = {
        "model": args.model,
        "benchmark": args.benchmark,
        "forget": args.forget,
        "retain": args.retain,
        "holdout": args.holdout,
        "seed": args.seed,
        "prompt_format": args.prompt_format,
        "system_prompt": args.system_prompt,
        **result.summary(),
    }
    if before is not None:
        report["metrics"] = {"before": before, "after": after}
    return report


def _print_unlearn_summary(
    args: argparse.Namespace, result, splits: dict, before: dict | None, after: dict | None
) -> None:
    """Print the steps and final loss of an unlearning run, then each split's ROUGE-L recall before and after."""
    last = result.losses[-1]["loss"] if result.losses else float("nan")
    print(f"{result.method}: {len(result.losses)} steps, final loss {last:.4g} -> {args.out}")
    if before is not None:
        for name in splits:
            recall_before, recall_after = before[name].get("rouge_l_recall"), after[name].get("rouge_l_recall")
            if recall_before is not None:
                # all the split's items: `unpact run` evaluates at most max_items of them, so its numbers differ
                print(
                    f"  {name} ROUGE-L recall {recall_before:.3f} -> {recall_after:.3f} (all {len(splits[name])} "
                    f"items of {name} split {getattr(args, name)!r}; `unpact run` evaluates an evenly spaced "
                    "--max-items subset)"
                )


# ---------------------------------------------------------------- known-facts


def add_known_facts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="FILE",
        help="a TOFU-format QA file (json/jsonl/parquet) to ask the model (repeatable), e.g. "
        "world_facts_perturbed.json and real_authors_perturbed.json",
    )
    p.add_argument("--out", required=True, help="directory for forget/retain/general/unknown.json and manifest.json")
    p.add_argument("--seed", type=int, default=0, help="the shuffle's seed (default 0)")
    p.add_argument("--device", default=None)
    _add_dtype(p)
    _add_format_args(p)


def cmd_known_facts(args: argparse.Namespace) -> int:
    from unpact.known_facts import KnownFactsConfig, build_known_facts, write_known_facts
    from unpact.models import load_model
    from unpact.validation import check_device, check_model_available, check_output_dir

    check_device(args.device)
    check_output_dir(args.out)
    missing = [f for f in args.source if not os.path.isfile(f)]
    if missing:
        raise CommandError(f"--source {missing[0]!r} does not exist; give a TOFU-format QA file")
    check_model_available(args.model)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    fmt = _prompt_format(args, model)
    facts = build_known_facts(model, args.source, fmt, KnownFactsConfig(seed=args.seed))
    facts.manifest.update(model=args.model, system_prompt=args.system_prompt)
    write_known_facts(facts, args.out)
    known = sum(facts.manifest["known_by_source"].values())
    print(
        f"{known} of {sum(facts.manifest['sources'].values())} questions answered right "
        f"({', '.join(f'{k}: {v}' for k, v in facts.manifest['known_by_source'].items())}) -> {args.out}"
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in facts.counts().items()))
    return 0


# ------------------------------------------------------------------- recover


def add_recover(p: argparse.ArgumentParser) -> None:
    p.add_argument("--original", required=True, help="the model before unlearning (its KeyTokens give the keywords)")
    p.add_argument("--unlearned", required=True, help="the model after unlearning")
    p.add_argument(
        "--benchmark",
        default="embedded:tofu/forget10",
        help="forget items as BENCHMARK/SPLIT (default embedded:tofu/forget10)",
    )
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument(
        "--retain",
        default="retain90",
        help="control split of the same benchmark, or BENCHMARK/SPLIT ('none' to skip; default retain90)",
    )
    p.add_argument(
        "--general",
        default="embedded:general/qa",
        help="general-ability control as BENCHMARK/SPLIT ('none' to skip; default embedded:general/qa)",
    )
    p.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="NAME=BENCHMARK/SPLIT",
        help="another control set (repeatable), e.g. holdout=embedded:tofu/holdout10",
    )
    p.add_argument("--method", default=None, help="name of the unlearning method (recorded in the table)")
    p.add_argument("--max-items", type=int, default=None, help="at most this many forget items (evenly spaced)")
    # every default is RecoveryConfig's (unpact/emphasis/recovery.py), as `unpact run`'s
    p.add_argument("--max-control-items", type=int, default=None, help="at most this many items per control")
    p.add_argument("--threshold", type=float, default=None, help="ROUGE-L recall counted as right")
    p.add_argument("--margin", type=float, default=None, help="control accuracy drop that flags collapse")
    p.add_argument("--templates", default=None, help="comma-separated rewrite templates: {templates} ('a+b' composes)")
    p.add_argument("--factors", default=None, help="comma-separated activation factors")
    p.add_argument("--layers", default=None, help="comma-separated layer sets, or index lists like 0-1-2")
    p.add_argument("--kinds", default=None, help="comma-separated activation emphasis kinds: {kinds}")
    p.add_argument("--max-new-tokens", type=int, default=None, help="greedy answer length")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--device", default=None)
    _add_dtype(p)
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


def recover_kinds(args: argparse.Namespace) -> tuple[str, ...]:
    """``--kinds``, or by default the kinds `unpact run` sweeps (``RecoveryConfig.kinds``)."""
    from unpact.emphasis import RecoveryConfig

    return _csv(args.kinds, "--kinds") if args.kinds else tuple(RecoveryConfig.kinds)


def recover_config(args: argparse.Namespace):
    """The :class:`~unpact.emphasis.RecoveryConfig` of ``unpact recover``'s flags (unset flags: its defaults)."""
    from unpact.emphasis import RecoveryConfig

    given = {
        "threshold": args.threshold,
        "collapse_margin": args.margin,
        "max_new_tokens": args.max_new_tokens,
        "max_control_items": args.max_control_items,
        "factors": _csv(args.factors, "--factors", float) if args.factors else None,
        "layer_sets": tuple(x.replace("-", ",") for x in _csv(args.layers, "--layers")) if args.layers else None,
        "kinds": recover_kinds(args),
        "templates": _csv(args.templates, "--templates") if args.templates else None,
    }
    return RecoveryConfig(**{k: v for k, v in given.items() if v is not None})


def cmd_recover(args: argparse.Namespace) -> int:
    from unpact.emphasis import recover, render_table
    from unpact.emphasis.recovery import check_same_tokenizer
    from unpact.models import load_model
    from unpact.validation import check_device, check_model_available, check_output_dir

    cfg = recover_config(args)
    cfg.settings()  # factors and kinds checked now, not after the models are loaded
    for name in ("max_items", "max_control_items", "max_new_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    check_device(args.device)
    if args.out:
        if os.path.isdir(args.out):
            raise CommandError(f"--out {args.out!r} is a directory; give a file name for the JSON table")
        check_output_dir(os.path.dirname(os.path.abspath(args.out)))
    for spec in (args.original, args.unlearned):
        check_model_available(spec)
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
    original = load_model(args.original, device=args.device, dtype=args.dtype)
    unlearned = load_model(args.unlearned, device=args.device, dtype=args.dtype)
    check_same_tokenizer(original, unlearned)  # before any work: KeyToken positions must mean the same tokens
    items = spread_sample(list(forget), args.max_items)
    with _console() as progress:
        table = recover(
            unlearned,
            items,
            original=original,
            controls=controls,
            config=cfg,
            method=args.method or args.unlearned,
            fmt=_prompt_format(args, original),
            progress=progress,
        )
    table.extra.update(original=args.original, unlearned=args.unlearned, benchmark=args.benchmark)
    print(render_table(table))
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(directory, exist_ok=True)
        write_json_atomic(args.out, table.to_dict())
        print(f"\ntable: {args.out}")
    return 0


# -------------------------------------------------------------------- inspect


def add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP + " (typically the original model)")
    p.add_argument("--question", help="the question (formatted by --prompt-format)")
    p.add_argument("--answer", help="the answer whose log-prob is attributed")
    p.add_argument("--benchmark", help="take the item from BENCHMARK/SPLIT instead, e.g. embedded:tofu/forget10")
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument("--item", type=int, default=None, help="index of the item in the split (with --benchmark)")
    p.add_argument("--against", help="a second model with the same tokenizer (typically the unlearned one)")
    p.add_argument(
        "--method", default="loo,heads", help="comma-separated attribution methods: {attribution} (default loo,heads)"
    )
    p.add_argument(
        "--prompt-format",
        default="plain",
        help="plain: 'Question: ...\\nAnswer:'; chat: the tokenizer's own chat template (default plain)",
    )
    p.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="LAYER.HEAD",
        help="show this head's attention from the answer's first position (repeatable; default the top heads)",
    )
    p.add_argument("--top-heads", type=int, default=5, help="how many heads to list (default 5)")
    p.add_argument(
        "--truncate", action="store_true", help="drop prompt tokens from the left when the item exceeds the context"
    )
    p.add_argument("--html", help="write the self-contained HTML page here")
    p.add_argument("--json", help="write every number as JSON here")
    p.add_argument("--device", default=None)


def _inspect_item(args: argparse.Namespace):
    """The item to inspect and its label: from --question/--answer or from --benchmark/--item."""
    if args.benchmark:
        if args.question is not None or args.answer is not None:
            raise CommandError("give either --question/--answer or --benchmark/--item, not both")
        if args.item is None:
            raise CommandError("--benchmark needs --item INDEX (the item's position in the split, from 0)")
        bench, split = _split_spec(args.benchmark)
        items = list(load_benchmark(bench, split, path=args.benchmark_path))
        if not 0 <= args.item < len(items):
            raise CommandError(
                f"--item {args.item} is out of range: {args.benchmark} has {len(items)} items (0..{len(items) - 1})"
            )
        return items[args.item], f"{args.benchmark} item {args.item}"
    if args.item is not None:
        raise CommandError("--item needs --benchmark BENCHMARK/SPLIT")
    if args.question is None or args.answer is None:
        raise CommandError("give --question and --answer, or --benchmark BENCHMARK/SPLIT --item INDEX")
    if not args.question.strip():
        raise CommandError("--question is empty; give the question text")
    if not args.answer.strip():
        raise CommandError("--answer is empty; give the answer whose log-prob to attribute")
    return QAItem(args.question, args.answer, id="question"), None


def cmd_inspect(args: argparse.Namespace) -> int:
    from unpact.inspection import canonical_methods, inspect_item
    from unpact.models import load_model

    methods = canonical_methods(args.method)
    heads = []
    for h in args.head:
        try:
            l, hh = (int(x) for x in h.split("."))
        except ValueError:
            raise CommandError(f"--head takes LAYER.HEAD (e.g. 2.1), got {h!r}") from None
        heads.append((l, hh))
    if args.top_heads < 1:
        raise CommandError(f"--top-heads must be at least 1, got {args.top_heads}")
    item, source = _inspect_item(args)
    model = load_model(args.model, device=args.device)
    against = load_model(args.against, device=args.device) if args.against else None
    try:
        ins = inspect_item(
            model,
            item,
            against=against,
            methods=methods,
            fmt=args.prompt_format,
            heads=heads or None,
            top_heads=args.top_heads,
            truncate=args.truncate,
            model_name=args.model,
            against_name=args.against,
            source=source,
            progress=tqdm_progress,
        )
    except InputError as exc:  # the library's hint names its keyword argument; here it is a flag
        raise CommandError(str(exc).replace("pass truncate=True", "pass --truncate")) from None
    print(ins.to_text())
    if args.json or args.html:
        print()
    if args.json:
        write_text_atomic(args.json, json.dumps(ins.to_dict(), indent=1))
        print(f"json: {args.json}")
    if args.html:
        write_text_atomic(args.html, ins.to_html(standalone=True))
        print(f"html: {args.html}")
    return 0


# -------------------------------------------------------------------- attack


def add_attack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unlearned", required=True, help="the model after unlearning (never changed: attacks edit copies)")
    p.add_argument(
        "--original",
        default=None,
        help="the model before unlearning (control: does the attack keep what was never removed?)",
    )
    p.add_argument(
        "--negative",
        default=None,
        help="a model that never saw the forget set, e.g. embedded:gpt2-retain "
        "(control: what it 'recovers' is taught, not recovered)",
    )
    p.add_argument(
        "--benchmark",
        default="embedded:tofu/forget10",
        help="forget items as BENCHMARK/SPLIT (default embedded:tofu/forget10)",
    )
    p.add_argument("--benchmark-path", default=None, help="local file or directory with the benchmark's splits")
    p.add_argument(
        "--retain",
        default="retain90",
        help="retain split (in-context examples, relearning on retain) of the same benchmark, or "
        "BENCHMARK/SPLIT ('none' to skip; default retain90)",
    )
    p.add_argument("--attacks", default=None, help="comma-separated attacks (default: every registered one: {attacks})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.KEY=VALUE",
        help="override an attack's setting (repeatable, JSON values), e.g. --set quantization.bits=[4] "
        "--set relearning.steps=[5,10]",
    )
    p.add_argument("--max-items", type=int, default=None, help="at most this many forget items (evenly spaced)")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="ROUGE-L recall counted as right (default: the main job's, 0.9; see unpact.config)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="greedy answer length (default: the main job's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the route tables as JSON here")
    p.add_argument("--device", default=None)


def cmd_attack(args: argparse.Namespace) -> int:
    from unpact.attacks import ATTACKS, get_attack, make_attack, render_attack_table, run_attack
    from unpact.config import RunConfig
    from unpact.emphasis import RecoveryConfig
    from unpact.models import load_model

    names = _csv(args.attacks, "--attacks") if args.attacks else tuple(ATTACKS)
    overrides: dict[str, dict] = {n: {} for n in names}
    for n in names:
        get_attack(n)
    for key, value in _parse_overrides(args.set).items():
        if "." not in key or key.split(".", 1)[0] not in overrides:
            raise CommandError(
                f"--set takes ATTACK.KEY=VALUE for one of the chosen attacks ({', '.join(names)}), got {key!r}"
            )
        a, k = key.split(".", 1)
        overrides[a][k] = tuple(value) if isinstance(value, list) else value
    attacks = [make_attack(n, overrides[n]) for n in names]
    defaults = RunConfig()
    rcfg = RecoveryConfig(
        threshold=args.threshold if args.threshold is not None else defaults.emphasis.threshold,
        max_new_tokens=args.max_new_tokens or defaults.max_new_tokens,
    )
    bench, split = _split_spec(args.benchmark)
    forget = spread_sample(list(load_benchmark(bench, split, path=args.benchmark_path)), args.max_items)
    pool = {}
    if args.retain and args.retain.lower() != "none":
        b, s = _split_spec(args.retain, bench)
        pool["retain"] = list(load_benchmark(b, s, path=args.benchmark_path if b == bench else None))
    unlearned = load_model(args.unlearned, device=args.device)
    original = load_model(args.original, device=args.device) if args.original else None
    negative = load_model(args.negative, device=args.device) if args.negative else None
    tables = [
        run_attack(
            a,
            unlearned,
            forget,
            original=original,
            negative=negative,
            pool=pool,
            recovery=rcfg,
            seed=args.seed,
            progress=tqdm_progress,
        )
        for a in attacks
    ]
    print(render_attack_table(tables))
    if args.out:
        write_json_atomic(
            args.out,
            {
                "unlearned": args.unlearned,
                "original": args.original,
                "negative": args.negative,
                "benchmark": args.benchmark,
                "attacks": tables,
            },
        )
        print(f"\nroute tables: {args.out}")
    return 0


# ----------------------------------------------------------------------- grid


def add_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the grid's TOML or JSON file (models, benchmarks, methods, [run])")
    p.add_argument("--out", default=None, help="grid directory (default: the config's out); an existing one is resumed")
    p.add_argument("--ray-address", default=None, help="address of a Ray cluster (default: start a local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run the cells one after the other in this process")


def cmd_grid(args: argparse.Namespace) -> int:

    from unpact.grid import read_grid, render_markdown, run_grid

    grid = read_grid(args.config)
    updates = {k: v for k, v in (("out", args.out), ("ray_address", args.ray_address)) if v is not None}
    if args.no_ray:
        updates["executor"] = "local"
    grid = dataclasses.replace(grid, **updates)
    start = time.time()

    def on_start(cells, todo) -> None:
        print(
            f"unpact grid -> {grid.out}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
            f"{len(todo)} to run ({'Ray' if grid.executor == 'ray' else 'in this process'})",
            file=sys.stderr,
        )

    def on_cell(cell, outcome) -> None:
        status = outcome["status"]
        print(f"  {status:<6} {cell.name}" + (f": {outcome['error']}" if status != "done" else ""), file=sys.stderr)

    report = run_grid(grid, on_cell=on_cell, on_start=on_start)
    print(render_markdown(report))
    print(
        f"\ngrid report: {os.path.join(grid.out, 'grid.html')} (and grid.md, grid.json)\n({time.time() - start:.0f} s)"
    )
    if report["n_failed"]:
        print(
            f"unpact: {report['n_failed']} of {report['n_cells']} cells did not finish (listed above); "
            "rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------- registry

#: name -> (help, add-arguments function, run function)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "audit": (AUDIT_HELP, add_audit, cmd_audit),
    "attack": (
        "recovery attacks beyond emphasis (relearning, quantization, in-context, paraphrase), with controls",
        add_attack,
        cmd_attack,
    ),
    "build-embedded": (
        "regenerate the embedded benchmarks and models from a seed",
        add_build_embedded,
        cmd_build_embedded,
    ),
    "grid": (
        "run the study grid (models x benchmarks x methods) on Ray or in this process; one report",
        add_grid,
        cmd_grid,
    ),
    "info": ("print a model's architecture, sizes and source format", add_info, cmd_info),
    "known-facts": (
        "split the questions a model answers right into forget/retain/general (and unknown) splits",
        add_known_facts,
        cmd_known_facts,
    ),
    "inspect": (
        "one prompt: per-token, per-layer and per-head contribution to the answer, before and after",
        add_inspect,
        cmd_inspect,
    ),
    "recover": (
        "emphasis recovery: prompt rewrites vs activation scaling on an unlearned model, with controls",
        add_recover,
        cmd_recover,
    ),
    "run": ("run the whole study: unlearn, attribute, emphasise, analyse, report", add_run, cmd_run),
    "report": ("rebuild report.html from a run's results.json", add_report, cmd_report),
    "unlearn": (
        "unlearn a forget split from a model with one method; save the checkpoint and losses",
        add_unlearn,
        cmd_unlearn,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unpact",
        formatter_class=RegistryHelpFormatter,
        description="See what LLM unlearning really does to a model: unlearn, attribute, "
        "emphasise, and check for collapse.",
    )
    parser.add_argument("--version", action="version", version=f"unpact {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=RegistryHelpFormatter)
        add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads.set_wait_policy()  # before anything imports torch (see unpact.threads)
    _help, _add, run = COMMANDS[args.command]
    try:
        spec = getattr(args, "model", None)
        if isinstance(spec, str):
            check_model_spec(spec)  # a bad local path fails before torch is imported
        if args.command != "report":
            args.threads_info = threads.apply_thread_policy()
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
