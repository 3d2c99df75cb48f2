"""Emphasis recovery: does "forgotten" knowledge come back when the keywords are emphasised?

For each forget item the unlearned model answers greedily (no weight change)
once plainly and once under each emphasis: every prompt rewrite template and
every activation setting (factor x layer set x kind). An item is **recovered**
by an emphasis when its ROUGE-L recall reaches ``threshold`` (default 0.9) under
the emphasis where plainly it did not. The recovery rate is recovered /
forgotten (items below the threshold plainly). The mean change in the answer's
log-prob (teacher forcing) comes with it.

The same emphasis is applied to control items (retain, general, or holdout
items the model never knew). If a control's accuracy (share of items at or
above the threshold) falls by more than ``collapse_margin`` the setting is
flagged ``collapse``: what it "recovers" is not counted as recovery, and the
best setting of each kind is chosen among settings whose controls held.

Keywords are the KeyTokens of the *original* model (``unpact.attribution``,
leave-one-out by default), or what the caller gives: per item a list of keyword
strings or of token positions (BOS at 0) in the original prompt.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> table = recover(unlearned, forget, original=original,
    ...                 controls={"retain": retain, "general": general})      # doctest: +SKIP
    >>> print(render_table(table))                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unpact.attribution import attribute
from unpact.attribution.keytokens import KeyTokensConfig
from unpact.data.formatting import PromptFormat, format_answer, get_format
from unpact.data.records import QAItem, question_answer, spread_sample
from unpact.emphasis.activation import (
    DEFAULT_FACTORS,
    LAYER_SETS,
    ActivationEmphasis,
    batched_emphasis_hooks,
    emphasis_hooks,
    sweep,
)
from unpact.emphasis.rewrites import (
    get_template,
    keyword_positions,
    keywords_from_positions,
    rewrite,
    validate_keywords,
)
from unpact.emphasis.table import (
    Baseline,
    ControlBaseline,
    ControlOutcome,
    EmphasisItem,
    RecoveryItem,
    RecoveryRow,
    RecoveryTable,
    best_setting,
)
from unpact.errors import ConfigError, InputError
from unpact.metrics import rouge_l_recall
from unpact.progress import ProgressFactory, null_progress
from unpact.protocols import Model
from unpact.scoring import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_NEW_TOKENS, answer_logprobs, greedy_generate
from unpact.stats import mean

#: The prompt rewrites tried by default: the five single rewrites of the paper's kind plus one
#: combination (all of :data:`~unpact.emphasis.DEFAULT_TEMPLATES` cost a third more, for the
#: main job's 10-minute budget on a CPU).
RECOVERY_TEMPLATES: tuple[str, ...] = ("repeat", "quote", "upper", "focus", "keywords_first", "repeat+focus")


@dataclass
class RecoveryConfig:
    """What to try and how to judge it: every emphasis default of unpact lives here (the main
    job's :class:`unpact.config.EmphasisSettings` and ``unpact recover`` take theirs from it).

    Attributes:
        threshold: ROUGE-L recall at or above which an answer counts as right (also the main
            job's evaluation accuracy). The embedded TOFU answers are sentences that repeat the
            question's subject ("X was born in Lima."), so a wrong value still scores ~0.8: 0.9
            separates right from wrong there.
        collapse_margin: a control accuracy drop above this flags the setting as collapse (the main
            job's ``emphasis.collapse_margin``; :class:`~unpact.emphasis.controlled.ControlledSettings` has
            its own, on the controlled rate).
        templates: prompt rewrite templates to try (``"a+b"`` combines).
        factors, layer_sets, kinds: the activation sweep (factor 1 is the no-op baseline);
            kinds: "attention" only by default ("value" and "residual" on request), for the
            main job's time budget.
        site: residual site for ``kind="residual"`` (``resid_pre``, ``resid_post``, ...).
        max_new_tokens: greedy answer length.
        max_control_items: at most this many items per control set (evenly spaced; None: all).
        keytokens: the KeyTokens rule behind the keywords (:class:`~unpact.attribution.KeyTokensConfig`).
        attribution_method: the attribution behind the KeyTokens.
    """

    threshold: float = 0.9
    collapse_margin: float = 0.1
    templates: tuple[str, ...] = RECOVERY_TEMPLATES
    factors: tuple[float, ...] = DEFAULT_FACTORS
    layer_sets: tuple[str, ...] = LAYER_SETS
    kinds: tuple[str, ...] = ("attention",)
    site: str = "resid_post"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    max_control_items: int | None = 16
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    keytokens: KeyTokensConfig = field(default_factory=KeyTokensConfig)
    attribution_method: str = "loo"

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"recovery threshold must be in (0, 1], got {self.threshold}")
        if self.collapse_margin < 0:
            raise ConfigError(f"collapse margin must be >= 0, got {self.collapse_margin}")
        for t in self.templates:
            get_template(t)
        self.templates = tuple(self.templates)
        self.factors = tuple(float(f) for f in self.factors)
        self.layer_sets = tuple(self.layer_sets)
        self.kinds = tuple(self.kinds)
        if isinstance(self.keytokens, Mapping):
            self.keytokens = KeyTokensConfig(**self.keytokens)

    def settings(self) -> list[ActivationEmphasis]:
        return sweep(self.factors, self.layer_sets, self.kinds, self.site)


KeywordSpec = Any  # per item: list[str] | list[int]; a list aligned with items, a dict by id, or a callable


def _spec_for(keywords: KeywordSpec, item, iid: str, i: int):
    if callable(keywords):
        return keywords(item)
    if isinstance(keywords, Mapping):
        if iid not in keywords:
            raise InputError(f"item {iid!r}: no keywords given for it; the keyword dict must hold every item's id")
        return keywords[iid]
    return keywords[i]


def keytoken_positions(
    original, items: Sequence, config: RecoveryConfig | None = None, fmt=None, progress: ProgressFactory = null_progress
) -> list[list[int]]:
    """KeyTokens positions of each item under the ``original`` model (BOS at 0)."""
    cfg = config or RecoveryConfig()
    kwargs = {"progress": progress}
    if fmt is not None:
        kwargs["fmt"] = fmt
    attrs = attribute(original, list(items), method=cfg.attribution_method, **kwargs)
    return [list(a.key_tokens(**asdict(cfg.keytokens))) for a in attrs]


def emphasis_items(
    model: Model,
    items: Sequence,
    keywords: KeywordSpec = None,
    *,
    original: Model | None = None,
    config: RecoveryConfig | None = None,
    fmt: str | PromptFormat | None = None,
    progress: ProgressFactory = null_progress,
) -> list[EmphasisItem]:
    """Items with their keywords (strings) and keyword positions in the original prompt.

    ``keywords`` per item is a list of strings or a list of token positions; None
    means the original model's KeyTokens (needs ``original``).
    """
    tok = model.tokenizer
    f = get_format(fmt)
    qas = [question_answer(it, i, "emphasis") for i, it in enumerate(items)]
    if keywords is None:
        if original is None:
            raise InputError(
                "emphasis needs keywords: pass keywords=..., or original=<the model before unlearning> "
                "so its KeyTokens can be computed"
            )
        specs: list = keytoken_positions(original, [QAItem(q, a, id=iid) for iid, q, a in qas], config, f, progress)
    else:
        if not callable(keywords) and not isinstance(keywords, Mapping) and len(keywords) != len(items):
            raise InputError(f"{len(keywords)} keyword lists for {len(items)} items; give one per item")
        specs = [_spec_for(keywords, it, qas[i][0], i) for i, it in enumerate(items)]
    out = []
    for (iid, q, a), spec in zip(qas, specs):
        spec = list(spec or [])
        prompt = f.prompt(q)
        if spec and all(isinstance(s, int) for s in spec):
            positions = sorted(set(int(s) for s in spec))
            kws = keywords_from_positions(tok, q, positions, f)
        else:
            kws = validate_keywords(spec, f"item {iid!r}")
            positions = keyword_positions(tok, q, kws, f)
        out.append(EmphasisItem(iid, q, a, kws, positions, prompt, format_answer(a, f)))
    return out


# ------------------------------------------------------------------ evaluation


def score_answers(
    model: Model,
    prompts: Sequence[str],
    targets: Sequence[str],
    answers: Sequence[str],
    *,
    fwd_hooks=None,
    config: RecoveryConfig | None = None,
) -> dict[str, list]:
    """Greedy answers, their ROUGE-L recall against ``answers``, and teacher-forced answer log-probs."""
    cfg = config or RecoveryConfig()
    if not prompts:
        return {"answers": [], "rouge": [], "logprob": []}
    gens = greedy_generate(
        model,
        list(prompts),
        max_new_tokens=cfg.max_new_tokens,
        fwd_hooks=fwd_hooks,
        max_batch_tokens=cfg.max_batch_tokens,
    )
    lps = answer_logprobs(
        model, list(prompts), list(targets), fwd_hooks=fwd_hooks, max_batch_tokens=cfg.max_batch_tokens
    )
    return {
        "answers": gens,
        "rouge": [rouge_l_recall(g, a) for g, a in zip(gens, answers)],
        "logprob": [float(x) for x in lps],
    }


def _prompt_run(model, items: list[EmphasisItem], template: str, fmt, cfg: RecoveryConfig) -> dict[str, list]:
    tok = model.tokenizer
    prompts = [rewrite(it.question, it.keywords, template, tok, fmt).prompt for it in items]
    return score_answers(model, prompts, [it.target for it in items], [it.answer for it in items], config=cfg)


def _activation_run(model, items: list[EmphasisItem], emph: ActivationEmphasis, cfg: RecoveryConfig) -> dict[str, list]:
    hooks = emphasis_hooks(model, emph, [it.positions for it in items])
    return score_answers(
        model,
        [it.prompt for it in items],
        [it.target for it in items],
        [it.answer for it in items],
        fwd_hooks=hooks,
        config=cfg,
    )


Run = tuple[str, Any]  # ("plain", None) | ("prompt", template) | ("activation", ActivationEmphasis)


def _evaluate_runs(
    model,
    groups: Mapping[str, list[EmphasisItem]],
    runs: Sequence[Run],
    fmt,
    cfg: RecoveryConfig,
    *,
    batched: bool = True,
    bar=None,
) -> dict[Run, dict[str, dict[str, list]]]:
    """:func:`score_answers` of every run on every group: ``{run: {group: result}}``.

    Batched: all runs x groups x items are rows of one :func:`score_answers` call (one
    ``greedy_generate``, one ``answer_logprobs``), activation rows carrying their own
    setting through :func:`batched_emphasis_hooks`. Unbatched (the reference): one
    call per run and group, as the settings are defined.
    """
    if not batched:
        out: dict[Run, dict[str, dict[str, list]]] = {}
        for run in runs:
            kind, spec = run
            out[run] = {}
            for g, its in groups.items():
                if kind == "prompt":
                    out[run][g] = _prompt_run(model, its, spec, fmt, cfg)
                elif kind == "activation":
                    out[run][g] = _activation_run(model, its, spec, cfg)
                else:
                    out[run][g] = score_answers(
                        model, [i.prompt for i in its], [i.target for i in its], [i.answer for i in its], config=cfg
                    )
                if bar is not None:
                    bar.update()
        return out
    tok = model.tokenizer
    prompts: list[str] = []
    targets: list[str] = []
    answers: list[str] = []
    settings: list[ActivationEmphasis | None] = []
    positions: list[list[int]] = []
    spans: list[tuple[Run, str, int, int]] = []
    for run in runs:
        kind, spec = run
        for g, its in groups.items():
            start = len(prompts)
            for it in its:
                prompts.append(
                    rewrite(it.question, it.keywords, spec, tok, fmt).prompt if kind == "prompt" else it.prompt
                )
                targets.append(it.target)
                answers.append(it.answer)
                settings.append(spec if kind == "activation" else None)
                positions.append(it.positions)
            spans.append((run, g, start, len(prompts)))
    hooks = batched_emphasis_hooks(model, settings, positions) if any(s is not None for s in settings) else None
    res = score_answers(model, prompts, targets, answers, fwd_hooks=hooks, config=cfg)
    if bar is not None:
        bar.update()
    out = {run: {} for run in runs}
    for run, g, a, b in spans:
        out[run][g] = {k: v[a:b] for k, v in res.items()}
    return out


def _accuracy(rouge: Sequence[float], thr: float) -> float | None:
    return sum(r >= thr for r in rouge) / len(rouge) if rouge else None


def compare_runs(base: dict[str, list], emph: dict[str, list], threshold: float, ids: Sequence[str]) -> dict[str, Any]:
    """Recovery of one group under one emphasis against its plain run."""
    forgotten = [b < threshold for b in base["rouge"]]
    rec = [b < threshold <= e for b, e in zip(base["rouge"], emph["rouge"])]
    lost = [e < threshold <= b for b, e in zip(base["rouge"], emph["rouge"])]
    n_forgotten = sum(forgotten)
    return {
        "rate": (sum(rec) / n_forgotten) if n_forgotten else None,
        "n_recovered": sum(rec),
        "n_forgotten": n_forgotten,
        "n_lost": sum(lost),
        "accuracy": _accuracy(emph["rouge"], threshold),
        "baseline_accuracy": _accuracy(base["rouge"], threshold),
        "rouge": mean(emph["rouge"]),
        "delta_logprob": mean([e - b for e, b in zip(emph["logprob"], base["logprob"])]),
        "recovered_ids": [i for i, r in zip(ids, rec) if r],
    }


def _row(setting: dict[str, Any], groups: dict[str, dict], cfg: RecoveryConfig) -> RecoveryRow:
    """The :class:`RecoveryRow` of one setting (``setting``: its ``kind`` and ``template``, or
    ``emphasis`` and ``noop``) from :func:`compare_runs` of each group (``"forget"`` and the controls)."""
    f = groups["forget"]
    controls = {}
    for name, g in groups.items():
        if name == "forget":
            continue
        drop = None if g["accuracy"] is None else g["baseline_accuracy"] - g["accuracy"]
        controls[name] = ControlOutcome(
            accuracy=g["accuracy"],
            baseline_accuracy=g["baseline_accuracy"],
            drop=drop,
            recovered=g["n_recovered"],
            delta_logprob=g["delta_logprob"],
        )
    collapse = any(c.drop is not None and c.drop > cfg.collapse_margin for c in controls.values())
    return RecoveryRow(
        **setting,
        forget_rate=f["rate"],
        n_recovered=f["n_recovered"],
        n_forgotten=f["n_forgotten"],
        forget_accuracy=f["accuracy"],
        forget_rouge=f["rouge"],
        delta_logprob=f["delta_logprob"],
        recovered_ids=f["recovered_ids"],
        controls=controls,
        collapse=collapse,
    )


def check_same_tokenizer(original, unlearned) -> None:
    """Raise :class:`ConfigError` unless both models tokenize alike (same vocabulary and special tokens).

    The original model's KeyToken *positions* are applied to the unlearned model's
    tokens, so a pair with different tokenizers would emphasise the wrong tokens.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> check_same_tokenizer(load_model("embedded:gpt2"), load_model("out/npo_gdr"))  # doctest: +SKIP
    """
    a, b = original.tokenizer, unlearned.tokenizer
    name = lambda m: getattr(m, "unpact_spec", type(m).__name__)  # noqa: E731
    if a is b:
        return
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        diff = len(set(va.items()) ^ set(vb.items()))
        raise ConfigError(
            f"the original model {name(original)!r} and the unlearned model {name(unlearned)!r} have different "
            f"tokenizers ({len(va)} vs {len(vb)} tokens, {diff} entries differ): the original's KeyToken positions "
            "would point at other tokens; recover an unlearned copy of the original model"
        )
    for attr in ("bos_token_id", "eos_token_id"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            raise ConfigError(
                f"the original model {name(original)!r} and the unlearned model {name(unlearned)!r} have different "
                f"tokenizers ({attr} {getattr(a, attr, None)} vs {getattr(b, attr, None)}); recover an unlearned "
                "copy of the original model"
            )


def recover(
    unlearned: Model,
    forget: Sequence,
    *,
    original: Model | None = None,
    controls: Mapping[str, Sequence] | None = None,
    keywords: KeywordSpec = None,
    control_keywords: Mapping[str, KeywordSpec] | None = None,
    config: RecoveryConfig | None = None,
    method: str | None = None,
    fmt: str | PromptFormat | None = None,
    progress: ProgressFactory = null_progress,
    batched: bool = True,
) -> RecoveryTable:
    """The comparison table of emphasis recovery for one unlearned model (:class:`RecoveryTable`).

    Args:
        unlearned: the model after unlearning (a bridge).
        forget: the forget items (QA or MC items).
        original: the model before unlearning: its KeyTokens give the keywords
            (unless ``keywords`` is given) and its answers the reference level.
        controls: name -> items (e.g. ``{"retain": ..., "general": ...}``).
        keywords / control_keywords: explicit keywords (see :func:`emphasis_items`).
        config: :class:`RecoveryConfig`.
        method: the unlearning method's name (recorded in the table).
        batched: False is the reference path (one evaluation per run and group), for tests
            and benchmarks; it gives the same table.

    Returns:
        a :class:`RecoveryTable`: ``prompt`` (template -> :class:`RecoveryRow`), ``activation``
        (setting name -> row), each kind's best setting (``best("prompt")``), the ``baseline``
        and the ``items``; a row holds ``forget_rate`` (recovered / forgotten), ``n_recovered``,
        ``n_forgotten``, ``delta_logprob``, ``controls[name]`` (accuracy, drop, recovered) and
        ``collapse``. ``to_dict()`` is plain JSON.

    All runs on the unlearned model (the plain answers, every template and every
    activation setting, over forget and control items) go through one batched
    ``greedy_generate`` and one ``answer_logprobs`` call: rows of different
    settings share each forward, each with its own hooks (see
    :func:`unpact.emphasis.batched_emphasis_hooks`).
    """
    cfg = config or RecoveryConfig()
    if original is not None:
        check_same_tokenizer(original, unlearned)
    f = get_format(fmt)
    controls = {k: spread_sample(v, cfg.max_control_items) for k, v in (controls or {}).items()}
    groups: dict[str, list[EmphasisItem]] = {
        "forget": emphasis_items(unlearned, forget, keywords, original=original, config=cfg, fmt=f, progress=progress)
    }
    for name, its in controls.items():
        group_keywords = (control_keywords or {}).get(name)
        groups[name] = emphasis_items(
            unlearned, its, group_keywords, original=original, config=cfg, fmt=f, progress=progress
        )
    settings = cfg.settings()
    runs: list[tuple[str, Any]] = (
        [("plain", None)]
        + [("prompt", t) for t in cfg.templates]
        + [("activation", s) for s in settings if s.factor != 1]
    )
    n_passes = (len(runs) * len(groups) if not batched else 1) + (1 if original is not None else 0)
    with progress(total=n_passes, desc="emphasis recovery") as bar:
        results = _evaluate_runs(unlearned, groups, runs, f, cfg, batched=batched, bar=bar)
        orig = None
        if original is not None:
            fi = groups["forget"]
            orig = score_answers(
                original, [i.prompt for i in fi], [i.target for i in fi], [i.answer for i in fi], config=cfg
            )
            bar.update()
    prompt_rows, act_rows, best_answers = _setting_rows(results, groups, settings, cfg)
    return _table(method, cfg, keywords, groups, results[("plain", None)], orig, prompt_rows, act_rows, best_answers)


def _setting_rows(
    results: dict[tuple[str, Any], dict[str, dict]],
    groups: dict[str, list[EmphasisItem]],
    settings: Sequence,
    cfg: RecoveryConfig,
) -> tuple[dict[str, RecoveryRow], dict[str, RecoveryRow], dict[tuple[str, str], list]]:
    """Each template's and activation setting's row against the plain run, and each one's forget answers."""
    plain = results[("plain", None)]
    ids = {g: [it.id for it in its] for g, its in groups.items()}

    def rows_of(run: dict[str, dict], setting: dict) -> RecoveryRow:
        return _row(setting, {g: compare_runs(plain[g], run[g], cfg.threshold, ids[g]) for g in groups}, cfg)

    prompt_rows: dict[str, RecoveryRow] = {}
    best_answers: dict[tuple[str, str], list] = {}
    for t in cfg.templates:
        run = results[("prompt", t)]
        prompt_rows[t] = rows_of(run, {"kind": "prompt", "template": t})
        best_answers[("prompt", t)] = run["forget"]["answers"]
    act_rows: dict[str, RecoveryRow] = {}
    for s in settings:
        run = plain if s.factor == 1 else results[("activation", s)]
        act_rows[s.name] = rows_of(run, {"kind": s.kind, "emphasis": s, "noop": s.factor == 1})
        best_answers[("activation", s.name)] = run["forget"]["answers"]
    return prompt_rows, act_rows, best_answers


def _recovery_items(
    forget_items: list[EmphasisItem],
    plain_forget: dict,
    orig: dict[str, list] | None,
    best_answers: dict[tuple[str, str], list],
    prompt_best: str | None,
    activation_best: str | None,
) -> list[RecoveryItem]:
    """Per forget item: its plain answer, the original's and those under each kind's best setting."""
    return [
        RecoveryItem(
            **it.to_dict(),
            baseline_answer=plain_forget["answers"][j],
            baseline_rouge=plain_forget["rouge"][j],
            baseline_logprob=plain_forget["logprob"][j],
            original_answer=orig["answers"][j] if orig else None,
            original_rouge=orig["rouge"][j] if orig else None,
            original_logprob=orig["logprob"][j] if orig else None,
            prompt_best_answer=best_answers[("prompt", prompt_best)][j] if prompt_best is not None else None,
            activation_best_answer=(
                best_answers[("activation", activation_best)][j] if activation_best is not None else None
            ),
        )
        for j, it in enumerate(forget_items)
    ]


def _baseline(
    groups: dict[str, list[EmphasisItem]], plain: dict[str, dict], orig: dict[str, list] | None, threshold: float
) -> Baseline:
    """The plain-prompt :class:`Baseline` of the forget items (and the original's) and of each control group."""
    forget = plain["forget"]
    return Baseline(
        forget_accuracy=_accuracy(forget["rouge"], threshold),
        forget_rouge=mean(forget["rouge"]),
        forget_logprob=mean(forget["logprob"]),
        original_forget_accuracy=_accuracy(orig["rouge"], threshold) if orig else None,
        original_forget_rouge=mean(orig["rouge"]) if orig else None,
        original_forget_logprob=mean(orig["logprob"]) if orig else None,
        controls={
            g: ControlBaseline(_accuracy(plain[g]["rouge"], threshold), mean(plain[g]["rouge"]), len(groups[g]))
            for g in groups
            if g != "forget"
        },
    )


def _table(
    method: str | None,
    cfg: RecoveryConfig,
    keywords: KeywordSpec,
    groups: dict[str, list[EmphasisItem]],
    plain: dict[str, dict],
    orig: dict[str, list] | None,
    prompt_rows: dict[str, RecoveryRow],
    act_rows: dict[str, RecoveryRow],
    best_answers: dict[tuple[str, str], list],
) -> RecoveryTable:
    """The :class:`RecoveryTable` of the rows: the best setting of each kind, the baseline and the items."""
    pb, pr, pc = best_setting(prompt_rows)
    ab, ar, ac = best_setting(act_rows)
    thr = cfg.threshold
    fi = groups["forget"]
    pf = plain["forget"]
    items = _recovery_items(fi, pf, orig, best_answers, pb, ab)
    known = [it.original_rouge >= thr for it in items] if orig is not None else None
    return RecoveryTable(
        method=method,
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        keywords_source="keytokens" if keywords is None else "given",
        n_forget=len(fi),
        n_forgotten=sum(r < thr for r in pf["rouge"]),
        n_original_known=sum(known) if known is not None else None,
        n_forgotten_known=sum(k and r < thr for k, r in zip(known, pf["rouge"])) if known else None,
        baseline=_baseline(groups, plain, orig, thr),
        prompt=prompt_rows,
        activation=act_rows,
        prompt_best=pr,
        prompt_best_setting=pb,
        prompt_collapse=pc,
        activation_best=ar,
        activation_best_setting=ab,
        activation_collapse=ac,
        items=items,
    )
