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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from unpact.config import RunConfig
from unpact.data import Benchmark, load_benchmark, spread_sample
from unpact.errors import ConfigError, DataError
from unpact.progress import ProgressFactory, null_progress
from unpact.rundir import RunDir, RunLock, write_json_atomic

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
    """Check every input before anything is written (see :mod:`unpact.validation`): option
    types and ranges, names against their registries (unlearning methods and their
    hyperparameters, attribution methods - aliases such as ``ig`` become their canonical
    names in ``cfg`` -, emphasis templates, kinds, layer sets and factors), the device, the
    output path, the models and the benchmark splits."""
    from unpact import validation
    from unpact.unlearning import METHODS, get_method, make_config

    validation.check_types(cfg)
    validation.check_ranges(cfg)
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown unlearning method {unknown[0]!r}; known: {', '.join(sorted(METHODS))}")
    for m in cfg.method_config:
        if m not in cfg.methods:
            raise ConfigError(f"method_config names {m!r}, which is not among the methods {cfg.methods}")
        make_config(get_method(m).config_class, cfg.method_config[m])  # unknown or bad hyperparameters
    cfg.attribution.methods = validation.resolve_attribution_methods(cfg.attribution.methods)
    _recovery_config(cfg).settings()  # templates, kinds, factors, threshold, margin
    from unpact.emphasis.activation import LAYER_SETS

    for name in cfg.emphasis.layer_sets:
        if name not in LAYER_SETS and not all(x.strip().isdigit() for x in str(name).split(",")):
            raise ConfigError(f"unknown layer set {name!r}; use one of {', '.join(LAYER_SETS)} or indices like '0,2'")
    validation.check_device(cfg.device)
    validation.check_output_dir(cfg.out)
    for spec in (cfg.model, cfg.reference_model):
        if spec is None:
            continue
        validation.check_model_available(spec)
        from unpact.models import resolve_model_spec

        kind, target = resolve_model_spec(spec)
        if kind == "path" and cfg.prompt_format == "chat" and spec == cfg.model:  # no chat template: say so before any work
            from unpact.data import resolve_format
            from unpact.models import _load_tokenizer

            resolve_format("chat", _load_tokenizer(Path(target)), cfg.system_prompt, cfg.chat_template_args)
    return load_study_data(cfg)


