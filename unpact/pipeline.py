"""The main job: unlearn -> evaluate -> attribute -> track -> recover -> collapse -> report.

Every stage writes its result atomically into the run directory (see
:mod:`unpact.rundir`); a rerun reads finished stages and computes only what is
missing, so a run killed at any point resumes and ends with the same
``results.json`` as an uninterrupted one (each stage is seeded from the run's
seed and its own name, and unlearned models are read back from their saved
checkpoints, never kept only in memory).

Layout of a run directory::

    config.json           the resolved settings
    stages/*.json         one file per finished stage
    models/<method>/      each unlearned model, a plain HF checkpoint
    results.json          every number (written last)
    report.html, figures/ the report (``unpact report RUN_DIR`` rebuilds it)

Example:
    >>> from unpact.config import RunConfig
    >>> results = run_study(RunConfig(methods=["ga_gdr"], max_items=8, out="runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from unpact.config import RunConfig
from unpact.data import Benchmark, load_benchmark, spread_sample
from unpact.errors import ConfigError, DataError
from unpact.progress import ProgressFactory, null_progress
from unpact.rundir import RunDir, write_json_atomic

GROUPS = ("forget", "retain", "general")

#: Share of ``max_batch_tokens`` that a pass keeping activations for backward may use: such a
#: pass holds every layer's activations (and, for integrated gradients, one row per
#: interpolation step), so it gets a quarter (unlearning, heads) or a sixteenth (integrated
#: gradients) of the forward budget. At the default budget (16384) these are the methods' own
#: defaults (4096 and 1024), so the default run computes what it computed before the budget.
BACKWARD_SHARE = {"unlearn": 4, "heads": 4, "integrated_gradients": 16}


def stage_budgets(max_batch_tokens: int) -> dict[str, int]:
    """Token budget of each kind of pass for a forward budget of ``max_batch_tokens``.

    Example:
        >>> stage_budgets(16384)
        {'forward': 16384, 'unlearn': 4096, 'heads': 4096, 'integrated_gradients': 1024}
    """
    return {"forward": max_batch_tokens, **{k: max(1, max_batch_tokens // v) for k, v in BACKWARD_SHARE.items()}}


def stage_seed(seed: int, name: str) -> int:
    h = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
    return int(h[:8], 16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass


@dataclass
class StudyData:
    forget: Benchmark
    retain: Benchmark
    general: Benchmark | None
    holdout: Benchmark | None
    groups: dict[str, list]  # the evaluated/attributed subsets


def load_study_data(cfg: RunConfig) -> StudyData:
    """Load the benchmark splits named by ``cfg`` (errors name the split and list known ones)."""
    forget = load_benchmark(cfg.benchmark, cfg.forget_split, path=cfg.benchmark_path)
    retain = load_benchmark(cfg.benchmark, cfg.retain_split, path=cfg.benchmark_path)
    general = load_benchmark(cfg.general, cfg.general_split, path=cfg.general_path) if cfg.general else None
    holdout = None
    if cfg.holdout_split:
        try:
            holdout = load_benchmark(cfg.benchmark, cfg.holdout_split, path=cfg.benchmark_path)
        except DataError:
            holdout = None
    groups = {
        "forget": spread_sample(list(forget), cfg.max_items),
        "retain": spread_sample(list(retain), cfg.max_items),
        "general": spread_sample([it for it in general if it.kind in ("qa", "mc")], cfg.max_items) if general else [],
    }
    for g in ("forget", "retain"):
        if not groups[g]:
            raise DataError(f"the {g} split {getattr(cfg, g + '_split')!r} holds no items")
    return StudyData(forget, retain, general, holdout, groups)


def validate(cfg: RunConfig) -> StudyData:
    """Check every input before anything is written: methods, splits, model paths."""
    from unpact.models import resolve_model_spec, _check_checkpoint_dir
    from unpact.unlearning import METHODS

    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown unlearning method {unknown[0]!r}; known: {', '.join(sorted(METHODS))}")
    for m in cfg.method_config:
        if m not in cfg.methods:
            raise ConfigError(f"method_config names {m!r}, which is not among the methods {cfg.methods}")
    for spec in (cfg.model, cfg.reference_model):
        if spec is None:
            continue
        kind, target = resolve_model_spec(spec)
        if kind == "path":
            _check_checkpoint_dir(Path(target))
            if cfg.prompt_format == "chat" and spec == cfg.model:  # no chat template: say so before any work
                from unpact.data import resolve_format
                from unpact.models import _load_tokenizer

                resolve_format("chat", _load_tokenizer(Path(target)), cfg.system_prompt, cfg.chat_template_args)
    return load_study_data(cfg)


class Study:
    """One run of the main job over a run directory."""

    def __init__(self, cfg: RunConfig, progress: ProgressFactory = null_progress,
                 on_stage: Callable[[str, bool], None] | None = None):
        self.cfg = cfg
        self.progress = progress
        self.on_stage = on_stage or (lambda name, computed: None)
        self.rd = RunDir(cfg.out)
        self._original = None
        self._fmt = None
        self.budgets = stage_budgets(cfg.max_batch_tokens)
        self._data: StudyData | None = None
        self._results: dict[str, Any] = {}

    # ----------------------------------------------------------- plumbing
    def stage(self, name: str, compute: Callable[[], Any]) -> Any:
        """The result of stage ``name``: from memory, from its file, or computed (seeded) and written."""
        if name in self._results:
            return self._results[name]

        def seeded():
            seed_everything(stage_seed(self.cfg.seed, name))
            return compute()

        result, computed = self.rd.stage(name, seeded)
        self._results[name] = result
        self.on_stage(name, computed)
        return result

    @property
    def data(self) -> StudyData:
        if self._data is None:
            self._data = load_study_data(self.cfg)
        return self._data

    def original(self):
        if self._original is None:
            from unpact.models import load_model

            self._original = load_model(self.cfg.model, device=self.cfg.device)
        return self._original

    @property
    def fmt(self):
        """The run's :class:`~unpact.data.PromptFormat` (``chat``: built from the original's tokenizer)."""
        if self._fmt is None:
            from unpact.data import resolve_format

            tok = self.original().tokenizer if self.cfg.prompt_format == "chat" else None
            self._fmt = resolve_format(self.cfg.prompt_format, tok, self.cfg.system_prompt, self.cfg.chat_template_args)
        return self._fmt

    def unlearned(self, method: str):
        from unpact.models import load_model

        return load_model(self.rd.model_dir(method), device=self.cfg.device)

    # -------------------------------------------------------- helpers
    def _attribute_groups(self, model) -> dict[str, Any]:
        """loo (+ KeyTokens) on every group item; integrated gradients and heads on a subset."""
        from unpact.attribution import attribute

        a = self.cfg.attribution
        out: dict[str, Any] = {"loo": {}, "integrated_gradients": {}, "heads": {}}
        for g in GROUPS:
            items = self.data.groups[g]
            if not items:
                continue
            b = self.budgets
            res = attribute(model, items, method="loo", group=g, fmt=self.fmt, max_batch_tokens=b["forward"],
                            progress=self.progress)
            out["loo"][g] = [r.to_dict() for r in res]
            sub = items[: a.subset]
            if "integrated_gradients" in a.methods and sub:
                res = attribute(model, sub, method="integrated_gradients", group=g, steps=a.ig_steps, fmt=self.fmt,
                                max_batch_tokens=b["integrated_gradients"], progress=self.progress)
                out["integrated_gradients"][g] = [r.to_dict() for r in res]
            if "heads" in a.methods and sub:
                res = attribute(model, sub, method="heads", group=g, fmt=self.fmt, max_batch_tokens=b["heads"],
                                progress=self.progress)
                out["heads"][g] = [r.to_dict() for r in res]
        return out

    def _evaluate_groups(self, model, reference_ratios: list[float] | None) -> dict[str, Any]:
        """Every metric on each group, all groups' answers generated in one batched pass."""
        from unpact.metrics import evaluate_groups

        groups = {g: self.data.groups[g] for g in GROUPS if self.data.groups[g]}
        out = evaluate_groups(
            model, groups, {"forget": reference_ratios} if reference_ratios else None,
            max_new_tokens=self.cfg.max_new_tokens, forget={g: g == "forget" for g in groups},
            progress=self.progress, fmt=self.fmt, max_batch_tokens=self.budgets["forward"],
        )
        for r in out.values():
            per = r.get("rouge_l_recall_per_item")
            if per:
                r["accuracy"] = sum(x >= self.cfg.emphasis.threshold for x in per) / len(per)
        return out

    def _keyword_positions(self) -> dict[str, list[list[int]]]:
        from unpact.attribution import Attribution, key_tokens

        kt = self._keytoken_options()
        loo = self.original_attribution()["loo"]
        return {g: [key_tokens(Attribution.from_dict(d), **kt) for d in loo.get(g, [])] for g in GROUPS}

    def _keytoken_options(self) -> dict[str, Any]:
        a = self.cfg.attribution
        opts: dict[str, Any] = {}
        if a.keytokens_alpha is not None:
            opts["alpha"] = a.keytokens_alpha
        if a.keytokens_beta is not None:
            opts["beta"] = a.keytokens_beta
        return opts

    # --------------------------------------------------------- stages
    def reference_ratios(self) -> list[float] | None:
        if not self.cfg.reference_model:
            return None

        def compute():
            from unpact.metrics import truth_ratios
            from unpact.models import load_model

            ref = load_model(self.cfg.reference_model, device=self.cfg.device)
            items = [it for it in self.data.groups["forget"] if getattr(it, "perturbed_answers", None)]
            if not items:
                return {"truth_ratios": None}
            return {"truth_ratios": [float(x) for x in truth_ratios(ref, items, self.fmt, self.budgets["forward"])]}

        return self.stage("reference/truth_ratios", compute)["truth_ratios"]

    def original_evaluation(self) -> dict[str, Any]:
        return self.stage("original/evaluate", lambda: self._evaluate_groups(self.original(), self.reference_ratios()))

    def original_attribution(self) -> dict[str, Any]:
        return self.stage("original/attribute", lambda: self._attribute_groups(self.original()))

    def unlearn(self, method: str) -> dict[str, Any]:
        name = f"{method}/unlearn"
        if self.rd.has(name) and self.rd.has_model(method):
            self.on_stage(name, False)
            return self.rd.read(name)
        from unpact.models import save_model
        from unpact.unlearning import unlearn

        seed = stage_seed(self.cfg.seed, name)
        seed_everything(seed)
        from unpact.models import load_model

        # a fresh copy of the original, edited in place: the shared original stays untouched
        fresh = load_model(self.cfg.model, device=self.cfg.device)
        method_cfg = {"max_batch_tokens": self.budgets["unlearn"], "gradient_checkpointing": self.cfg.gradient_checkpointing,
                      **(self.cfg.method_config.get(method) or {})}
        res = unlearn(
            fresh, method, list(self.data.forget), list(self.data.retain),
            method_cfg, inplace=True, seed=seed, progress=self.progress, fmt=self.fmt,
        )
        self.rd.save_model_atomic(method, lambda d: save_model(res.model, d))
        cfg = {k: v for k, v in vars(res.config).items() if not callable(v)}
        out = self.rd.write(name, {
            "method": method, "config": cfg, "losses": res.losses,
            "stopped_early": res.stopped_early, "message": res.message,
        })
        del res
        self.on_stage(name, True)
        return out

    def method_stages(self, method: str) -> dict[str, Any]:
        from unpact.attribution import Attribution, compare

        result: dict[str, Any] = {"unlearn": self.unlearn(method)}
        model_cache: list = []

        def model():
            if not model_cache:
                model_cache.append(self.unlearned(method))
            return model_cache[0]

        result["evaluate"] = self.stage(f"{method}/evaluate", lambda: self._evaluate_groups(model(), self.reference_ratios()))
        result["attribution"] = self.stage(f"{method}/attribute", lambda: self._attribute_groups(model()))
        orig_attr = self.original_attribution()

        def track():
            def load(d, kind):
                return [Attribution.from_dict(x) for g in GROUPS for x in d[kind].get(g, [])]

            kt = self._keytoken_options()
            loo = compare(load(orig_attr, "loo"), load(result["attribution"], "loo"), **kt).to_dict()
            out = {"loo": loo}
            if orig_attr["heads"]:
                heads = compare(load(orig_attr, "heads"), load(result["attribution"], "heads"), **kt).to_dict()
                out["heads"] = heads["summary"]
                forget_only = [a for a in load(orig_attr, "heads") if a.group == "forget"]
                after_f = [a for a in load(result["attribution"], "heads") if a.group == "forget"]
                if forget_only:
                    s = compare(forget_only, after_f, **kt).summary
                    out["head_delta"] = s.get("per_head_head_total_delta")
                    out["layer_delta"] = [
                        x + y for x, y in zip(s.get("per_layer_attn_total_delta", []), s.get("per_layer_mlp_total_delta", []))
                    ]
            return out

        result["tracking"] = self.stage(f"{method}/track", track)
        result["recovery"] = self.stage(f"{method}/recovery", lambda: self._recovery(model(), method))
        result["collapse"] = self.stage(f"{method}/collapse", lambda: self._collapse(method, result))
        model_cache.clear()
        return result

    def _recovery(self, unlearned, method: str) -> dict[str, Any]:
        from unpact.attribution import attribute
        from unpact.data import format_answer
        from unpact.emphasis import RecoveryConfig, recover, rewrite

        e = self.cfg.emphasis
        kw = self._keyword_positions()
        rc_kwargs: dict[str, Any] = dict(
            threshold=e.threshold, control_margin=e.collapse_margin, factors=tuple(e.factors),
            layer_sets=tuple(e.layer_sets), kinds=tuple(e.kinds),
            max_control_items=e.max_control_items, max_new_tokens=self.cfg.max_new_tokens,
            max_batch_tokens=self.budgets["forward"],
        )
        if e.templates is not None:
            rc_kwargs["templates"] = tuple(e.templates)
        controls: dict[str, list] = {}
        control_kw: dict[str, list] = {}
        for g in ("retain", "general"):
            idx = spread_sample(list(range(len(self.data.groups[g]))), e.max_control_items)
            if idx:
                controls[g] = [self.data.groups[g][i] for i in idx]
                control_kw[g] = [kw[g][i] for i in idx]
        if self.data.holdout is not None:
            # authors the model never saw: emphasis must not "recover" what was never known
            controls["holdout"] = spread_sample([it for it in self.data.holdout if it.kind == "qa"], e.max_control_items)
        table = recover(
            unlearned, self.data.groups["forget"], original=self.original(), controls=controls,
            keywords=kw["forget"], control_keywords=control_kw,
            config=RecoveryConfig(**rc_kwargs), method=method, fmt=self.fmt, progress=self.progress,
        )
        # attribution of the best rewrite's prompt on the unlearned model, for the report's heatmaps
        examples = []
        best = table.get("prompt_best_setting")
        if best:
            for it_d, item in list(zip(table["items"], self.data.groups["forget"]))[: self.cfg.attribution.subset]:
                rw = rewrite(item.question, it_d["keywords"], best, tokenizer=unlearned.tokenizer, fmt=self.fmt)
                a = attribute(unlearned, (rw.prompt, format_answer(item.answer, self.fmt)),
                              max_batch_tokens=self.budgets["forward"])
                d = a.to_dict()
                d["keyword_positions"] = list(rw.positions)
                d["template"] = best
                examples.append(d)
        table["rewrite_attributions"] = examples
        return table

    def _collapse(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        from unpact.analyses import token_drop_stats

        items = [
            {"before": d["before"], "after": d["after"], "special": d["special"], "tokens": d["tokens"]}
            for d in result["tracking"]["loo"]["items"] if d["group"] in ("retain", "general")
        ]
        stats = token_drop_stats(items)
        stats["utility_drop"] = utility_drop(self.original_evaluation(), result["evaluate"])
        return stats

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.rd.root.mkdir(parents=True, exist_ok=True)
        self.rd.clean_temporaries()
        write_json_atomic(self.rd.root / "config.json", cfg.to_dict())
        total = 3 + len(cfg.methods)
        with self.progress(total=total, desc="study") as bar:
            orig_eval = self.original_evaluation()
            orig_attr = self.original_attribution()
            bar.update()
            methods = {}
            for m in cfg.methods:
                methods[m] = self.method_stages(m)
                bar.update()
            analyses = self.stage("analyses", lambda: run_analyses(methods))
            bar.update()
            results = assemble_results(cfg, self.model_info(), orig_eval, orig_attr, methods, analyses)
            write_json_atomic(self.rd.root / "results.json", results)
            from unpact.report import build_report

            build_report(self.rd.root)
            bar.update()
        return results

    def model_info(self) -> dict[str, Any]:
        from unpact.models import model_info

        return self.stage("original/model_info", lambda: model_info(self.original()))


# ------------------------------------------------------------------ numbers


def _get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def general_score(ev: dict[str, Any]) -> float | None:
    g = ev.get("general") or {}
    return g.get("accuracy", g.get("mc_accuracy"))


def model_utility_of(ev: dict[str, Any]) -> float | None:
    """TOFU's model utility (harmonic mean) from the retain and general evaluations."""
    from unpact.metrics import tofu_model_utility

    splits = [ev[g] for g in ("retain", "general") if isinstance(ev.get(g), dict) and "rouge_l_recall" in ev[g]]
    if not splits:
        return None
    try:
        return float(tofu_model_utility(*splits))
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def utility_drop(orig: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Mean drop of retain ROUGE-L and general accuracy (original - unlearned)."""
    drops = []
    for a, b in ((_get(orig, "retain", "rouge_l_recall"), _get(after, "retain", "rouge_l_recall")),
                 (general_score(orig), general_score(after))):
        if a is not None and b is not None:
            drops.append(a - b)
    return sum(drops) / len(drops) if drops else None


def run_analyses(methods: dict[str, dict]) -> dict[str, Any]:
    from unpact.analyses import collapse_analysis, keyword_focus, layer_head_analysis, recovery_analysis

    kf = {}
    for m, r in methods.items():
        items = [
            {"group": d["group"], "before": d["before"], "after": d["after"], "special": d["special"],
             "key": [i in key for i in range(len(d["before"]))]}
            for d in r["tracking"]["loo"]["items"]
            for key in [set(d["key_tokens"])]
        ]
        kf[m] = keyword_focus(items)
    rec = recovery_analysis({
        m: {"prompt_best": r["recovery"].get("prompt_best"), "activation_best": r["recovery"].get("activation_best"),
            "prompt_collapse": r["recovery"].get("prompt_collapse"), "activation_collapse": r["recovery"].get("activation_collapse")}
        for m, r in methods.items()
    })
    col = collapse_analysis({
        m: {"utility_drop": r["collapse"]["utility_drop"],
            "items": [{"before": d["before"], "after": d["after"], "special": d["special"], "tokens": d["tokens"]}
                      for d in r["tracking"]["loo"]["items"] if d["group"] in ("retain", "general")]}
        for m, r in methods.items()
    })
    lh = layer_head_analysis({
        m: {"layer_delta": r["tracking"].get("layer_delta"), "head_delta": r["tracking"].get("head_delta")}
        for m, r in methods.items()
    })
    return {"keyword_focus": kf, "recovery": rec, "collapse": col, "layer_head": lh}


def summary_rows(orig_eval: dict, methods: dict[str, dict]) -> list[dict[str, Any]]:
    def row(name: str, ev: dict, rec: dict | None) -> dict[str, Any]:
        return {
            "method": name,
            "forget_rouge": _get(ev, "forget", "rouge_l_recall"),
            "retain_rouge": _get(ev, "retain", "rouge_l_recall"),
            "general_accuracy": general_score(ev),
            "forget_quality": _get(ev, "forget", "forget_quality"),
            "model_utility": model_utility_of(ev),
            "recovery_prompt": None if rec is None else rec.get("prompt_best"),
            "recovery_activation": None if rec is None else rec.get("activation_best"),
        }

    rows = [row("original", orig_eval, None)]
    rows += [row(m, r["evaluate"], r["recovery"]) for m, r in methods.items()]
    return rows


def _examples(orig_attr: dict, methods: dict[str, dict], k: int = 3) -> list[dict[str, Any]]:
    """Selected forget items with token heatmap views: original, after each method, under emphasis."""
    out = []
    forget = orig_attr["loo"].get("forget", [])
    for idx, d in enumerate(forget[:k]):
        from unpact.attribution import Attribution, key_tokens

        keys = set(key_tokens(Attribution.from_dict(d)))
        key = [i in keys for i in range(len(d["tokens"]))]
        views = [{"label": "original model", "tokens": d["tokens"], "scores": d["scores"], "key": key}]
        for m, r in methods.items():
            after = r["attribution"]["loo"]["forget"][idx]
            views.append({"label": f"{m}: after unlearning", "tokens": after["tokens"], "scores": after["scores"], "key": key})
            ex = r["recovery"].get("rewrite_attributions") or []
            if idx < len(ex):
                e = ex[idx]
                kp = set(e.get("keyword_positions", []))
                views.append({"label": f"{m}: emphasis '{e.get('template')}'", "tokens": e["tokens"],
                              "scores": e["scores"], "key": [i in kp for i in range(len(e["tokens"]))]})
        out.append({"item_id": d["item_id"], "question": d["prompt"], "answer": d["answer"], "views": views})
    return out


def assemble_results(cfg: RunConfig, info: dict, orig_eval: dict, orig_attr: dict,
                     methods: dict[str, dict], analyses: dict) -> dict[str, Any]:
    from unpact import __version__

    return {
        "unpact_version": __version__,
        "config": cfg.to_dict(),
        "model_info": info,
        "summary": summary_rows(orig_eval, methods),
        "original": {"evaluate": orig_eval, "attribution": orig_attr},
        "methods": methods,
        "analyses": analyses,
        "examples": _examples(orig_attr, methods),
    }


def summary_table(results: dict[str, Any]) -> str:
    """The per-method summary as a plain-text table (what ``unpact run`` prints at the end)."""
    cols = [("method", "method", 12), ("forget_rouge", "forget", 7), ("retain_rouge", "retain", 7),
            ("general_accuracy", "general", 8), ("forget_quality", "FQ", 9), ("recovery_prompt", "rec.prompt", 10),
            ("recovery_activation", "rec.act", 8)]
    lines = ["  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (_, h, w) in enumerate(cols))]
    for r in results["summary"]:
        cells = []
        for i, (k, _, w) in enumerate(cols):
            v = r.get(k)
            s = "-" if v is None else (f"{v:.3g}" if k == "forget_quality" else f"{v:.3f}") if isinstance(v, float) else str(v)
            cells.append(f"{s:>{w}}" if i else f"{s:<{w}}")
        lines.append("  ".join(cells))
    an = results.get("analyses", {})
    lines.append("")
    for name in ("recovery", "collapse", "layer_head"):
        if an.get(name, {}).get("verdict"):
            lines.append(f"{name}: {an[name]['verdict']}")
    for m, r in an.get("keyword_focus", {}).items():
        lines.append(f"keyword focus, {m}: {r['verdict']}")
    return "\n".join(lines)


def run_study(cfg: RunConfig, progress: ProgressFactory = null_progress,
              on_stage: Callable[[str, bool], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole study described by ``cfg``; return the results dict.

    Every input is validated before the run directory is created, so bad input
    leaves nothing behind. An existing run directory with a different config is an
    error (use a new ``out``), so a resumed run never mixes two studies.
    """
    data = validate(cfg)
    cfg_file = Path(cfg.out) / "config.json"
    if cfg_file.is_file():
        import json

        old = json.loads(cfg_file.read_text())
        new = json.loads(json.dumps(cfg.to_dict()))
        diff = sorted(k for k in set(old) | set(new) if k not in ("device",) and old.get(k) != new.get(k))
        if diff:
            raise ConfigError(
                f"run directory {cfg.out!r} holds a run with different settings ({', '.join(diff)}); "
                "give a new --out, or the same settings to resume it"
            )
    study = Study(cfg, progress=progress, on_stage=on_stage)
    study._data = data
    return study.run()
