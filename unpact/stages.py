"""The main job's stages: each a function ``fn(study, inputs) -> dict`` that the study
(:class:`unpact.pipeline.Study`, seen here through the :class:`StudyView` protocol, so this
module never imports the pipeline) runs under a name, seeded from the run's seed and that
name, and writes to the run directory.

A stage reads the run's settings (``study.cfg``, a :class:`~unpact.config.RunConfig`), the
study's shared inputs (``study.data``, ``study.fmt``, ``study.original()``, ``study.budgets``,
``study.progress``) and the results of earlier stages it is given; it returns a JSON-able
dict. The stages after unlearning are listed in :data:`METHOD_STAGES`: ``unpact run`` runs
them on each method's unlearned model, ``unpact audit`` on each given checkpoint (the same
code path); adding a stage is one function here and one line there.

Example:
    >>> stage_budgets(16384)
    {'forward': 16384, 'unlearn': 4096, 'heads': 4096, 'integrated_gradients': 1024}
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch

from unpact.attribution.gradients import IG_BATCH_SHARE
from unpact.data import Benchmark, load_benchmark, spread_sample
from unpact.errors import DataError
from unpact.protocols import Model
import numpy as np
from unpact import checkpoints
from unpact.analyses import keyword_focus_vs_null, token_drop_stats
from unpact.analyses.assemble import control_items, focus_rows
from unpact.attacks import role_runs, run_attack
from unpact.attribution import Attribution, attribute, compare, key_tokens
from unpact.data import format_answer
from unpact.data.embedded_views import cloze_key, cloze_split
from unpact.emphasis import RecoveryConfig, recover, rewrite
from unpact.emphasis.controlled import controlled_recovery
from unpact.errors import InputError
from unpact.metrics import answer_accuracy, benchmark_style, evaluate_groups, forget_quality, is_embedded, mia_aucs, qa_probabilities, rouge_recalls, truth_ratios
from unpact.models import load_model, save_model
from unpact.presence import calibrate, null_keyword_rows, positive_control_model, presence_calls, probe_model, usable_probes
from unpact.probes import attach_cloze
from unpact.results import model_utility_of, utility_drop, utility_score
from unpact.trajectory import run_trajectory
from unpact.unlearning import unlearn

if TYPE_CHECKING:  # pragma: no cover
    from unpact.config import RunConfig
    from unpact.progress import ProgressFactory
    from unpact.rundir import RunDir

GROUPS = ("forget", "retain", "general")

#: Share of ``max_batch_tokens`` that a pass keeping activations for backward may use: such a
#: pass holds every layer's activations (and, for integrated gradients, one row per
#: interpolation step), so it gets a quarter (unlearning, heads) or a sixteenth (integrated
#: gradients) of the forward budget. At the default budget (16384) these are the methods' own
#: defaults (4096 and 1024), so the default run computes what it computed before the budget.
BACKWARD_SHARE = {"unlearn": 4, "heads": 4, "integrated_gradients": IG_BATCH_SHARE}


def stage_budgets(max_batch_tokens: int) -> dict[str, int]:
    """Token budget of each kind of pass for a forward budget of ``max_batch_tokens``."""
    return {"forward": max_batch_tokens, **{k: max(1, max_batch_tokens // v) for k, v in BACKWARD_SHARE.items()}}


def stage_seed(seed: int, name: str) -> int:
    """The seed of stage ``name`` in a run seeded ``seed`` (a stable hash, so reruns agree).

    Example:
        >>> stage_seed(0, "ga_gdr/unlearn") == stage_seed(0, "ga_gdr/unlearn") != stage_seed(1, "ga_gdr/unlearn")
        True
    """
    h = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
    return int(h[:8], 16)


def seed_everything(seed: int) -> None:

    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@dataclass
class StudyData:
    forget: Benchmark
    retain: Benchmark
    general: Benchmark | None
    holdout: Benchmark | None
    groups: dict[str, list]  # the evaluated/attributed subsets
    #: per audited checkpoint, what the input checks measured (unpact.checkpoints.check_audit_inputs):
    #: kept so the checkpoint stage does not read the weights a second time
    lineage: dict[str, dict[str, Any]] = field(default_factory=dict)


class StudyView(Protocol):
    """What a stage sees of the study (:class:`unpact.pipeline.Study` implements it)."""
    cfg: "RunConfig"
    rd: "RunDir"
    progress: "ProgressFactory"
    budgets: dict[str, int]
    controlled_reuse: dict[str, Any] | None

    @property
    def data(self) -> StudyData: ...

    @property
    def fmt(self) -> Any: ...

    def original(self) -> Model: ...

    def model_dir(self, name: str) -> str: ...

    def stage(self, name: str, compute: Callable[[], Any], require: Callable[[], bool] | None = None) -> Any: ...

    def reference_ratios(self) -> list[float] | None: ...

    def reference_mia(self) -> dict[str, Any] | None: ...

    def original_evaluation(self) -> dict[str, Any]: ...

    def original_attribution(self) -> dict[str, Any]: ...

    def attack_controls(self) -> dict[str, Any]: ...

    def presence_controls(self) -> dict[str, Any]: ...


def load_study_data(cfg: "RunConfig") -> StudyData:
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


def attribution(study: "StudyView", model: Model) -> dict[str, Any]:
    """loo (+ KeyTokens) on every group item; integrated gradients and heads on a subset."""
    a, b = study.cfg.attribution, study.budgets
    out: dict[str, Any] = {"loo": {}, "integrated_gradients": {}, "heads": {}}
    for g in GROUPS:
        items = study.data.groups[g]
        if not items:
            continue
        res = attribute(model, items, method="loo", group=g, fmt=study.fmt, max_batch_tokens=b["forward"],
                        progress=study.progress)
        out["loo"][g] = [r.to_dict() for r in res]
        sub = items[: a.subset]
        if "integrated_gradients" in a.methods and sub:
            res = attribute(model, sub, method="integrated_gradients", group=g, steps=a.ig_steps, fmt=study.fmt,
                            max_passes=max(a.ig_max_passes, a.ig_steps), max_batch_tokens=b["integrated_gradients"],
                            progress=study.progress)
            out["integrated_gradients"][g] = [r.to_dict() for r in res]
        if "heads" in a.methods and sub:
            res = attribute(model, sub, method="heads", group=g, fmt=study.fmt, max_batch_tokens=b["heads"],
                            progress=study.progress)
            out["heads"][g] = [r.to_dict() for r in res]
    return out


def forget_with_perturbed(study: "StudyView") -> list:
    """The whole forget split's items with perturbed answers (TOFU's forget quality runs on all of them)."""
    return [it for it in study.data.forget if getattr(it, "perturbed_answers", None)]


def reference_ratios(study: "StudyView") -> dict[str, Any]:
    """Truth ratios of the retain-only reference model on the whole forget split."""
    cfg = study.cfg
    ref = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    items = forget_with_perturbed(study)
    if not items:
        return {"truth_ratios": None}
    return {"truth_ratios": [float(x) for x in truth_ratios(ref, items, study.fmt, study.budgets["forward"])]}


def mia_holdout(study: "StudyView") -> list | None:
    """The membership-inference attacks' non-members: an evenly spaced ``max_items`` sample of the
    holdout split's QA items (as many as the evaluated forget items); None without a holdout split."""
    data = study.data
    if data.holdout is None:
        return None
    items = [it for it in data.holdout if it.kind == "qa"]
    return spread_sample(items, study.cfg.max_items) or None