def _recovery_config(cfg: RunConfig, max_batch_tokens: int | None = None):
    """The :class:`~unpact.emphasis.RecoveryConfig` of the run's emphasis settings."""
    from unpact.emphasis import RecoveryConfig

    e = cfg.emphasis
    kwargs: dict[str, Any] = dict(
        threshold=e.threshold, control_margin=e.collapse_margin, factors=tuple(e.factors),
        layer_sets=tuple(e.layer_sets), kinds=tuple(e.kinds),
        max_control_items=e.max_control_items, max_new_tokens=cfg.max_new_tokens,
    )
    if max_batch_tokens is not None:
        kwargs["max_batch_tokens"] = max_batch_tokens
    if e.templates is not None:
        kwargs["templates"] = tuple(e.templates)
    return RecoveryConfig(**kwargs)


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

            self._original = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
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

        return load_model(self.rd.model_dir(method), device=self.cfg.device, dtype=self.cfg.dtype)

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
        from unpact.metrics import benchmark_style, evaluate_groups, is_embedded

        groups = {g: self.data.groups[g] for g in GROUPS if self.data.groups[g]}
        out = evaluate_groups(
            model, groups, max_new_tokens=self.cfg.max_new_tokens, forget={g: g == "forget" for g in groups},
            roles={"forget": "forget", "retain": "retain", "general": "other"},
            style=benchmark_style(self.data.forget), stop_at_newline=is_embedded(self.data.forget),
            progress=self.progress, fmt=self.fmt, max_batch_tokens=self.budgets["forward"],
        )
        if reference_ratios and "forget" in out:
            # TOFU's KS test runs on the whole forget split, not on the evaluated subset
            from unpact.metrics import forget_quality, truth_ratios

            ratios = truth_ratios(model, self._forget_with_perturbed())
            out["forget"]["forget_quality"] = forget_quality(ratios, reference_ratios)
            out["forget"]["forget_quality_n"] = len(ratios)
        from unpact.metrics import answer_accuracy

        for r in out.values():
            per = r.get("rouge_l_recall_per_item")
            if per:
                r["accuracy"] = answer_accuracy(per, self.cfg.emphasis.threshold)
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

            ref = load_model(self.cfg.reference_model, device=self.cfg.device, dtype=self.cfg.dtype)
            items = self._forget_with_perturbed()
            if not items:
                return {"truth_ratios": None}
            return {"truth_ratios": [float(x) for x in truth_ratios(ref, items, self.fmt, self.budgets["forward"])]}

        # on the whole forget split (TOFU's forget quality), hence a new stage name
        return self.stage("reference/truth_ratios_forget_split", compute)["truth_ratios"]

    def _forget_with_perturbed(self) -> list:
        return [it for it in self.data.forget if getattr(it, "perturbed_answers", None)]

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
        fresh = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
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
        if self.cfg.attacks.names:
            result["attacks"] = self.stage(f"{method}/attacks", lambda: self._attacks(model()))
        if self.cfg.presence.probes:
            result["presence"] = self.stage(f"{method}/presence", lambda: self._presence(model(), result["evaluate"]))
        if self.cfg.presence.null_draws:
            result["keyword_nulls"] = self.stage(f"{method}/keyword_nulls",
                                                 lambda: self._keyword_nulls(result["evaluate"], result["tracking"]))
        model_cache.clear()
        return result

    # ------------------------------------------------ knowledge presence (unpact.presence)
    def _presence_items(self) -> list:
        """The forget group, with the biography cloze attached where the benchmark ships one
        (the embedded world's ``cloze`` split: the format probe's trained-but-not-unlearned format)."""
        items = list(self.data.groups["forget"])
        if not str(self.cfg.benchmark).startswith("embedded:"):
            return items
        from unpact.probes import attach_cloze

        try:
            cloze = list(load_benchmark(self.cfg.benchmark, "cloze", path=self.cfg.benchmark_path))
        except DataError:
            return items
        return attach_cloze(items, cloze)

    def _plain_recalls(self, model, items) -> list[float]:
        """ROUGE-L recall of ``model``'s greedy answers to the plain prompts (as the evaluation asks them)."""
        from unpact.metrics import greedy_answers, is_embedded, rouge_l_recall

        answers = greedy_answers(model, items, max_new_tokens=self.cfg.max_new_tokens, fmt=self.fmt,
                                 max_batch_tokens=self.budgets["forward"], stop_at_newline=is_embedded(self.data.forget))
        return [rouge_l_recall(a, it.answer) for a, it in zip(answers, items)]

    def presence_controls(self) -> dict[str, Any]:
        """The probes on the original and on both controls, and each probe's sensitivity/specificity, once per study."""
        def compute():
            from unpact.models import load_model
            from unpact.presence import calibrate, positive_control_model, probe_model

            s, items = self.cfg.presence, self._presence_items()
            thr = self.cfg.emphasis.threshold
            out: dict[str, Any] = {"original": probe_model(self.original(), items, s, self.fmt)}
            if self.cfg.reference_model:
                neg = load_model(self.cfg.reference_model, device=self.cfg.device, dtype=self.cfg.dtype)
                out["negative"] = probe_model(neg, items, s, self.fmt)
                del neg
            if s.positive_control:
                pos = positive_control_model(self.original(), items, list(self.data.retain), s,
                                             seed=stage_seed(self.cfg.seed, "controls/positive"))
                if pos is not None:
                    recalls = self._plain_recalls(pos, items)
                    out["positive"] = probe_model(pos, items, s, self.fmt)
                    out["positive_plain_recall"] = recalls
                    out["positive_hidden_ids"] = [str(it.id) for it, r in zip(items, recalls) if r < thr]
                    del pos
            if "positive" in out and "negative" in out:
                out["calibration"] = calibrate(out["positive"], out["negative"], out["positive_hidden_ids"])
            return out

        return self.stage("controls/presence", compute)

    def _presence(self, unlearned, ev: dict[str, Any]) -> dict[str, Any]:
        """The probes on an unlearned model, and per forget item: known / hidden / erased."""
        from unpact.presence import presence_calls, probe_model, usable_probes

        s, items = self.cfg.presence, self._presence_items()
        probes = probe_model(unlearned, items, s, self.fmt)
        per = ev["forget"]["rouge_l_recall_per_item"]
        correct = [r >= self.cfg.emphasis.threshold for r in per]
        use, left_out = usable_probes(self.presence_controls().get("calibration"), list(probes), s.min_specificity)
        return {"probes": probes, **presence_calls([str(it.id) for it in items], correct, probes, use),
                "probes_left_out": left_out}

    def _keyword_nulls(self, ev: dict[str, Any], tracking: dict[str, Any]) -> dict[str, Any]:
        """Finding 1 against weight-noise nulls matched to this method's damage on the forget answers."""
        from unpact.analyses import keyword_focus_vs_null
        from unpact.attribution import Attribution
        import numpy as np

        from unpact.metrics import qa_probabilities
        from unpact.presence import null_keyword_rows

        items = self.data.groups["forget"]
        before = [Attribution.from_dict(d) for d in self.original_attribution()["loo"].get("forget", [])]
        keys = [set(k) for k in self._keyword_positions()["forget"]]
        # matched on the forget answers' mean log-prob (continuous): the forget accuracy sits at 0
        # after most methods, where any large enough noise would "match" it
        target = ev["forget"].get("mean_logprob")
        if target is None or not before:
            return {"match": None, "test": None, "message": "no forget log-prob or attribution to match"}

        def measure(m) -> float:
            return float(np.mean(qa_probabilities(m, items, self.fmt, self.budgets["forward"])["true_lp"]))

        nulls = null_keyword_rows(self.original(), items, before, keys, measure, target,
                                  self.cfg.presence, seed=stage_seed(self.cfg.seed, "nulls"), fmt=self.fmt,
                                  max_batch_tokens=self.budgets["forward"])
        if not nulls["draws"]:
            return {"match": nulls["match"], "test": None, "message": nulls["message"]}
        rows = [{"id": d["item_id"], "group": d["group"], "before": d["before"], "after": d["after"],
                 "special": d["special"], "key": [i in set(d["key_tokens"]) for i in range(len(d["before"]))]}
                for d in tracking["loo"]["items"] if d["group"] == "forget"]
        test = keyword_focus_vs_null(rows, nulls["draws"], seed=self.cfg.seed)
        return {"match": nulls["match"], "test": test, "message": None}

    def _recovery(self, unlearned, method: str) -> dict[str, Any]:
        from unpact.attribution import attribute
        from unpact.data import format_answer
        from unpact.emphasis import recover, rewrite

        e = self.cfg.emphasis
        kw = self._keyword_positions()
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
            config=_recovery_config(self.cfg, self.budgets["forward"]), method=method, fmt=self.fmt,
            progress=self.progress,
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

    def _attack_kwargs(self) -> dict[str, Any]:
        from unpact.emphasis import RecoveryConfig

        rc = RecoveryConfig(threshold=self.cfg.emphasis.threshold, max_new_tokens=self.cfg.max_new_tokens,
                            max_batch_tokens=self.budgets["forward"])
        return {"pool": {"retain": list(self.data.retain)}, "recovery": rc, "seed": self.cfg.seed, "fmt": self.fmt}

    def attack_controls(self) -> dict[str, Any]:
        """Every attack on the original and the negative control (retain-only model), once per study."""
        def compute():
            from unpact.attacks import role_runs
            from unpact.models import load_model

            a = self.cfg.attacks
            models = {"original": self.original()}
            if self.cfg.reference_model:
                models["negative"] = load_model(self.cfg.reference_model, device=self.cfg.device, dtype=self.cfg.dtype)
            kw = self._attack_kwargs()
            with self.progress(total=len(a.names) * len(models), desc="attack controls") as bar:
                out: dict[str, Any] = {}
                for name in a.names:
                    out[name] = {}
                    for role, m in models.items():
                        out[name][role] = role_runs(name, m, self.data.groups["forget"], config=a.options.get(name), **kw)
                        bar.update()
            return out

        return self.stage("controls/attacks", compute)

    def _attacks(self, unlearned) -> dict[str, Any]:
        from unpact.attacks import run_attack

        a = self.cfg.attacks
        controls = self.attack_controls()
        return {name: run_attack(name, unlearned, self.data.groups["forget"], controls=controls[name],
                                 config=a.options.get(name), progress=self.progress, **self._attack_kwargs())
                for name in a.names}

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
            self.reference_ratios()  # first, so fresh and resumed runs list the stages in one order
            orig_eval = self.original_evaluation()
            orig_attr = self.original_attribution()
            if cfg.attacks.names:
                self.attack_controls()  # here, so fresh and resumed runs list the stages in one order
            presence = self.presence_controls() if cfg.presence.probes else None
            bar.update()
            methods = {}
            for m in cfg.methods:
                methods[m] = self.method_stages(m)
                bar.update()
            pre = forget_precondition(orig_eval, cfg.min_forget_accuracy, cfg.emphasis.threshold)
            analyses = self.stage("analyses", lambda: run_analyses(methods, pre, presence))
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
    """General accuracy: :func:`unpact.metrics.answer_accuracy` of the general QA items (MC
    accuracy only when the general split has no QA items)."""
    g = ev.get("general") or {}
    return g.get("accuracy", g.get("mc_accuracy"))


