"""The main job's stages, each an object registered in :data:`STAGES` in the order it runs.

A stage (:class:`Stage`) has a ``name`` (its file: ``stages/<subject>/<name>.json``), a results
``key`` (where its result goes: ``methods.<subject>.<key>`` in results.json), ``applies(cfg)``
(whether the run's settings ask for it), ``unlearning_only`` (it needs the unlearning run itself,
so audited checkpoints skip it) and ``run(study, subject) -> dict``. ``unpact run`` runs the
registered stages on each method's unlearned model, ``unpact audit`` on each given checkpoint
(the same code path, :meth:`unpact.pipeline.Study.subject_stages`); the study seeds each run from
the run's seed and the stage's name, writes its result atomically and reads it back on resume.

A stage sees the study through :class:`StudyView` (so this module never imports the
pipeline): the run's settings (``study.cfg``, a :class:`~unpact.config.RunConfig`), the shared
inputs (``study.data``, ``study.fmt``, ``study.original()``, ``study.budgets``,
``study.progress``) and the once-per-study results (``study.original_evaluation()``, ...). What
is particular to the measured model comes in the :class:`Subject`: its name, its model (loaded
on first use), the results of the stages before it and the runner of nested stages (the
trajectory's checkpoints). A stage returns a JSON-able dict and changes nothing else.

Example:
    >>> stage_budgets(16384)
    {'forward': 16384, 'unlearn': 4096, 'heads': 4096, 'integrated_gradients': 1024}
    >>> [stage.key for _, stage in STAGES.items()][:3]
    ['lineage', 'evaluate', 'attribution']
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from unpact import checkpoints
from unpact.analyses import keyword_focus_vs_null, token_drop_stats
from unpact.analyses.assemble import control_items, focus_rows
from unpact.attacks import get_attack, role_runs, run_attack
from unpact.attribution import Attribution, attribute, compare, key_tokens
from unpact.attribution.gradients import IG_BATCH_SHARE
from unpact.data import Benchmark, format_answer, load_benchmark, spread_sample
from unpact.data.embedded_views import cloze_key, cloze_split
from unpact.emphasis import RecoveryConfig, recover, rewrite
from unpact.emphasis.controlled import controlled_recovery
from unpact.errors import DataError, InputError
from unpact.metrics import (
    answer_accuracy,
    benchmark_style,
    evaluate_groups,
    forget_quality,
    is_embedded,
    mia_aucs,
    qa_probabilities,
    rouge_recalls,
    truth_ratios,
)
from unpact.models import load_model
from unpact.presence import (
    answer_space,
    calibrate,
    chance_hits,
    chance_levels,
    null_keyword_rows,
    positive_control_model,
    presence_calls,
    probe_model,
    usable_probes,
)
from unpact.probes import attach_cloze
from unpact.protocols import Model
from unpact.registry import Registry
from unpact.results import model_utility_of, utility_drop, utility_score
from unpact.trajectory import run_trajectory
from unpact.unlearning import UnlearnResult, unlearn

if TYPE_CHECKING:  # pragma: no cover
    from unpact.config import RunConfig
    from unpact.progress import ProgressFactory

GROUPS = ("forget", "retain", "general")

#: Share of ``max_batch_tokens`` that a pass keeping activations for backward may use: such a
#: pass holds every layer's activations (and, for integrated gradients, one row per
#: interpolation step), so it gets a quarter (unlearning, heads) or a sixteenth (integrated
#: gradients) of the forward budget. At the default budget (16384) these are the methods' own
#: defaults (4096 and 1024).
BACKWARD_SHARE = {"unlearn": 4, "heads": 4, "integrated_gradients": IG_BATCH_SHARE}


def stage_budgets(max_batch_tokens: int) -> dict[str, int]:
    """Token budget of each kind of pass for a forward budget of ``max_batch_tokens``."""
    return {
        "forward": max_batch_tokens,
        **{kind: max(1, max_batch_tokens // share) for kind, share in BACKWARD_SHARE.items()},
    }


def stage_seed(seed: int, name: str) -> int:
    """The seed of stage ``name`` in a run seeded ``seed`` (a stable hash, so reruns agree).

    Example:
        >>> stage_seed(0, "ga_gdr/unlearn") == stage_seed(0, "ga_gdr/unlearn") != stage_seed(1, "ga_gdr/unlearn")
        True
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
    return int(digest[:8], 16)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@dataclass
class StudyData:
    """The study's benchmark splits and the evenly spaced subsets it evaluates and attributes."""

    forget: Benchmark
    retain: Benchmark
    general: Benchmark | None
    holdout: Benchmark | None
    groups: dict[str, list]  # the evaluated/attributed subsets
    #: per audited checkpoint, what the input checks measured (unpact.checkpoints.check_audit_inputs):
    #: kept so the checkpoint stage does not read the weights a second time
    lineage: dict[str, dict[str, Any]] = field(default_factory=dict)