def reference_mia(study: "StudyView") -> dict[str, Any]:
    """The retain-only reference model's MIA AUCs on the evaluated forget items against
    :func:`mia_holdout` (privleak's reference)."""
    cfg = study.cfg
    holdout = mia_holdout(study)
    if not holdout or not study.data.groups["forget"]:
        return {}
    ref = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    return mia_aucs(ref, study.data.groups["forget"], holdout, study.fmt, study.budgets["forward"])


def evaluation(study: "StudyView", model: Model, reference_ratios: list[float] | None,
               reference_mia: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric on each group, all groups' answers generated in one batched pass; on the forget
    group also the MIA AUCs against :func:`mia_holdout` and privleak against ``reference_mia``."""
    data = study.data
    groups = {g: data.groups[g] for g in GROUPS if data.groups[g]}
    holdout = mia_holdout(study)
    out = evaluate_groups(
        model, groups, {"forget": reference_mia} if reference_mia else None,
        max_new_tokens=study.cfg.max_new_tokens, forget={g: g == "forget" for g in groups},
        roles={"forget": "forget", "retain": "retain", "general": "other"},
        style=benchmark_style(data.forget), stop_at_newline=is_embedded(data.forget),
        progress=study.progress, fmt=study.fmt, max_batch_tokens=study.budgets["forward"],
        holdouts={"forget": holdout} if holdout else None,
    )
    if reference_ratios and "forget" in out:
        # TOFU's KS test runs on the whole forget split, not on the evaluated subset
        ratios = truth_ratios(model, forget_with_perturbed(study))
        out["forget"]["forget_quality"] = forget_quality(ratios, reference_ratios)
        out["forget"]["forget_quality_n"] = len(ratios)
    for r in out.values():
        per = r.get("rouge_l_recall_per_item")
        if per:
            r["accuracy"] = answer_accuracy(per, study.cfg.emphasis.threshold)
    return out


def keyword_positions(study: "StudyView") -> dict[str, list[list[int]]]:
    """Per group, each item's KeyTokens on the original model under the run's KeyTokens rule."""
    kt = dataclasses.asdict(study.cfg.attribution.keytokens)
    loo = study.original_attribution()["loo"]
    return {g: [key_tokens(Attribution.from_dict(d), **kt) for d in loo.get(g, [])] for g in GROUPS}


def attack_kwargs(study: "StudyView") -> dict[str, Any]:

    rc = RecoveryConfig(threshold=study.cfg.emphasis.threshold, max_new_tokens=study.cfg.max_new_tokens,
                        max_batch_tokens=study.budgets["forward"])
    return {"pool": {"retain": list(study.data.retain)}, "recovery": rc, "seed": study.cfg.seed, "fmt": study.fmt}


def attack_controls(study: "StudyView") -> dict[str, Any]:
    """Every attack on the original and the negative control (retain-only model), once per study."""
    cfg, a = study.cfg, study.cfg.attacks
    models = {"original": study.original()}
    if cfg.reference_model:
        models["negative"] = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype)
    kw = attack_kwargs(study)
    with study.progress(total=len(a.names) * len(models), desc="attack controls") as bar:
        out: dict[str, Any] = {}
        for name in a.names:
            out[name] = {}
            for role, m in models.items():
                out[name][role] = role_runs(name, m, study.data.groups["forget"], config=a.options.get(name), **kw)
                bar.update()
    return out


# ------------------------------------------------------------------ per-method stages


def unlearning(study: "StudyView", method: str) -> dict[str, Any]:
    """Unlearn a fresh copy of the original with ``method``; the model is saved into the run directory."""
    cfg = study.cfg
    seed = stage_seed(cfg.seed, f"{method}/unlearn")
    # a fresh copy of the original, edited in place: the shared original stays untouched
    fresh = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    method_cfg = {"max_batch_tokens": study.budgets["unlearn"], "gradient_checkpointing": cfg.gradient_checkpointing,
                  **(cfg.method_config.get(method) or {})}
    res = unlearn(fresh, method, list(study.data.forget), list(study.data.retain), method_cfg, inplace=True,
                  seed=seed, progress=study.progress, fmt=study.fmt)
    study.rd.save_model_atomic(method, lambda d: save_model(res.model, d))
    return {"method": method, "config": {k: v for k, v in vars(res.config).items() if not callable(v)},
            "losses": res.losses, "stopped_early": res.stopped_early, "message": res.message}


def lineage(study: "StudyView", name: str) -> dict[str, Any]:
    """Where the measured model comes from and how far it moved: its relative weight distance
    from the original and whether it is identical (:func:`unpact.checkpoints.lineage`; for an
    audited checkpoint the input checks' measurement, not a second read of the weights)."""
    spec = study.cfg.checkpoints.get(name)
    if spec is None:  # a method: unpact unlearned it into the run directory
        out = checkpoints.lineage(study.cfg.model, study.model_dir(name))
        return {**out, "spec": None, "source": f"unlearned by unpact ({name})"}
    out = study.data.lineage.get(name) or checkpoints.lineage(study.cfg.model, spec)
    return {**out, "spec": spec, "source": "given checkpoint (unpact audit)"}


def track(study: "StudyView", after: dict[str, Any]) -> dict[str, Any]:
    """Contribution tracking: the original's attributions against the unlearned model's (``after``)."""
    before = study.original_attribution()
    kt = dataclasses.asdict(study.cfg.attribution.keytokens)

    def load(d, kind):
        return [Attribution.from_dict(x) for g in GROUPS for x in d[kind].get(g, [])]

    out: dict[str, Any] = {"loo": compare(load(before, "loo"), load(after, "loo"), **kt).to_dict()}
    if before["heads"]:
        out["heads"] = compare(load(before, "heads"), load(after, "heads"), **kt).to_dict()["summary"]
        forget_only = [a for a in load(before, "heads") if a.group == "forget"]
        after_f = [a for a in load(after, "heads") if a.group == "forget"]
        if forget_only:
            s = compare(forget_only, after_f, **kt).summary
            out["head_delta"] = s.get("per_head_head_total_delta")
            out["layer_delta"] = [
                x + y for x, y in zip(s.get("per_layer_attn_total_delta", []), s.get("per_layer_mlp_total_delta", []))
            ]
    return out


def emphasis_controls(study: "StudyView", kw: dict[str, list[list[int]]]) -> tuple[dict[str, list], dict[str, list]]:
    """The emphasis controls: at most ``emphasis.max_control_items`` retain and general items
    (evenly spaced), and their KeyTokens from ``kw`` (:func:`keyword_positions`)."""
    data = study.data
    controls: dict[str, list] = {}
    control_kw: dict[str, list] = {}
    for g in ("retain", "general"):
        idx = spread_sample(list(range(len(data.groups[g]))), study.cfg.emphasis.max_control_items)
        if idx:
            controls[g] = [data.groups[g][i] for i in idx]
            control_kw[g] = [kw[g][i] for i in idx]
    return controls, control_kw


def recovery(study: "StudyView", unlearned: Model, method: str) -> dict[str, Any]:
    """Emphasis recovery on the forget items (retain, general and holdout controls), and the best
    rewrite's attribution on the unlearned model for the report's heatmaps: the
    :class:`~unpact.emphasis.RecoveryTable`'s ``to_dict``."""
    e, data = study.cfg.emphasis, study.data
    kw = keyword_positions(study)
    controls, control_kw = emphasis_controls(study, kw)
    if data.holdout is not None:
        # authors the model never saw: emphasis must not "recover" what was never known
        controls["holdout"] = spread_sample([it for it in data.holdout if it.kind == "qa"], e.max_control_items)
    table = recover(
        unlearned, data.groups["forget"], original=study.original(), controls=controls,
        keywords=kw["forget"], control_keywords=control_kw,
        config=study.cfg.recovery_config(study.budgets["forward"]), method=method, fmt=study.fmt,
        progress=study.progress,
    )
    examples = []
    best = table.prompt_best_setting
    if best:
        for it, item in list(zip(table.items, data.groups["forget"]))[: study.cfg.attribution.subset]:
            rw = rewrite(item.question, it.keywords, best, tokenizer=unlearned.tokenizer, fmt=study.fmt)
            a = attribute(unlearned, (rw.prompt, format_answer(item.answer, study.fmt)),
                          max_batch_tokens=study.budgets["forward"])
            d = a.to_dict()
            d["keyword_positions"] = list(rw.positions)
            d["template"] = best
            examples.append(d)
    table.rewrite_attributions = examples
    return table.to_dict()


def collapse(study: "StudyView", tracking: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Which control-prompt tokens lost contribution, and the utility drop."""
    stats = token_drop_stats(control_items(tracking))
    stats["utility_drop"] = utility_drop(study.original_evaluation(), evaluation)
    return stats


def attacks(study: "StudyView", unlearned: Model) -> dict[str, Any]:
    """Every configured attack on the unlearned model, judged against the study's controls."""
    a = study.cfg.attacks
    controls = study.attack_controls()
    return {name: run_attack(name, unlearned, study.data.groups["forget"], controls=controls[name],
                             config=a.options.get(name), progress=study.progress, **attack_kwargs(study))
            for name in a.names}


# ------------------------------------------------ knowledge presence (unpact.presence)


def presence_items(study: "StudyView") -> list:
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


def plain_recalls(study: "StudyView", model: Model, items) -> list[float]:
    """ROUGE-L recall of ``model``'s greedy answers to the plain prompts (as the evaluation asks them)."""
    return rouge_recalls(model, items, max_new_tokens=study.cfg.max_new_tokens, fmt=study.fmt,
                         max_batch_tokens=study.budgets["forward"], stop_at_newline=is_embedded(study.data.forget))


def presence_controls(study: "StudyView") -> dict[str, Any]:
    """The probes on the original and on both controls, and each probe's sensitivity/specificity, once per study."""
    s, items = study.cfg.presence, presence_items(study)
    thr = study.cfg.emphasis.threshold
    out: dict[str, Any] = {"original": probe_model(study.original(), items, s, study.fmt)}
    if study.cfg.reference_model:
        neg = load_model(study.cfg.reference_model, device=study.cfg.device, dtype=study.cfg.dtype)
        out["negative"] = probe_model(neg, items, s, study.fmt)
        out["negative_source"] = f"reference model {study.cfg.reference_model}"
        del neg
    elif s.unknown_split:
        unknown = [it for it in load_benchmark(study.cfg.benchmark, s.unknown_split, path=study.cfg.benchmark_path)
                   if it.kind == "qa"]
        out["negative"] = probe_model(study.original(), spread_sample(unknown, len(items)), s, study.fmt)
        out["negative_source"] = f"the original on split {s.unknown_split!r} (facts it does not know)"
    if s.positive_control:
        pos = positive_control_model(study.original(), items, list(study.data.retain), s,
                                     seed=stage_seed(study.cfg.seed, "controls/positive"))
        if pos is not None:
            recalls = plain_recalls(study, pos, items)
            out["positive"] = probe_model(pos, items, s, study.fmt)
            out["positive_plain_recall"] = recalls
            out["positive_hidden_ids"] = [str(it.id) for it, r in zip(items, recalls) if r < thr]
            del pos
    if "positive" in out and "negative" in out:
        out["calibration"] = calibrate(out["positive"], out["negative"], out["positive_hidden_ids"])
    return out


def presence(study: "StudyView", unlearned: Model, ev: dict[str, Any]) -> dict[str, Any]:
    """The probes on an unlearned model, and per forget item: known / hidden / erased."""
    s, items = study.cfg.presence, presence_items(study)
    probes = probe_model(unlearned, items, s, study.fmt)
    per = ev["forget"]["rouge_l_recall_per_item"]
    correct = [r >= study.cfg.emphasis.threshold for r in per]
    use, left_out = usable_probes(study.presence_controls().get("calibration"), list(probes), s.min_specificity)
    return {"probes": probes, **presence_calls([str(it.id) for it in items], correct, probes, use),
            "probes_left_out": left_out}


def keyword_nulls(study: "StudyView", ev: dict[str, Any], tracking: dict[str, Any]) -> dict[str, Any]:
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

    nulls = null_keyword_rows(study.original(), items, before, keys, measure, target,
                              study.cfg.presence, seed=stage_seed(study.cfg.seed, "nulls"), fmt=study.fmt,
                              max_batch_tokens=study.budgets["forward"])
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


def _rng_state() -> tuple:

    return random.getstate(), np.random.get_state(), torch.get_rng_state(), \
        (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state: tuple) -> None:

    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


def measure_checkpoint(study: "StudyView", method: str, step: int, model: Model, monitor_accuracy: float | None,
                       negative: Callable[[], Model | None]) -> dict[str, Any]:
    """One trajectory checkpoint measured as the main job measures an unlearned model.

    Forget/retain/general evaluation (:func:`evaluation`), utility (TOFU's model utility and the
    drop against the original's evaluation, :func:`unpact.results.utility_drop`), the presence
    probes and calls with the run's usable probes (:func:`presence`, when probes are configured)
    and controlled recovery (keyword minus placebo, against the original and, with a
    ``reference_model``, the negative control; the original's KeyTokens as keywords). The
    original's (and negative control's) runs of the first checkpoint measured in this session
    are reused at every later one (they do not depend on the checkpoint).
    """
    cfg, t = study.cfg, study.cfg.trajectory
    with torch.no_grad():  # measurements only: the live training model's graph is left alone
        ev = evaluation(study, model, study.reference_ratios(), study.reference_mia())
        out: dict[str, Any] = {"method": method, "step": int(step), "monitor_forget_accuracy": monitor_accuracy,
                               "evaluate": ev, "utility": utility_score(ev), "model_utility": model_utility_of(ev),
                               "utility_drop": utility_drop(study.original_evaluation(), ev)}
        if cfg.presence.probes:
            out["presence"] = presence(study, model, ev)
        if t.controlled:
            out["controlled"] = controlled_block(study, f"{method}@{step}", model, negative())
    return out


def controlled_block(study: "StudyView", label: str, model: Model, negative: Model | None) -> dict[str, Any]:
    """Controlled recovery of ``model``: keyword minus placebo emphasis, against the original and
    (with one) the negative control; the original's KeyTokens as keywords, the settings of
    ``trajectory.templates`` / ``trajectory.activations``. The original's (and negative control's)
    runs kept in ``study.controlled_reuse`` are reused when they fit."""
    cfg = study.cfg
    kw = keyword_positions(study)
    controls, control_kw = emphasis_controls(study, kw)
    settings = cfg.trajectory.controlled_settings(
        threshold=cfg.emphasis.threshold, max_new_tokens=cfg.max_new_tokens,
        max_batch_tokens=study.budgets["forward"], seed=cfg.seed, placebo_seed=cfg.seed)
    kwargs = dict(controls=controls, keywords=kw["forget"], control_keywords=control_kw, settings=settings,
                  method=label, fmt=study.fmt, negative=negative)
    try:
        cr = controlled_recovery(model, study.original(), study.data.groups["forget"],
                                 reuse=study.controlled_reuse, **kwargs)
    except InputError:  # the kept runs do not fit (another item set): measure the original again
        cr = controlled_recovery(model, study.original(), study.data.groups["forget"], **kwargs)
    return cr.to_dict()


def controlled(study: "StudyView", name: str, model: Model) -> dict[str, Any]:
    """Controlled emphasis recovery of the unlearned (or audited) model itself: keyword vs placebo
    (:func:`controlled_block`), with the retain-only ``reference_model`` as the negative control."""
    cfg = study.cfg
    neg = load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype) if cfg.reference_model else None
    with torch.no_grad():
        out = controlled_block(study, name, model, neg)
    if study.controlled_reuse is None:
        study.controlled_reuse = out
    return out


def trajectory(study: "StudyView", method: str) -> dict[str, Any]:
    """Unlearn a fresh copy of the original with ``method`` on the gentle schedule
    (:func:`unpact.trajectory.run_trajectory`), measuring each checkpoint inside the callback.

    Every checkpoint step is its own stage (:func:`checkpoint_stage`, written atomically): a
    rerun after an interruption trains again (seeded, so the same weights) and reads the finished
    checkpoints instead of measuring them. No model is saved. Returns the
    :class:`~unpact.trajectory.TrajectoryResult` dict and the checkpoints (step, names, stage).
    """
    cfg, data = study.cfg, study.data
    fresh = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    overrides = {"max_batch_tokens": study.budgets["unlearn"], "gradient_checkpointing": cfg.gradient_checkpointing,
                 **(cfg.method_config.get(method) or {})}
    neg: list = []

    def negative():
        if not cfg.reference_model:
            return None
        if not neg:
            neg.append(load_model(cfg.reference_model, device=cfg.device, dtype=cfg.dtype))
        return neg[0]

    steps: dict[int, list[str]] = {}

    def on_checkpoint(name: str, step: int, model, acc: float | None) -> None:
        steps.setdefault(int(step), []).append(name)
        if len(steps[int(step)]) > 1:
            return  # one measurement per step (a step can be a mark, a target crossing and the end)
        state = _rng_state()  # the stage reseeds; training goes on as if nothing had run
        try:
            r = study.stage(checkpoint_stage(method, step),
                            lambda: measure_checkpoint(study, method, step, model, acc, negative))
        finally:
            _set_rng_state(state)
        if study.controlled_reuse is None and r.get("controlled"):
            study.controlled_reuse = r["controlled"]

    res = run_trajectory(fresh, method, list(data.forget), list(data.retain), on_checkpoint=on_checkpoint,
                         settings=cfg.trajectory.schedule(threshold=cfg.emphasis.threshold,
                                                          max_new_tokens=cfg.max_new_tokens),
                         config=overrides, seed=stage_seed(cfg.seed, f"{method}/trajectory"), fmt=study.fmt,
                         progress=study.progress)
    return {"result": res.to_dict(),
            "checkpoints": [{"step": s, "names": n, "stage": checkpoint_stage(method, s)} for s, n in steps.items()]}


def checkpoint_results(study: "StudyView", method: str, traj: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements of ``method``'s trajectory checkpoints (read from their stage files), in step
    order, each with its checkpoint names."""
    def missing(name: str):
        raise DataError(f"the trajectory's checkpoint stage {name!r} is missing from {str(study.rd.root)!r}; "
                        f"delete stages/{method}/trajectory.json to measure the trajectory again")

    out = []
    for c in traj["checkpoints"]:
        r = study.stage(c["stage"], lambda name=c["stage"]: missing(name))
        out.append({**r, "names": list(c["names"])})
    return out


#: A per-method stage: (stage name, key in the method's results, enabled(cfg), fn(study, method, model, done)),
#: where ``model()`` loads the unlearned model once and ``done`` holds the method's earlier results.
MethodStage = tuple[str, str, Callable[["RunConfig"], bool], Callable[["StudyView", str, Callable, dict], dict]]

METHOD_STAGES: tuple[MethodStage, ...] = (
    ("lineage", "lineage", lambda cfg: True, lambda s, m, model, done: lineage(s, m)),
    ("evaluate", "evaluate", lambda cfg: True,
     lambda s, m, model, done: evaluation(s, model(), s.reference_ratios(), s.reference_mia())),
    ("attribute", "attribution", lambda cfg: True, lambda s, m, model, done: attribution(s, model())),
    ("track", "tracking", lambda cfg: True, lambda s, m, model, done: track(s, done["attribution"])),
    ("recovery", "recovery", lambda cfg: True, lambda s, m, model, done: recovery(s, model(), m)),
    ("controlled", "controlled", lambda cfg: cfg.trajectory.controlled,
     lambda s, m, model, done: controlled(s, m, model())),
    ("collapse", "collapse", lambda cfg: True, lambda s, m, model, done: collapse(s, done["tracking"], done["evaluate"])),
    ("attacks", "attacks", lambda cfg: bool(cfg.attacks.names), lambda s, m, model, done: attacks(s, model())),
    ("presence", "presence", lambda cfg: bool(cfg.presence.probes),
     lambda s, m, model, done: presence(s, model(), done["evaluate"])),
    ("keyword_nulls", "keyword_nulls", lambda cfg: cfg.presence.null_draws > 0,
     lambda s, m, model, done: keyword_nulls(s, done["evaluate"], done["tracking"])),
    ("trajectory", "trajectory", lambda cfg: cfg.trajectory.enabled, lambda s, m, model, done: trajectory(s, m)),
)

#: Stages of :data:`METHOD_STAGES` that need the unlearning run itself (the strength trajectory
#: unlearns again on a gentle schedule): a method's, never an audited checkpoint's.
UNLEARNING_ONLY = frozenset({"trajectory"})