def model_utility_of(ev: dict[str, Any]) -> float | None:
    """Model utility (TOFU's harmonic mean) from the retain and general evaluations: on the
    embedded world the analogue of TOFU's 9 numbers (retain probability, ROUGE-L recall and
    truth-ratio score, general probability and ROUGE-L recall: 5 numbers)."""
    from unpact.metrics import tofu_model_utility

    splits = [ev[g] for g in ("retain", "general") if isinstance(ev.get(g), dict) and "rouge_l_recall" in ev[g]]
    if not splits:
        return None
    try:
        return float(tofu_model_utility(*splits))
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def model_utility_components_of(ev: dict[str, Any]) -> list[str]:
    """The names of the numbers :func:`model_utility_of` averages (``"retain.prob"``, ...): 9 with
    TOFU's retain, real-authors and world-facts splits; on the embedded world the analogue."""
    from unpact.metrics import utility_components

    names = [g for g in ("retain", "general") if isinstance(ev.get(g), dict) and "rouge_l_recall" in ev[g]]
    try:
        return list(utility_components(*[ev[g] for g in names], names=names))
    except KeyError:
        return []


def utility_degenerate(ev: dict[str, Any]) -> str | None:
    """Why TOFU's model utility of ``ev`` carries no information, or None.

    The utility is a harmonic mean: one component at 0 (e.g. a truth-ratio score of 0,
    as on a world whose perturbed answers the model always prefers) makes it 0 whatever
    the others are. Such a 0 is marked in the report instead of printed as a measurement.
    """
    zero = []
    for g in ("retain", "general"):
        r = ev.get(g)
        if not isinstance(r, dict) or "rouge_l_recall" not in r:
            continue
        prob_key = "prob_normalised" if r.get("tofu_role") == "other" and "prob_normalised" in r else "prob"
        for k in (prob_key, "rouge_l_recall", "truth_ratio"):
            v = r.get(k)
            if v is not None and v <= 0:
                zero.append(f"{g} {k} is 0")
    return ", ".join(zero) or None