class StudyView(Protocol):
    """What a stage sees of the study (:class:`unpact.pipeline.Study` implements it): settings,
    shared inputs and the once-per-study results, all read-only."""

    cfg: RunConfig
    progress: ProgressFactory
    budgets: dict[str, int]

    @property
    def data(self) -> StudyData: ...

    @property
    def fmt(self) -> Any: ...

    def original(self) -> Model: ...

    def model_dir(self, name: str) -> str: ...

    def finished(self) -> Mapping[str, Any]: ...

    def reference_ratios(self) -> list[float] | None: ...

    def reference_mia(self) -> dict[str, Any] | None: ...

    def original_evaluation(self) -> dict[str, Any]: ...

    def original_attribution(self) -> dict[str, Any]: ...

    def attack_controls(self) -> dict[str, Any]: ...

    def presence_controls(self) -> dict[str, Any]: ...


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


# ------------------------------------------------------------------ shared stages


def attribution(study: StudyView, model: Model) -> dict[str, Any]:
    """loo (+ KeyTokens) on every group item; integrated gradients and heads on a subset."""
    settings, budgets = study.cfg.attribution, study.budgets
    out: dict[str, Any] = {"loo": {}, "integrated_gradients": {}, "heads": {}}
    for g in GROUPS:
        items = study.data.groups[g]
        if not items:
            continue
        res = attribute(
            model,
            items,
            method="loo",
            group=g,
            fmt=study.fmt,
            max_batch_tokens=budgets["forward"],
            progress=study.progress,
        )
        out["loo"][g] = [r.to_dict() for r in res]
        subset = items[: settings.subset]
        if "integrated_gradients" in settings.methods and subset:
            res = attribute(
                model,
                subset,
                method="integrated_gradients",
                group=g,
                steps=settings.ig_steps,
                fmt=study.fmt,
                max_passes=max(settings.ig_max_passes, settings.ig_steps),
                max_batch_tokens=budgets["integrated_gradients"],
                progress=study.progress,
            )
            out["integrated_gradients"][g] = [r.to_dict() for r in res]
        if "heads" in settings.methods and subset:
            res = attribute(
                model,
                subset,
                method="heads",
                group=g,
                fmt=study.fmt,
                max_batch_tokens=budgets["heads"],
                progress=study.progress,
            )
            out["heads"][g] = [r.to_dict() for r in res]
    return out


def forget_with_perturbed(study: StudyView) -> list:
    """The whole forget split's items with perturbed answers (TOFU's forget quality runs on all of them)."""
    return [it for it in study.data.forget if getattr(it, "perturbed_answers", None)]


def reference_ratios(study: StudyView) -> dict[str, Any]:
    """Truth ratios of the retain-only reference model on the whole forget split."""
    cfg = study.cfg
    ref = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    items = forget_with_perturbed(study)
    if not items:
        return {"truth_ratios": None}
    return {"truth_ratios": [float(x) for x in truth_ratios(ref, items, study.fmt, study.budgets["forward"])]}


def mia_holdout(study: StudyView) -> list | None:
    """The membership-inference attacks' non-members: an evenly spaced ``max_items`` sample of the
    holdout split's QA items (as many as the evaluated forget items); None without a holdout split."""
    data = study.data
    if data.holdout is None:
        return None
    items = [it for it in data.holdout if it.kind == "qa"]
    return spread_sample(items, study.cfg.max_items) or None


def reference_mia(study: StudyView) -> dict[str, Any]:
    """The retain-only reference model's MIA AUCs on the evaluated forget items against
    :func:`mia_holdout` (privleak's reference)."""
    cfg = study.cfg
    holdout = mia_holdout(study)
    if not holdout or not study.data.groups["forget"]:
        return {}
    ref = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    return mia_aucs(ref, study.data.groups["forget"], holdout, study.fmt, study.budgets["forward"])