def utility_drop(orig: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Mean drop of retain ROUGE-L and general accuracy (original - unlearned)."""
    drops = []
    for a, b in ((_get(orig, "retain", "rouge_l_recall"), _get(after, "retain", "rouge_l_recall")),
                 (general_score(orig), general_score(after))):
        if a is not None and b is not None:
            drops.append(a - b)
    return sum(drops) / len(drops) if drops else None


def forget_precondition(orig_eval: dict[str, Any], min_accuracy: float, threshold: float) -> dict[str, Any]:
    """Does the original model know the forget set? (the precondition of every verdict)

    ``holds`` is True when the original answers at least ``min_accuracy`` of the forget
    items right (ROUGE-L recall >= ``threshold``; the MC accuracy for multiple-choice items).

    Example:
        >>> forget_precondition({"forget": {"accuracy": 0.0}}, 0.5, 0.9)["holds"]
        False
    """
    f = orig_eval.get("forget") or {}
    acc = f.get("accuracy", f.get("mc_accuracy"))
    out: dict[str, Any] = {"forget_accuracy": acc, "min_forget_accuracy": min_accuracy, "threshold": threshold}
    if acc is None:
        out.update(holds=None, reason="the original model's forget accuracy was not measured")
        return out
    out["holds"] = acc >= min_accuracy
    out["reason"] = (
        f"the original model answers {100 * acc:.0f}% of the forget items right (ROUGE-L recall >= {threshold:g}), "
        f"{'at least' if out['holds'] else 'below'} min_forget_accuracy = {100 * min_accuracy:.0f}%"
        + ("" if out["holds"] else ": it does not know the forget set, so there is nothing to unlearn "
           "and no verdict applies")
    )
    return out


def _not_applicable(analyses: dict[str, Any], reason: str) -> dict[str, Any]:
    """Every verdict in ``analyses`` replaced by "not applicable" with ``reason`` (numbers kept)."""
    na = f"not applicable: {reason}"
    for name, a in analyses.items():
        if name in ("keyword_focus", "keyword_focus_null"):
            for r in a.values():
                r["verdict"], r["holds"] = na, None
        elif isinstance(a, dict) and "verdict" in a:
            a["verdict"] = na
            if "holds" in a:
                a["holds"] = None
    return analyses


def _n_forgotten(table: dict[str, Any]) -> int | None:
    """How many forget items the unlearned model got wrong (the recovery rates' denominator)."""
    for kind in ("prompt", "activation"):
        for row in (table.get(kind) or {}).values():
            if isinstance(row, dict) and row.get("n_forgotten") is not None:
                return int(row["n_forgotten"])
    return None


def presence_analysis(methods: dict[str, dict], controls: dict[str, Any]) -> dict[str, Any]:
    """Per method: of the forget items it no longer answers, how many a probe still finds (hidden)
    and how many none finds (erased), with each probe's calibration on the controls.

    The verdict is descriptive (a count, not a test): "hidden" is only as trustworthy as the
    probes' sensitivity on the positive control, "erased" as their specificity on the negative
    one; both are printed beside it.
    """
    cal = controls.get("calibration") or {}
    per = {}
    for m, r in methods.items():
        p = r.get("presence")
        if not p:
            continue
        c = p["counts"]
        forgotten = c["hidden"] + c["erased"]
        per[m] = {"counts": c, "n_forgotten": forgotten, "share_hidden_of_forgotten": p.get("share_hidden_of_forgotten"),
                  "share_present": p.get("share_present"), "probes_used": p.get("probes_used"),
                  "probes_left_out": p.get("probes_left_out")}
    lines = []
    for m, x in per.items():
        c = x["counts"]
        lines.append(f"{m}: {c['hidden']} hidden, {c['erased']} erased of {x['n_forgotten']} forgotten"
                     f" (by {', '.join(x.get('probes_used') or []) or 'no probe'})")
    cal_txt = "; ".join(
        f"{k}: sensitivity {v['sensitivity']:.2f} (n={v['n_positive']}), specificity {v['specificity']:.2f} (n={v['n_negative']})"
        for k, v in cal.items() if v.get("sensitivity") is not None and v.get("specificity") is not None)
    verdict = ("; ".join(lines) + (f" — probes on the controls: {cal_txt}" if cal_txt else " — probes not calibrated "
               "(no positive or negative control)"))
    return {"methods": per, "calibration": cal, "verdict": verdict,
            "positive_hidden": len(controls.get("positive_hidden_ids") or []),
            "positive_items": len(controls.get("positive_plain_recall") or [])}


def run_analyses(methods: dict[str, dict], precondition: dict[str, Any] | None = None,
                 presence: dict[str, Any] | None = None) -> dict[str, Any]:
    """The analyses over the methods' stage results; with a failed ``precondition``
    (see :func:`forget_precondition`) every verdict is "not applicable" and says why.
    ``presence``: the probes' controls (``controls/presence``), for the presence analysis."""
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
            "prompt_collapse": r["recovery"].get("prompt_collapse"), "activation_collapse": r["recovery"].get("activation_collapse"),
            "n_forgotten": _n_forgotten(r["recovery"])}
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
    out = {"keyword_focus": kf, "recovery": rec, "collapse": col, "layer_head": lh}
    nulls = {m: r["keyword_nulls"]["test"] for m, r in methods.items() if (r.get("keyword_nulls") or {}).get("test")}
    if nulls:
        out["keyword_focus_null"] = nulls
    if any("presence" in r for r in methods.values()):
        out["presence"] = presence_analysis(methods, presence or {})
    if precondition is not None:
        if precondition.get("holds") is False:
            _not_applicable(out, precondition["reason"])
        out["precondition"] = precondition
    return out


def summary_rows(orig_eval: dict, methods: dict[str, dict]) -> list[dict[str, Any]]:
    def row(name: str, ev: dict, rec: dict | None) -> dict[str, Any]:
        return {
            "method": name,
            "forget_rouge": _get(ev, "forget", "rouge_l_recall"),
            "retain_rouge": _get(ev, "retain", "rouge_l_recall"),
            "general_accuracy": general_score(ev),
            "forget_quality": _get(ev, "forget", "forget_quality"),
            "model_utility": model_utility_of(ev),
            "model_utility_components": model_utility_components_of(ev),
            "recovery_prompt": None if rec is None else rec.get("prompt_best"),
            "recovery_activation": None if rec is None else rec.get("activation_best"),
            "model_utility_degenerate": utility_degenerate(ev),
            "n_items": {g: len(_get(ev, g, "rouge_l_recall_per_item", default=[]) or []) for g in GROUPS},
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
        "routes": route_rows(methods),
    }


def route_rows(methods: dict[str, dict]) -> list[dict[str, Any]]:
    """Per method and recovery route: the best setting's raw rate and, for attacks, the rate beyond controls.

    Emphasis rows carry the emphasis table's best rates (controls: collapse of retain/general,
    no negative control yet); attack rows their best setting by the controlled rate.
    """
    rows = []
    for m, r in methods.items():
        rec = r.get("recovery") or {}
        for kind in ("prompt", "activation"):
            name = rec.get(f"{kind}_best_setting")
            row = (rec.get(kind) or {}).get(name) or {}
            rows.append({"method": m, "route": f"{kind} emphasis", "setting": name, "raw_rate": rec.get(f"{kind}_best"),
                         "controlled_rate": None, "n_recovered": row.get("n_recovered"),
                         "n_forgotten": row.get("n_forgotten"), "negative_control": False})
        for a, t in (r.get("attacks") or {}).items():
            best = t.get("best_setting") or next(iter(t.get("settings") or {}), None)
            row = (t.get("settings") or {}).get(best) or {}
            rows.append({"method": m, "route": a, "setting": best, "raw_rate": row.get("forget_rate"),
                         "controlled_rate": row.get("controlled_rate"), "n_recovered": row.get("n_recovered_beyond_controls"),
                         "n_forgotten": row.get("n_eligible"), "negative_control": "negative" in (t.get("roles") or [])})
    return rows


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
    counts = (results["summary"][0].get("n_items") or {}) if results["summary"] else {}
    if any(counts.values()):
        lines.append(
            "(on " + ", ".join(f"{n} {g}" for g, n in counts.items() if n) + " items: at most max_items per group; "
            "`unpact unlearn` evaluates every item of a split, so its numbers differ)"
        )
    an = results.get("analyses", {})
    pre = an.get("precondition") or {}
    if pre.get("holds") is False:  # said first: no number below supports a verdict
        lines.insert(0, f"not applicable: {pre['reason']}\n")
    lines.append("")
    for name in ("recovery", "collapse", "layer_head", "presence"):
        if an.get(name, {}).get("verdict"):
            lines.append(f"{name}: {an[name]['verdict']}")
    nulls = an.get("keyword_focus_null", {})
    for m, r in an.get("keyword_focus", {}).items():
        if m in nulls:  # finding 1's verdict is the one against the damage-matched nulls
            lines.append(f"keyword focus, {m}: {nulls[m]['verdict']} (sign test alone: {r['verdict']})")
        else:
            lines.append(f"keyword focus, {m}: {r['verdict']}")
    return "\n".join(lines)


def run_study(cfg: RunConfig, progress: ProgressFactory = null_progress,
              on_stage: Callable[[str, bool], None] | None = None,
              on_start: Callable[[], None] | None = None) -> dict[str, Any]:
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
        old.setdefault("dtype", "float32")  # run directories from before the dtype setting ran in float32
        new = json.loads(json.dumps(cfg.to_dict()))
        diff = sorted(k for k in set(old) | set(new) if k not in ("device",) and old.get(k) != new.get(k))
        if diff:
            raise ConfigError(
                f"run directory {cfg.out!r} holds a run with different settings ({', '.join(diff)}); "
                "give a new --out, or the same settings to resume it"
            )
    existed = Path(cfg.out).exists()
    lock = RunLock(cfg.out)
    try:
        lock.acquire()  # a second run on the same directory stops here, naming the holder
    except OSError as exc:
        if not existed:
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise ConfigError(f"cannot lock the run directory {cfg.out!r}: {exc}") from None
    try:
        if on_start is not None:  # every input checked, the directory locked: the run starts
            on_start()
        study = Study(cfg, progress=progress, on_stage=on_stage)
        study._data = data
        return study.run()
    finally:
        lock.release()