def evaluation(
    study: StudyView, model: Model, reference_ratios: list[float] | None, reference_mia: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every metric on each group, all groups' answers generated in one batched pass; on the forget
    group also the MIA AUCs against :func:`mia_holdout` and privleak against ``reference_mia``."""
    data = study.data
    groups = {g: data.groups[g] for g in GROUPS if data.groups[g]}
    holdout = mia_holdout(study)
    out = evaluate_groups(
        model,
        groups,
        {"forget": reference_mia} if reference_mia else None,
        max_new_tokens=study.cfg.max_new_tokens,
        forget={g: g == "forget" for g in groups},
        roles={"forget": "forget", "retain": "retain", "general": "other"},
        style=benchmark_style(data.forget),
        stop_at_newline=is_embedded(data.forget),
        progress=study.progress,
        fmt=study.fmt,
        max_batch_tokens=study.budgets["forward"],
        holdouts={"forget": holdout} if holdout else None,
    )
    if reference_ratios and "forget" in out:
        # TOFU's KS test runs on the whole forget split, not on the evaluated subset
        ratios = truth_ratios(model, forget_with_perturbed(study))
        out["forget"]["forget_quality"] = forget_quality(ratios, reference_ratios)
        out["forget"]["forget_quality_n"] = len(ratios)
    for metrics in out.values():
        recalls = metrics.get("rouge_l_recall_per_item")
        if recalls:
            metrics["accuracy"] = answer_accuracy(recalls, study.cfg.emphasis.threshold)
    return out


def keyword_positions(study: StudyView) -> dict[str, list[list[int]]]:
    """Per group, each item's KeyTokens on the original model under the run's KeyTokens rule."""
    rule = dataclasses.asdict(study.cfg.attribution.keytokens)
    loo = study.original_attribution()["loo"]
    return {g: [key_tokens(Attribution.from_dict(d), **rule) for d in loo.get(g, [])] for g in GROUPS}


def attack_options(study: StudyView) -> dict[str, Any]:
    """The keyword arguments every attack run of the study shares: the retain pool, the recovery
    settings (threshold, answer length, token budget), the seed and the prompt format."""
    recovery_cfg = RecoveryConfig(
        threshold=study.cfg.emphasis.threshold,
        max_new_tokens=study.cfg.max_new_tokens,
        max_batch_tokens=study.budgets["forward"],
    )
    return {
        "pool": {"retain": list(study.data.retain)},
        "recovery": recovery_cfg,
        "seed": study.cfg.seed,
        "fmt": study.fmt,
    }


def attack_controls(study: StudyView) -> dict[str, Any]:
    """Every attack on the original and the negative control (retain-only model), once per study."""
    cfg, settings = study.cfg, study.cfg.attacks
    models = {"original": study.original()}
    if cfg.reference_model:
        models["negative"] = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    options = attack_options(study)
    with study.progress(total=len(settings.names) * len(models), desc="attack controls") as bar:
        out: dict[str, Any] = {}
        for name in settings.names:
            out[name] = {}
            for role, model in models.items():
                out[name][role] = role_runs(
                    name, model, study.data.groups["forget"], config=attack_config(study, name), **options
                )
                bar.update()
    return out


# ------------------------------------------------------------------ per-method stages


def training_options(study: StudyView) -> dict[str, Any]:
    """How every fine-tune of the study runs its passes (unlearning, the trajectory, the positive
    control's hiding and the relearning attack): the backward token budget and gradient
    checkpointing. They change memory and time, not the update."""
    return {"max_batch_tokens": study.budgets["unlearn"], "gradient_checkpointing": study.cfg.gradient_checkpointing}


def method_overrides(study: StudyView, method: str) -> dict[str, Any]:
    """``method``'s settings in this run: :func:`training_options` and the run's
    ``method_config.<method>``."""
    return {**training_options(study), **(study.cfg.method_config.get(method) or {})}


def attack_config(study: StudyView, name: str) -> dict[str, Any]:
    """Attack ``name``'s options in this run: the run's ``attacks.options.<name>`` over the
    :func:`training_options` its config takes (the relearning attack trains; the others do not)."""
    known = {f.name for f in dataclasses.fields(get_attack(name).config_class)}
    shared = {k: v for k, v in training_options(study).items() if k in known}
    return {**shared, **(study.cfg.attacks.options.get(name) or {})}


def unlearning(study: StudyView, method: str) -> UnlearnResult:
    """Unlearn a fresh copy of the original with ``method`` (the shared original stays untouched);
    the caller saves the model (:func:`unlearning_summary` is what the stage file keeps)."""
    cfg = study.cfg
    fresh = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    return unlearn(
        fresh,
        method,
        list(study.data.forget),
        list(study.data.retain),
        method_overrides(study, method),
        inplace=True,
        seed=stage_seed(cfg.seed, f"{method}/unlearn"),
        progress=study.progress,
        fmt=study.fmt,
    )


def unlearning_summary(method: str, res: UnlearnResult) -> dict[str, Any]:
    """The unlearn stage's file: the method, its settings, the losses and how training ended."""
    return {
        "method": method,
        "config": {k: v for k, v in vars(res.config).items() if not callable(v)},
        "losses": res.losses,
        "stopped_early": res.stopped_early,
        "message": res.message,
    }


def lineage(study: StudyView, name: str) -> dict[str, Any]:
    """Where the measured model comes from and how far it moved: its relative weight distance
    from the original and whether it is identical (:func:`unpact.checkpoints.lineage`; for an
    audited checkpoint the input checks' measurement, not a second read of the weights)."""
    spec = study.cfg.checkpoints.get(name)
    if spec is None:  # a method: unpact unlearned it into the run directory
        out = checkpoints.lineage(study.cfg.model, study.model_dir(name))
        return {**out, "spec": None, "source": f"unlearned by unpact ({name})"}
    out = study.data.lineage.get(name) or checkpoints.lineage(study.cfg.model, spec)
    return {**out, "spec": spec, "source": "given checkpoint (unpact audit)"}


def track(study: StudyView, after: dict[str, Any]) -> dict[str, Any]:
    """Contribution tracking: the original's attributions against the unlearned model's (``after``)."""
    before = study.original_attribution()
    rule = dataclasses.asdict(study.cfg.attribution.keytokens)

    def load(d, kind):
        return [Attribution.from_dict(x) for g in GROUPS for x in d[kind].get(g, [])]

    out: dict[str, Any] = {"loo": compare(load(before, "loo"), load(after, "loo"), **rule).to_dict()}
    if before["heads"]:
        out["heads"] = compare(load(before, "heads"), load(after, "heads"), **rule).to_dict()["summary"]
        forget_before = [attr for attr in load(before, "heads") if attr.group == "forget"]
        forget_after = [attr for attr in load(after, "heads") if attr.group == "forget"]
        if forget_before:
            summary = compare(forget_before, forget_after, **rule).summary
            out["head_delta"] = summary.get("per_head_head_total_delta")
            out["layer_delta"] = [
                attn + mlp
                for attn, mlp in zip(
                    summary.get("per_layer_attn_total_delta", []), summary.get("per_layer_mlp_total_delta", [])
                )
            ]
    return out


def emphasis_controls(
    study: StudyView, keywords: dict[str, list[list[int]]]
) -> tuple[dict[str, list], dict[str, list]]:
    """The emphasis controls: at most ``emphasis.max_control_items`` retain and general items
    (evenly spaced), and their KeyTokens from ``keywords`` (:func:`keyword_positions`)."""
    data = study.data
    controls: dict[str, list] = {}
    control_keywords: dict[str, list] = {}
    for g in ("retain", "general"):
        idx = spread_sample(list(range(len(data.groups[g]))), study.cfg.emphasis.max_control_items)
        if idx:
            controls[g] = [data.groups[g][i] for i in idx]
            control_keywords[g] = [keywords[g][i] for i in idx]
    return controls, control_keywords


def recovery(study: StudyView, unlearned: Model, method: str) -> dict[str, Any]:
    """Emphasis recovery on the forget items (retain, general and holdout controls), and the best
    rewrite's attribution on the unlearned model for the report's heatmaps: the
    :class:`~unpact.emphasis.RecoveryTable`'s ``to_dict``."""
    data = study.data
    keywords = keyword_positions(study)
    controls, control_keywords = emphasis_controls(study, keywords)
    if data.holdout is not None:
        # authors the model never saw: emphasis must not "recover" what was never known
        controls["holdout"] = spread_sample(
            [it for it in data.holdout if it.kind == "qa"], study.cfg.emphasis.max_control_items
        )
    table = recover(
        unlearned,
        data.groups["forget"],
        original=study.original(),
        controls=controls,
        keywords=keywords["forget"],
        control_keywords=control_keywords,
        config=study.cfg.recovery_config(study.budgets["forward"]),
        method=method,
        fmt=study.fmt,
        progress=study.progress,
    )
    table.rewrite_attributions = rewrite_attributions(study, unlearned, table)
    return table.to_dict()


def rewrite_attributions(study: StudyView, unlearned: Model, table) -> list[dict[str, Any]]:
    """Attribution on ``unlearned`` of the first ``attribution.subset`` forget items rewritten by the
    best prompt template of ``table`` (the report's heatmaps); [] when no rewrite recovered anything."""
    best = table.prompt_best_setting
    if not best:
        return []
    examples = []
    for row, item in list(zip(table.items, study.data.groups["forget"]))[: study.cfg.attribution.subset]:
        rewritten = rewrite(item.question, row.keywords, best, tokenizer=unlearned.tokenizer, fmt=study.fmt)
        attr = attribute(
            unlearned,
            (rewritten.prompt, format_answer(item.answer, study.fmt)),
            max_batch_tokens=study.budgets["forward"],
        )
        d = attr.to_dict()
        d["keyword_positions"] = list(rewritten.positions)
        d["template"] = best
        examples.append(d)
    return examples


def collapse(study: StudyView, tracking: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Which control-prompt tokens lost contribution, and the utility drop."""
    stats = token_drop_stats(control_items(tracking))
    stats["utility_drop"] = utility_drop(study.original_evaluation(), evaluation)
    return stats


def attacks(study: StudyView, unlearned: Model) -> dict[str, Any]:
    """Every configured attack on the unlearned model, judged against the study's controls."""
    settings = study.cfg.attacks
    controls = study.attack_controls()
    return {
        name: run_attack(
            name,
            unlearned,
            study.data.groups["forget"],
            controls=controls[name],
            config=attack_config(study, name),
            progress=study.progress,
            **attack_options(study),
        )
        for name in settings.names
    }


# ------------------------------------------------ knowledge presence (unpact.presence)


def presence_items(study: StudyView) -> list:
    """The forget group, with the cloze attached where the benchmark ships one (the embedded
    world's cloze splits, :func:`unpact.data.embedded_views.cloze_split`: the format probe's
    trained-but-not-unlearned format, matched by :func:`~unpact.data.embedded_views.cloze_key`)."""
    items = list(study.data.groups["forget"])
    bench = str(study.cfg.benchmark)
    if not bench.startswith("embedded:"):
        return items

    split = cloze_split(bench.split(":", 1)[1], study.cfg.forget_split)
    try:
        cloze = list(load_benchmark(bench, split, path=study.cfg.benchmark_path)) if split else []
    except DataError:
        return items
    return attach_cloze(items, cloze, key_fn=cloze_key)


def plain_recalls(study: StudyView, model: Model, items) -> list[float]:
    """ROUGE-L recall of ``model``'s greedy answers to the plain prompts (as the evaluation asks them)."""
    return rouge_recalls(
        model,
        items,
        max_new_tokens=study.cfg.max_new_tokens,
        fmt=study.fmt,
        max_batch_tokens=study.budgets["forward"],
        stop_at_newline=is_embedded(study.data.forget),
    )


def presence_controls(study: StudyView) -> dict[str, Any]:
    """The probes on the original and on both controls, and each probe's sensitivity/specificity, once per study."""
    cfg, settings, items = study.cfg, study.cfg.presence, presence_items(study)
    out: dict[str, Any] = {"original": probe_model(study.original(), items, settings, study.fmt)}
    if cfg.reference_model:
        negative = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
        out["negative"] = probe_model(negative, items, settings, study.fmt)
        out["negative_source"] = f"reference model {cfg.reference_model}"
        del negative
    elif settings.unknown_split:
        unknown = [
            it
            for it in load_benchmark(cfg.benchmark, settings.unknown_split, path=cfg.benchmark_path)
            if it.kind == "qa"
        ]
        n_negative = settings.negative_items or len(items)
        out["negative"] = probe_model(study.original(), spread_sample(unknown, n_negative), settings, study.fmt)
        out["negative_source"] = f"the original on split {settings.unknown_split!r} (facts it does not know)"
    if settings.positive_control:
        out.update(positive_control(study, items))
    if "positive" in out and "negative" in out:
        out["calibration"] = calibrate(out["positive"], out["negative"], out["positive_hidden_ids"])
    return out


def positive_control(study: StudyView, items: list) -> dict[str, Any]:
    """The probes on the positive control (the original fine-tuned to refuse the plain questions),
    its plain recalls and the items it hides; {} when no such model could be made."""
    settings = study.cfg.presence
    positive = positive_control_model(
        study.original(),
        items,
        list(study.data.retain),
        settings,
        seed=stage_seed(study.cfg.seed, "controls/positive"),
        fmt=study.fmt,
        training=training_options(study),
    )
    if positive is None:
        return {}
    recalls = plain_recalls(study, positive, items)
    return {
        "positive": probe_model(positive, items, settings, study.fmt),
        "positive_plain_recall": recalls,
        "positive_hidden_ids": [str(it.id) for it, r in zip(items, recalls) if r < study.cfg.emphasis.threshold],
    }


def presence(study: StudyView, unlearned: Model, ev: dict[str, Any]) -> dict[str, Any]:
    """The probes on an unlearned model, and per forget item: known / hidden / erased."""
    settings, items = study.cfg.presence, presence_items(study)
    probes = probe_model(unlearned, items, settings, study.fmt)
    recalls = ev["forget"]["rouge_l_recall_per_item"]
    correct = [r >= study.cfg.emphasis.threshold for r in recalls]
    use, left_out = usable_probes(study.presence_controls().get("calibration"), list(probes), settings.min_specificity)
    calls = presence_calls([str(it.id) for it in items], correct, probes, use)
    chance = chance_levels(items, answer_space(study.data.forget, study.data.retain, study.data.holdout))
    return {
        "probes": probes,
        **calls,
        "probes_left_out": left_out,
        "chance": chance,
        "chance_hidden": chance_hits(chance, calls["calls"]),
    }


def keyword_nulls(study: StudyView, ev: dict[str, Any], tracking: dict[str, Any]) -> dict[str, Any]:
    """Finding 1 against weight-noise nulls matched to this method's damage on the forget answers."""
    items = study.data.groups["forget"]
    before = [Attribution.from_dict(d) for d in study.original_attribution()["loo"].get("forget", [])]
    keys = [set(k) for k in keyword_positions(study)["forget"]]
    # matched on the forget answers' mean log-prob (continuous): the forget accuracy sits at 0
    # after most methods, where any large enough noise would "match" it
    target = ev["forget"].get("mean_logprob")
    if target is None or not before:
        return {"match": None, "test": None, "message": "no forget log-prob or attribution to match"}

    def measure(m) -> float:
        return float(np.mean(qa_probabilities(m, items, study.fmt, study.budgets["forward"])["true_lp"]))

    nulls = null_keyword_rows(
        study.original(),
        items,
        before,
        keys,
        measure,
        target,
        study.cfg.presence,
        seed=stage_seed(study.cfg.seed, "nulls"),
        fmt=study.fmt,
        max_batch_tokens=study.budgets["forward"],
    )
    if not nulls["draws"]:
        return {"match": nulls["match"], "test": None, "message": nulls["message"]}
    test = keyword_focus_vs_null(focus_rows(tracking, "forget"), nulls["draws"], seed=study.cfg.seed)
    return {"match": nulls["match"], "test": test, "message": None}


# ------------------------------------------- unlearning strength (unpact.trajectory)


def checkpoint_stage(method: str, step: int) -> str:
    """The stage name of ``method``'s trajectory checkpoint after ``step`` updates.

    Example:
        >>> checkpoint_stage("ga_gdr", 20)
        'ga_gdr/checkpoint/step_20'
    """
    return f"{method}/checkpoint/step_{int(step)}"


@contextmanager
def kept_random_state() -> Iterator[None]:
    """Run the block and put Python's, NumPy's and torch's random states back as they were (a
    nested stage reseeds; the training around it goes on as if nothing had run)."""
    state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


def controlled_reuse(study: StudyView) -> dict[str, Any] | None:
    """The first controlled recovery among the stages this session finished (a model's
    ``controlled`` stage or a trajectory checkpoint's block): its original's (and negative
    control's) runs stand for every later one's (:func:`controlled_block`); None before any."""
    for name, result in study.finished().items():
        if name.endswith(f"/{ControlledStage.name}"):
            return result
        if "/checkpoint/" in name and isinstance(result, dict) and result.get("controlled"):
            return result["controlled"]
    return None


def measure_checkpoint(
    study: StudyView,
    method: str,
    step: int,
    model: Model,
    monitor_accuracy: float | None,
    negative: Callable[[], Model | None],
) -> dict[str, Any]:
    """One trajectory checkpoint measured as the main job measures an unlearned model.

    Forget/retain/general evaluation (:func:`evaluation`), utility (TOFU's model utility and the
    drop against the original's evaluation, :func:`unpact.results.utility_drop`), the presence
    probes and calls with the run's usable probes (:func:`presence`, when probes are configured)
    and controlled recovery (keyword minus placebo, against the original and, with a
    ``reference_model``, the negative control; the original's KeyTokens as keywords). The
    original's (and negative control's) runs of the first controlled recovery measured in this
    session are reused at every later one (they do not depend on the checkpoint).
    """
    cfg = study.cfg
    with torch.no_grad():  # measurements only: the live training model's graph is left alone
        ev = evaluation(study, model, study.reference_ratios(), study.reference_mia())
        out: dict[str, Any] = {
            "method": method,
            "step": int(step),
            "monitor_forget_accuracy": monitor_accuracy,
            "evaluate": ev,
            "utility": utility_score(ev),
            "model_utility": model_utility_of(ev),
            "utility_drop": utility_drop(study.original_evaluation(), ev),
        }
        if cfg.presence.probes:
            out["presence"] = presence(study, model, ev)
        if cfg.trajectory.controlled:
            out["controlled"] = controlled_block(study, f"{method}@{step}", model, negative())
    return out


def controlled_block(study: StudyView, label: str, model: Model, negative: Model | None) -> dict[str, Any]:
    """Controlled recovery of ``model``: keyword minus placebo emphasis, against the original and
    (with one) the negative control; the original's KeyTokens as keywords, the settings of
    ``trajectory.templates`` / ``trajectory.activations``. The original's (and negative control's)
    runs of :func:`controlled_reuse` are reused when they fit."""
    cfg = study.cfg
    keywords = keyword_positions(study)
    controls, control_keywords = emphasis_controls(study, keywords)
    settings = cfg.trajectory.controlled_settings(
        threshold=cfg.emphasis.threshold,
        max_new_tokens=cfg.max_new_tokens,
        max_batch_tokens=study.budgets["forward"],
        seed=cfg.seed,
        placebo_seed=cfg.seed,
    )
    options = dict(
        controls=controls,
        keywords=keywords["forget"],
        control_keywords=control_keywords,
        settings=settings,
        method=label,
        fmt=study.fmt,
        negative=negative,
    )
    try:
        result = controlled_recovery(
            model, study.original(), study.data.groups["forget"], reuse=controlled_reuse(study), **options
        )
    except InputError:  # the kept runs do not fit (another item set): measure the original again
        result = controlled_recovery(model, study.original(), study.data.groups["forget"], **options)
    return result.to_dict()


def controlled(study: StudyView, name: str, model: Model) -> dict[str, Any]:
    """Controlled emphasis recovery of the unlearned (or audited) model itself: keyword vs placebo
    (:func:`controlled_block`), with the retain-only ``reference_model`` as the negative control."""
    cfg = study.cfg
    negative = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype) if cfg.reference_model else None
    with torch.no_grad():
        return controlled_block(study, name, model, negative)


def trajectory(study: StudyView, subject: Subject) -> dict[str, Any]:
    """Unlearn a fresh copy of the original with the subject's method on the gentle schedule
    (:func:`unpact.trajectory.run_trajectory`), measuring each checkpoint inside the callback.

    Every checkpoint step is a nested stage (:func:`checkpoint_stage`, run by ``subject.nested``,
    written atomically): a rerun after an interruption trains again (seeded, so the same weights)
    and reads the finished checkpoints instead of measuring them. No model is saved. Returns the
    :class:`~unpact.trajectory.TrajectoryResult` dict and the checkpoints (step, names, stage).
    """
    cfg, method = study.cfg, subject.name
    fresh = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    negatives: list = []

    def negative():
        if not cfg.reference_model:
            return None
        if not negatives:
            negatives.append(load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype))
        return negatives[0]

    steps: dict[int, list[str]] = {}

    def on_checkpoint(name: str, step: int, model, accuracy: float | None) -> None:
        steps.setdefault(int(step), []).append(name)
        if len(steps[int(step)]) > 1:
            return  # one measurement per step (a step can be a mark, a target crossing and the end)
        with kept_random_state():
            subject.nested(
                checkpoint_stage(method, step),
                lambda: measure_checkpoint(study, method, step, model, accuracy, negative),
            )

    res = run_trajectory(
        fresh,
        method,
        list(study.data.forget),
        list(study.data.retain),
        on_checkpoint=on_checkpoint,
        settings=cfg.trajectory.schedule(threshold=cfg.emphasis.threshold, max_new_tokens=cfg.max_new_tokens),
        config=method_overrides(study, method),
        seed=stage_seed(cfg.seed, f"{method}/trajectory"),
        fmt=study.fmt,
        progress=study.progress,
    )
    return {
        "result": res.to_dict(),
        "checkpoints": [{"step": s, "names": n, "stage": checkpoint_stage(method, s)} for s, n in steps.items()],
    }


def checkpoint_results(study: StudyView, subject: Subject, traj: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements of the subject's trajectory checkpoints (read from their nested stage
    files), in step order, each with its checkpoint names."""

    def missing(name: str):
        raise DataError(
            f"the trajectory's checkpoint stage {name!r} is missing from {str(Path(study.cfg.out))!r}; "
            f"delete stages/{subject.name}/trajectory.json to measure the trajectory again"
        )

    out = []
    for c in traj["checkpoints"]:
        measured = subject.nested(c["stage"], lambda name=c["stage"]: missing(name))
        out.append({**measured, "names": list(c["names"])})
    return out


# ------------------------------------------------------------------ the stages as objects


@dataclass
class Subject:
    """What a stage is given besides the study: the measured model and what it needs of the run.

    ``name``: the method (or audited checkpoint) measured; ``model()``: its model, loaded on
    first use; ``done``: the results of the stages before this one, by results key (``unlearn``
    first for a method); ``nested(name, compute)``: the result of a stage nested in this one
    (read from ``stages/<name>.json``, or computed, seeded from the run's seed and ``name``, and
    written), for a stage that measures along the way (the trajectory's checkpoints).
    """

    name: str
    model: Callable[[], Model]
    done: Mapping[str, Any] = field(default_factory=dict)
    nested: Callable[[str, Callable[[], Any]], Any] = lambda name, compute: compute()


class Stage:
    """A stage of the main job, run on each measured model after unlearning.

    Subclass it with a ``name`` (the file ``stages/<subject>/<name>.json``), a ``key`` (where the
    result goes: ``methods.<subject>.<key>`` in results.json), ``applies(cfg)`` when the run's
    settings do not always ask for it, ``unlearning_only = True`` when it needs the unlearning run
    itself (audited checkpoints skip it) and ``run(study, subject)`` returning a JSON-able dict;
    register it with :func:`register_stage`. ``complete`` adds to the result what lives outside
    its file (the default adds nothing).
    """

    name: str = ""
    key: str = ""
    unlearning_only: bool = False

    def applies(self, cfg: RunConfig) -> bool:
        """Whether a run with settings ``cfg`` runs this stage."""
        return True

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        """The stage's result on ``subject`` (what its file holds)."""
        raise NotImplementedError

    def complete(self, study: StudyView, subject: Subject, result: dict[str, Any]) -> dict[str, Any]:
        """The result as it goes under ``key`` in the results: the file's ``result``, completed."""
        return result

    def __repr__(self) -> str:
        return f"<stage {self.name} -> {self.key}>"


#: The stages after unlearning, in the order they run (their registration order).
STAGES: Registry[Stage] = Registry("stage")


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: register an instance of the :class:`Stage` subclass ``cls`` under its ``name``."""
    STAGES.add(cls.name, cls())
    return cls


def subject_stages(cfg: RunConfig, is_method: bool) -> list[Stage]:
    """The registered stages a run with settings ``cfg`` runs on a model, in order: those that
    apply, without the ``unlearning_only`` ones for an audited checkpoint (``is_method`` False).

    Example:
        >>> from unpact.config import RunConfig
        >>> [s.name for s in subject_stages(RunConfig(), is_method=False)][:4]
        ['lineage', 'evaluate', 'attribute', 'track']
    """
    return [stage for _, stage in STAGES.items() if stage.applies(cfg) and (is_method or not stage.unlearning_only)]


@register_stage
class LineageStage(Stage):
    """Where the model comes from and how far its weights moved (:func:`lineage`)."""

    name, key = "lineage", "lineage"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return lineage(study, subject.name)


@register_stage
class EvaluateStage(Stage):
    """Every metric on each group (:func:`evaluation`)."""

    name, key = "evaluate", "evaluate"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return evaluation(study, subject.model(), study.reference_ratios(), study.reference_mia())


@register_stage
class AttributeStage(Stage):
    """Token (and head) attributions on the model (:func:`attribution`)."""

    name, key = "attribute", "attribution"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return attribution(study, subject.model())


@register_stage
class TrackStage(Stage):
    """The original's attributions against the model's (:func:`track`)."""

    name, key = "track", "tracking"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return track(study, subject.done["attribution"])


@register_stage
class RecoveryStage(Stage):
    """Emphasis recovery on the forget items (:func:`recovery`)."""

    name, key = "recovery", "recovery"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return recovery(study, subject.model(), subject.name)


@register_stage
class ControlledStage(Stage):
    """Keyword vs placebo emphasis on the model (:func:`controlled`; ``trajectory.controlled``)."""

    name, key = "controlled", "controlled"

    def applies(self, cfg: RunConfig) -> bool:
        return cfg.trajectory.controlled

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return controlled(study, subject.name, subject.model())


@register_stage
class CollapseStage(Stage):
    """Which control-prompt tokens lost contribution, and the utility drop (:func:`collapse`)."""

    name, key = "collapse", "collapse"

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return collapse(study, subject.done["tracking"], subject.done["evaluate"])


@register_stage
class AttacksStage(Stage):
    """Every configured recovery attack (:func:`attacks`; ``attacks.names``)."""

    name, key = "attacks", "attacks"

    def applies(self, cfg: RunConfig) -> bool:
        return bool(cfg.attacks.names)

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return attacks(study, subject.model())


@register_stage
class PresenceStage(Stage):
    """The presence probes and calls (:func:`presence`; ``presence.probes``)."""

    name, key = "presence", "presence"

    def applies(self, cfg: RunConfig) -> bool:
        return bool(cfg.presence.probes)

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return presence(study, subject.model(), subject.done["evaluate"])


@register_stage
class KeywordNullsStage(Stage):
    """Finding 1 against damage-matched weight-noise nulls (:func:`keyword_nulls`; ``presence.null_draws``)."""

    name, key = "keyword_nulls", "keyword_nulls"

    def applies(self, cfg: RunConfig) -> bool:
        return cfg.presence.null_draws > 0

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return keyword_nulls(study, subject.done["evaluate"], subject.done["tracking"])


@register_stage
class TrajectoryStage(Stage):
    """The method again on a gentle schedule, each checkpoint measured (:func:`trajectory`;
    ``trajectory.enabled``; methods only). Its result in the results carries the checkpoints'
    measurements (``measured``), read from their nested stage files."""

    name, key = "trajectory", "trajectory"
    unlearning_only = True

    def applies(self, cfg: RunConfig) -> bool:
        return cfg.trajectory.enabled

    def run(self, study: StudyView, subject: Subject) -> dict[str, Any]:
        return trajectory(study, subject)

    def complete(self, study: StudyView, subject: Subject, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "measured": checkpoint_results(study, subject, result)}
