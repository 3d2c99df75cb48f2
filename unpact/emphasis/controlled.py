"""Controlled emphasis recovery: keyword minus placebo, against the original under the same emphasis.

:func:`unpact.emphasis.recover` asks "does the answer come back under emphasis?".
That can be fooled three ways, and this module controls each:

1. **Any perturbation helps.** Emphasising *any* words of the prompt moves the
   answer. So every setting is also applied to a **placebo**: non-keyword
   question tokens matched to the keywords in count and run length
   (:mod:`unpact.emphasis.placebo`), the same rewrite template or the same
   activation scaling. Keyword-specific recovery = keyword minus placebo.
2. **The emphasis changes the task.** A rewrite the *original* model cannot
   answer under says nothing about unlearning. So an item counts (is in the
   denominator) only when the original answers it right under that emphasis
   (keyword and placebo both, for the paired comparison) and the unlearned model
   gets it wrong plainly; and continuous outcomes are
   difference-in-differences: (unlearned: keyword − placebo) − (original:
   keyword − placebo), each a change from the same model's plain prompt.
3. **A broken model "recovers" by accident.** Collapse is judged on control
   items (retain, general) against the original under the same setting:
   the drop of the unlearned model's control accuracy under the setting beyond
   its plain gap to the original, with a bootstrap interval over items.

Outcomes per item and setting: the greedy answer's ROUGE-L recall (binary at each
threshold of a sweep), the fact's mean log-prob under teacher forcing (the answer from
its fact token on, see :attr:`ControlledSettings.score`), and the paper's criterion,
whether that token is the model's top-1 prediction (:func:`unpact.scoring.token_ranks`).
With a negative control (a model that never saw the facts) the keyword-specific gain is
also measured against it (``did_negative``). Every number is computed
from the per-item raw outcomes kept in the result (:meth:`ControlledRecovery.raw`),
so a verdict can be recomputed from results.json alone (:func:`summarise`).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> res = controlled_recovery(unlearned, original, forget, controls={"retain": retain},
    ...                           keywords=positions)                                      # doctest: +SKIP
    >>> s = res.summary["settings"]["prompt:repeat"]                                       # doctest: +SKIP
    >>> s["did"]["logprob"]["mean"], s["did"]["logprob"]["interval"]                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unpact.data.formatting import PromptFormat, format_answer, get_format
from unpact.emphasis.activation import ActivationEmphasis, batched_emphasis_hooks
from unpact.emphasis.placebo import placebo_keywords, placebo_positions
from unpact.emphasis.recovery import check_same_tokenizer, emphasis_items
from unpact.emphasis.rewrites import get_template, rewrite
from unpact.errors import ConfigError, InputError
from unpact.metrics import rouge_l_recall
from unpact.probes import fact_token_index
from unpact.progress import ProgressFactory, null_progress
from unpact.scoring import encode_many, greedy_generate, score_sequences, token_ranks
from unpact.stats import bootstrap_mean_ci

#: the continuous outcomes, each a per-item change from the same model's plain prompt
OUTCOMES = ("logprob", "rouge", "top1", "recovered")


@dataclass
class ControlledSettings:
    """What is tried and how it is judged; every threshold with its reason.

    Attributes:
        templates: prompt-rewrite templates. ``repeat``, ``focus``, ``keywords_first``: one
            of each kind (repetition, an instruction, reordering); few settings keep the
            correction for testing several of them (finding 2) mild.
        activations: activation settings as ``(kind, factor, layers)``. Attention x2, x4, x8
            on all layers: the factor ladder of the existing sweep (the layer-set choice is
            a refinement once a factor works at all).
        threshold: ROUGE-L recall at or above which an answer is right, for the headline
            numbers and the denominators. 0.9: the study's threshold (embedded answers are
            sentences whose wrong variants still score about 0.8).
        thresholds: the binary recovery is also reported at each of these (a sweep, so no
            conclusion rests on one cut-off). 0.5 is the library's old default, 0.95 almost exact.
        confidence: of every bootstrap interval (0.95).
        n_boot: bootstrap resamples (2000: the interval's ends move by < 0.01 between seeds
            on tens of items).
        seed: of the bootstrap; ``placebo_seed``: of the placebo positions.
        collapse_margin: a setting collapses when it costs the unlearned model's control
            accuracy more than this beyond what it costs the original (and the interval's lower
            end is above 0). 0.1, the old margin, but now on ``min_control_items`` items or more.
        min_control_items: below this many control items no collapse call is made (None). 30:
            the margin of 0.1 is then at least 3 items, not one or two.
        score: which answer tokens the continuous outcomes read. ``"fact"`` (default): from the
            *fact token* on, the first answer token where the true answer and its perturbed
            answers differ (:func:`unpact.probes.fact_token_index`; the whole answer for items
            without perturbed answers), teacher-forced after the answer's prefix; the top-1
            criterion is read at that token. Because sentence answers repeat the question's
            subject ("Stellan Quennell was born in Krakow."): on the whole answer, emphasising the
            subject raises the log-prob of *copying the name* even in a model that never saw the
            fact (the retain-only model showed a "significant" keyword-specific gain that way).
            ``"answer"``: every answer token, and the first answer token for top-1 (the paper's
            wording, right for short answers).
        max_new_tokens, max_batch_tokens: greedy answer length and forward budget.
    """

    templates: tuple[str, ...] = ("repeat", "focus", "keywords_first")
    activations: tuple[tuple[str, float, str], ...] = (
        ("attention", 2.0, "all"),
        ("attention", 4.0, "all"),
        ("attention", 8.0, "all"),
    )
    threshold: float = 0.9
    thresholds: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95)
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    placebo_seed: int = 0
    collapse_margin: float = 0.1
    min_control_items: int = 30
    max_new_tokens: int = 24
    max_batch_tokens: int = 16384
    score: str = "fact"

    def __post_init__(self) -> None:
        if self.score not in ("fact", "answer"):
            raise ConfigError(f"controlled recovery score must be 'fact' or 'answer', got {self.score!r}")
        for t in self.templates:
            get_template(t)
        self.templates = tuple(self.templates)
        self.activations = tuple((str(k), float(f), str(l)) for k, f, l in self.activations)
        for k, f, l in self.activations:
            ActivationEmphasis(k, f, l)
        self.thresholds = tuple(sorted(set(float(t) for t in (*self.thresholds, self.threshold))))
        for t in self.thresholds:
            if not 0 < t <= 1:
                raise ConfigError(f"controlled recovery thresholds must be in (0, 1], got {t}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.collapse_margin < 0 or self.min_control_items < 1 or self.n_boot < 100:
            raise ConfigError("collapse_margin must be >= 0, min_control_items >= 1, n_boot >= 100")

    def setting_list(self) -> list[dict[str, Any]]:
        """Every setting as ``{"name", "kind", ...}``: the templates, then the activation settings."""
        out = [{"name": f"prompt:{t}", "kind": "prompt", "template": t} for t in self.templates]
        for k, f, l in self.activations:
            e = ActivationEmphasis(k, f, l)
            out.append({"name": f"activation:{e.name}", "kind": "activation", "emphasis": e.to_dict()})
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["templates"], d["thresholds"] = list(self.templates), list(self.thresholds)
        d["activations"] = [list(a) for a in self.activations]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ControlledSettings:
        d = dict(d)
        d["activations"] = tuple(tuple(a) for a in d.get("activations", ()))
        return cls(**d)


@dataclass
class ControlledRecovery:
    """:func:`controlled_recovery`'s result: per-item raw outcomes and the summary computed from them.

    Attributes:
        method: what the unlearned model is (a method name, a checkpoint name; free text).
        settings: the :class:`ControlledSettings` as used.
        raw: ``{"ids": {group: [...]}, "usable": [bool per forget item], "runs": {model: {run: {group:
            {"rouge", "logprob", "rank", "answers"}}}}}``; ``model`` is ``"unlearned"`` or
            ``"original"``, ``run`` is ``"plain"`` or ``"<setting>|keyword"`` / ``"<setting>|placebo"``
            (placebo runs on the forget group only).
        summary: :func:`summarise` of ``raw``.
    """

    method: str | None
    settings: ControlledSettings
    raw: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": self.settings.to_dict(), "raw": self.raw, "summary": self.summary}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ControlledRecovery:
        return cls(
            d.get("method"), ControlledSettings.from_dict(d["settings"]), dict(d["raw"]), dict(d.get("summary") or {})
        )


# ------------------------------------------------------------------ measuring


def _mean_or_none(xs: Sequence[float]) -> float | None:
    """The plain mean of ``xs`` (None for none)."""
    return sum(xs) / len(xs) if xs else None


def _rows_for(model, groups, settings: list[dict], fmt: PromptFormat, seed: int, facts: Mapping[str, list[int]]):
    """Every row (prompt, target, answer, activation setting, positions, fact index) and where each run's rows are."""
    tok = model.tokenizer
    prompts, targets, answers, acts, positions, fact_rows = [], [], [], [], [], []
    spans: list[tuple[str, str, int, int]] = []
    forget = groups["forget"]
    placebo_pos = [placebo_positions(tok, it.question, it.positions, fmt=fmt, seed=seed) for it in forget]
    placebo_words = [
        placebo_keywords(tok, it.question, it.positions, fmt=fmt, seed=seed) if p else []
        for it, p in zip(forget, placebo_pos)
    ]

    def add(run: str, group: str, rows: list[tuple[str, ActivationEmphasis | None, list[int]]], its) -> None:
        start = len(prompts)
        for j, ((prompt, act, pos), it) in enumerate(zip(rows, its)):
            fact_rows.append(facts[group][j])
            prompts.append(prompt)
            targets.append(it.target)
            answers.append(it.answer)
            acts.append(act)
            positions.append(pos)
        spans.append((run, group, start, len(prompts)))

    for g, its in groups.items():
        add("plain", g, [(it.prompt, None, []) for it in its], its)
    for s in settings:
        for g, its in groups.items():
            for emph in ("keyword", "placebo") if g == "forget" else ("keyword",):
                rows = []
                for j, it in enumerate(its):
                    kws = it.keywords if emph == "keyword" else placebo_words[j]
                    pos = it.positions if emph == "keyword" else placebo_pos[j]
                    if s["kind"] == "prompt":
                        rows.append(
                            (rewrite(it.question, kws, s["template"], tok, fmt).prompt if kws else it.prompt, None, [])
                        )
                    else:
                        e = s["emphasis"]
                        rows.append(
                            (
                                it.prompt,
                                ActivationEmphasis(e["kind"], e["factor"], e["layers"]) if pos else None,
                                list(pos),
                            )
                        )
                add(f"{s['name']}|{emph}", g, rows, its)
    usable = [bool(it.positions) and bool(p) and bool(w) for it, p, w in zip(forget, placebo_pos, placebo_words)]
    return (prompts, targets, answers, acts, positions, fact_rows), spans, usable


def _measure(model, rows, spans, cfg: ControlledSettings) -> dict[str, dict[str, dict[str, list]]]:
    prompts, targets, answers, acts, positions, facts = rows
    hooks = batched_emphasis_hooks(model, acts, positions) if any(a is not None for a in acts) else None
    gens = greedy_generate(
        model,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        fwd_hooks=hooks,
        max_batch_tokens=cfg.max_batch_tokens,
        truncate=True,
    )
    seqs = encode_many(model, prompts, targets, truncate=True)
    if cfg.score == "fact":  # the answer's prefix joins the prompt (after it: prompt positions are unchanged)
        seqs = [(p + a[: min(j, len(a) - 1)], a[min(j, len(a) - 1) :]) for (p, a), j in zip(seqs, facts)]
    lps = score_sequences(model, seqs, fwd_hooks=hooks, max_batch_tokens=cfg.max_batch_tokens).tolist()
    ranks = token_ranks(model, seqs, fwd_hooks=hooks, max_batch_tokens=cfg.max_batch_tokens).tolist()
    out: dict[str, dict[str, dict[str, list]]] = {}
    for run, g, a, b in spans:
        out.setdefault(run, {})[g] = {
            "rouge": [rouge_l_recall(x, y) for x, y in zip(gens[a:b], answers[a:b])],
            "logprob": [float(x) for x in lps[a:b]],
            "rank": [int(x) for x in ranks[a:b]],
            "answers": gens[a:b],
        }
    return out


def _fact_indices(tokenizer, items: Sequence, prepared, fmt: PromptFormat) -> list[int]:
    """Per item, the index of its fact token within the answer's tokens (0 without perturbed answers)."""
    out = []
    for it, e in zip(items, prepared):
        perturbed = [format_answer(p, fmt) for p in (getattr(it, "perturbed_answers", None) or ())]
        out.append(fact_token_index(tokenizer, e.target, perturbed) if perturbed else 0)
    return out


def controlled_recovery(
    unlearned,
    original,
    forget: Sequence,
    *,
    controls: Mapping[str, Sequence] | None = None,
    keywords=None,
    control_keywords: Mapping[str, Any] | None = None,
    settings: ControlledSettings | None = None,
    method: str | None = None,
    fmt: str | PromptFormat | None = None,
    reuse: ControlledRecovery | Mapping[str, Any] | None = None,
    negative=None,
    progress: ProgressFactory = null_progress,
) -> ControlledRecovery:
    """Keyword and placebo emphasis on the unlearned and the original model, with its summary.

    Args:
        unlearned: the model after unlearning (or a checkpoint, or a control model).
        original: the model before unlearning (same tokenizer; it sets the denominators).
        forget: the forget items (question-answer items).
        controls: name -> items on which collapse is judged (e.g. retain and general items;
            at least ``settings.min_control_items`` in all for a collapse call).
        keywords, control_keywords: per item keyword strings or token positions in the
            original prompt (BOS at 0), as :func:`unpact.emphasis.emphasis_items` takes them;
            None: the original model's KeyTokens (computed here, slower).
        settings: :class:`ControlledSettings`.
        method: a label kept in the result.
        reuse: an earlier result on the same items, keywords and settings (say, another
            checkpoint's): its original-model (and negative-control) runs are taken instead of
            measured again (they do not depend on the unlearned model); anything that differs is
            an error.
        negative: a model that never saw the forget facts (the retain-only model). Its runs give
            ``did_negative`` = (unlearned: keyword − placebo) − (negative: keyword − placebo): the
            keyword-specific gain beyond what the emphasis does to a model without the facts. On
            the embedded world the retain-only gpt2 shows a "significant" ``did`` (against the
            original) for ``prompt:repeat``: the original sits at its ceiling, so ``did`` alone is
            not specific there (tests/integration/test_dilemma.py).

    Returns:
        :class:`ControlledRecovery` (``to_dict`` is JSON-able).

    Both models answer the same rows: plain, then each setting with the keywords and (on
    forget items) with the placebo; each model in one batched pass of greedy answers,
    teacher-forced log-probs and first-token ranks.
    """
    cfg = settings or ControlledSettings()
    check_same_tokenizer(original, unlearned)
    f = get_format(fmt)
    groups = {"forget": emphasis_items(unlearned, forget, keywords, original=original, fmt=f, progress=progress)}
    for name, its in (controls or {}).items():
        if name == "forget":
            raise InputError("a control group cannot be called 'forget'")
        groups[name] = emphasis_items(
            unlearned, its, (control_keywords or {}).get(name), original=original, fmt=f, progress=progress
        )
    setting_list = cfg.setting_list()
    sources = {"forget": list(forget), **{k: list(v) for k, v in (controls or {}).items()}}
    facts = {g: _fact_indices(unlearned.tokenizer, sources[g], its, f) for g, its in groups.items()}
    rows, spans, usable = _rows_for(unlearned, groups, setting_list, f, cfg.placebo_seed, facts)
    raw = {
        "ids": {g: [it.id for it in its] for g, its in groups.items()},
        "usable": usable,
        "keywords": [list(it.keywords) for it in groups["forget"]],
        "positions": {g: [list(it.positions) for it in its] for g, its in groups.items()},
        "fact_index": facts,
        "settings": setting_list,
        "runs": {},
    }
    runs = raw["runs"]
    if reuse is not None:
        runs.update(_reused_runs(reuse, raw, cfg, with_negative=negative is not None))
    todo = (
        [("unlearned", unlearned)]
        + ([("original", original)] if "original" not in runs else [])
        + ([("negative", negative)] if negative is not None and "negative" not in runs else [])
    )
    with progress(total=len(todo), desc="controlled recovery") as bar:
        for name, model in todo:
            runs[name] = _measure(model, rows, spans, cfg)
            bar.update()
    return ControlledRecovery(method, cfg, raw, summarise(raw, cfg))


def _reused_runs(
    reuse: ControlledRecovery | Mapping[str, Any], raw: Mapping[str, Any], cfg: ControlledSettings, with_negative: bool
) -> dict[str, Any]:
    """The original's (``with_negative``: also the negative's) runs of ``reuse``, if it matches ``raw`` and ``cfg``."""
    old = reuse.raw if isinstance(reuse, ControlledRecovery) else reuse["raw"]
    old_cfg = (
        reuse.settings if isinstance(reuse, ControlledRecovery) else ControlledSettings.from_dict(reuse["settings"])
    )
    for key in ("ids", "usable", "keywords", "positions", "settings"):
        if old.get(key) != raw[key]:
            raise InputError(f"reuse: the earlier result differs in {key}; it cannot stand for the original's runs")
    if (old_cfg.placebo_seed, old_cfg.max_new_tokens, old_cfg.score) != (
        cfg.placebo_seed,
        cfg.max_new_tokens,
        cfg.score,
    ):
        raise InputError("reuse: the earlier result used another placebo seed, answer length or score")
    runs = {"original": old["runs"]["original"]}
    if with_negative and "negative" in old["runs"]:
        runs["negative"] = old["runs"]["negative"]
    return runs


# ------------------------------------------------------------------ summarising


def _top1(ranks: Sequence[int]) -> list[float]:
    return [1.0 if r == 1 else 0.0 for r in ranks]


def _outcome(run: Mapping[str, list], name: str, threshold: float) -> list[float]:
    """Per item, outcome ``name`` of one run: ``recovered`` is 1 where the fact token is top-1 and the
    greedy answer is right (ROUGE-L recall >= ``threshold``), the paper's criterion."""
    if name == "recovered":
        return [1.0 if r == 1 and g >= threshold else 0.0 for r, g in zip(run["rank"], run["rouge"])]
    return _top1(run["rank"]) if name == "top1" else [float(x) for x in run[name]]


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def summarise(raw: Mapping[str, Any], settings: ControlledSettings | None = None) -> dict[str, Any]:
    """The numbers of a controlled recovery, from its per-item raw outcomes (no model needed).

    Per setting (``summary["settings"][name]``):

    * ``binary[t]`` at each threshold t: for keyword and placebo, ``n_eligible`` (unlearned
      wrong plainly, original right under that emphasis), ``n_recovered`` (unlearned right
      under it) and ``rate``; ``paired``: over items eligible under both, the keyword and
      placebo rates and their difference with a bootstrap interval (``specific``);
    * ``eligible_ids``: the paired items at the headline threshold; every continuous number
      below is over them;
    * ``unlearned``/``original``: per emphasis, the mean change from the plain prompt of
      each outcome (``logprob``: of the fact, ``rouge``, ``top1``: 1 when the fact token is top-1,
      ``recovered``: 1 when it is top-1 and the greedy answer is right at the threshold, the paper's criterion);
    * ``keyword_minus_placebo[o]``: mean over items of the unlearned model's (keyword −
      placebo) change, with its interval;
    * ``did[o]``: the difference-in-differences, (unlearned: keyword − placebo) − (original:
      keyword − placebo), with its interval: the keyword-specific recovery; with a negative
      control, ``negative[o]`` and ``did_negative[o]`` (its keyword − placebo in place of the original's);
    * ``becomes_top1``: share of eligible items whose fact token is not top-1
      plainly and becomes top-1 under keyword / placebo emphasis (the paper's criterion);
    * ``collapse``: per control group, accuracy of both models plainly and under the
      setting (keyword), ``added_drop`` = mean over items of (original − unlearned right
      under the setting) − (the same plainly) with its interval, and ``collapse`` (None
      below ``min_control_items``); the setting's ``collapse`` is True when any group's is.
    """
    cfg = settings or ControlledSettings()
    runs_u, runs_o = raw["runs"]["unlearned"], raw["runs"]["original"]
    usable = list(raw["usable"])
    t0 = cfg.threshold
    boot = dict(n_boot=cfg.n_boot, confidence=cfg.confidence, seed=cfg.seed)
    pu = runs_u["plain"]["forget"]
    out_settings: dict[str, Any] = {}
    for s in raw["settings"]:
        name = s["name"]
        uk, up_ = runs_u[f"{name}|keyword"]["forget"], runs_u[f"{name}|placebo"]["forget"]
        ok, op = runs_o[f"{name}|keyword"]["forget"], runs_o[f"{name}|placebo"]["forget"]
        binary = {f"{t:g}": _binary_row(t, usable, pu, uk, up_, ok, op, boot) for t in cfg.thresholds}
        elig = _eligible(raw, name, t0)
        entry: dict[str, Any] = {
            "setting": s,
            "binary": binary,
            "n_eligible": len(elig),
            "eligible_ids": [raw["ids"]["forget"][i] for i in elig],
            "unlearned": {},
            "original": {},
            "keyword_minus_placebo": {},
            "did": {},
        }
        for o in OUTCOMES:
            _outcome_changes(entry, o, elig, raw["runs"], name, boot, t0)
        not_top = [i for i in elig if pu["rank"][i] > 1]
        entry["becomes_top1"] = {
            "n": len(not_top),
            "keyword": _share(sum(uk["rank"][i] == 1 for i in not_top), len(not_top)),
            "placebo": _share(sum(up_["rank"][i] == 1 for i in not_top), len(not_top)),
        }
        entry["collapse"], entry["collapsed"] = _collapse(runs_u, runs_o, name, raw["ids"], cfg, boot)
        out_settings[name] = entry
    return {
        "threshold": t0,
        "n_forget": len(usable),
        "n_usable": sum(usable),
        "n_forgotten": sum(r < t0 for r in pu["rouge"]),
        "n_original_known": sum(r >= t0 for r in runs_o["plain"]["forget"]["rouge"]),
        "settings": out_settings,
    }


def _binary_row(t: float, usable, pu, uk, up_, ok, op, boot: dict) -> dict[str, Any]:
    """At threshold ``t``: per emphasis the eligible (forgotten plainly, the original right under it)
    and recovered counts, and over the items eligible under both the paired rates and their difference."""
    n = len(usable)
    forgot = [pu["rouge"][i] < t for i in range(n)]
    row: dict[str, Any] = {}
    for emph, u, o in (("keyword", uk, ok), ("placebo", up_, op)):
        elig = [i for i in range(n) if usable[i] and forgot[i] and o["rouge"][i] >= t]
        rec = [i for i in elig if u["rouge"][i] >= t]
        row[emph] = {"n_eligible": len(elig), "n_recovered": len(rec), "rate": _share(len(rec), len(elig))}
    paired = [i for i in range(n) if usable[i] and forgot[i] and ok["rouge"][i] >= t and op["rouge"][i] >= t]
    rk = [1.0 if uk["rouge"][i] >= t else 0.0 for i in paired]
    rp = [1.0 if up_["rouge"][i] >= t else 0.0 for i in paired]
    row["paired"] = {
        "n": len(paired),
        "keyword_rate": _share(int(sum(rk)), len(paired)),
        "placebo_rate": _share(int(sum(rp)), len(paired)),
        "specific": bootstrap_mean_ci([a - b for a, b in zip(rk, rp)], **boot),
    }
    return row


def _eligible(raw: Mapping[str, Any], name: str, t0: float) -> list[int]:
    """The items setting ``name`` is read on: usable, wrong plainly on the unlearned model, and
    right under both its keyword and its placebo emphasis on the original (at threshold ``t0``)."""
    runs_u, runs_o = raw["runs"]["unlearned"], raw["runs"]["original"]
    pu, ok, op = runs_u["plain"]["forget"], runs_o[f"{name}|keyword"]["forget"], runs_o[f"{name}|placebo"]["forget"]
    usable = list(raw["usable"])
    return [
        i
        for i in range(len(usable))
        if usable[i] and pu["rouge"][i] < t0 and ok["rouge"][i] >= t0 and op["rouge"][i] >= t0
    ]


def _changes(run: Mapping[str, Any], name: str, o: str, elig: list[int], t0: float) -> tuple[list, list]:
    """One model's per-item change of outcome ``o`` from the plain prompt under setting ``name``'s
    keyword and placebo emphasis, over ``elig``."""
    base = _outcome(run["plain"]["forget"], o, t0)
    k, p = _outcome(run[f"{name}|keyword"]["forget"], o, t0), _outcome(run[f"{name}|placebo"]["forget"], o, t0)
    return [k[i] - base[i] for i in elig], [p[i] - base[i] for i in elig]


def _specific(keyword: list, placebo: list) -> list:
    """Per item, keyword minus placebo."""
    return [a - b for a, b in zip(keyword, placebo)]


def _outcome_changes(entry: dict[str, Any], o: str, elig: list[int], runs, name: str, boot: dict, t0: float) -> None:
    """Outcome ``o``'s mean changes from the plain prompt over ``elig``, per model and emphasis, and the
    keyword − placebo and difference-in-differences intervals (against the negative control when run)."""
    du_k, du_p = _changes(runs["unlearned"], name, o, elig, t0)
    do_k, do_p = _changes(runs["original"], name, o, elig, t0)
    entry["unlearned"][o] = {"keyword": _mean_or_none(du_k), "placebo": _mean_or_none(du_p)}
    entry["original"][o] = {"keyword": _mean_or_none(do_k), "placebo": _mean_or_none(do_p)}
    su = _specific(du_k, du_p)
    entry["keyword_minus_placebo"][o] = bootstrap_mean_ci(su, **boot)
    entry["did"][o] = bootstrap_mean_ci(_specific(su, _specific(do_k, do_p)), **boot)
    if "negative" in runs:
        dn_k, dn_p = _changes(runs["negative"], name, o, elig, t0)
        entry.setdefault("negative", {})[o] = {"keyword": _mean_or_none(dn_k), "placebo": _mean_or_none(dn_p)}
        entry.setdefault("did_negative", {})[o] = bootstrap_mean_ci(_specific(su, _specific(dn_k, dn_p)), **boot)


def _collapse(
    runs_u, runs_o, name: str, ids: Mapping[str, list], cfg: ControlledSettings, boot
) -> tuple[dict, bool | None]:
    t = cfg.threshold
    groups = {}
    calls = []
    for g in ids:
        if g == "forget":
            continue
        right = lambda run: [1.0 if r >= t else 0.0 for r in run["rouge"]]  # noqa: E731
        us, os_ = right(runs_u[f"{name}|keyword"][g]), right(runs_o[f"{name}|keyword"][g])
        up, op = right(runs_u["plain"][g]), right(runs_o["plain"][g])
        d = [(o - u) - (o0 - u0) for u, o, u0, o0 in zip(us, os_, up, op)]
        ci = bootstrap_mean_ci(d, **boot)
        n = len(d)
        call = None
        if n >= cfg.min_control_items:
            call = bool(ci["mean"] > cfg.collapse_margin and ci["interval"][0] > 0)
            calls.append(call)
        groups[g] = {
            "n": n,
            "unlearned_accuracy": _mean_or_none(us),
            "original_accuracy": _mean_or_none(os_),
            "unlearned_plain_accuracy": _mean_or_none(up),
            "original_plain_accuracy": _mean_or_none(op),
            "added_drop": ci,
            "collapse": call,
        }
    return groups, (any(calls) if calls else None)


def specific_recovery(
    result: ControlledRecovery | Mapping[str, Any], outcome: str = "logprob", statistic: str = "did"
) -> dict[str, dict[str, Any]]:
    """Per setting, the keyword-specific recovery ``{"mean", "interval", "n"}`` of ``outcome``.

    ``statistic``: ``"did"`` (against the original, the default), ``"keyword_minus_placebo"``
    (unlearned only) or ``"binary"`` (the paired rate difference at the headline threshold).

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> specific_recovery(res)["prompt:repeat"]["interval"]            # doctest: +SKIP
    """
    summary = result.summary if isinstance(result, ControlledRecovery) else result.get("summary", result)
    out = {}
    for name, s in summary["settings"].items():
        if statistic == "binary":
            out[name] = s["binary"][f"{summary['threshold']:g}"]["paired"]["specific"]
        elif statistic in ("did", "did_negative", "keyword_minus_placebo"):
            if statistic not in s:
                raise ConfigError("did_negative needs a negative control: controlled_recovery(..., negative=model)")
            out[name] = s[statistic][outcome]
        else:
            raise ConfigError(
                f"statistic must be 'did', 'did_negative', 'keyword_minus_placebo' or 'binary', got {statistic!r}"
            )
    return out


def item_effects(
    raw: Mapping[str, Any], settings: ControlledSettings | None = None, outcome: str = "logprob", statistic: str = "did"
) -> dict[str, dict[str, Any]]:
    """Per setting, the per-item values whose mean :func:`summarise` reports as ``statistic[outcome]``.

    ``statistic``: ``"did"``, ``"did_negative"`` or ``"keyword_minus_placebo"``. Returns ``{name:
    {"ids": [eligible item ids], "values": [one number per id], "collapsed": the setting's
    collapse call}}``: the per-item outcomes that pooling over seeds resamples
    (:func:`unpact.analyses.seeds.pooled_finding2`); their mean is the summary's mean.
    """
    cfg = settings or ControlledSettings()
    if statistic not in ("did", "did_negative", "keyword_minus_placebo"):
        raise ConfigError(f"statistic must be 'did', 'did_negative' or 'keyword_minus_placebo', got {statistic!r}")
    if statistic == "did_negative" and "negative" not in raw["runs"]:
        raise ConfigError("did_negative needs a negative control: controlled_recovery(..., negative=model)")
    runs_u, runs_o, t0 = raw["runs"]["unlearned"], raw["runs"]["original"], cfg.threshold
    boot = dict(n_boot=cfg.n_boot, confidence=cfg.confidence, seed=cfg.seed)
    out: dict[str, dict[str, Any]] = {}
    for s in raw["settings"]:
        name = s["name"]
        elig = _eligible(raw, name, t0)
        vals = _specific(*_changes(runs_u, name, outcome, elig, t0))
        if statistic != "keyword_minus_placebo":
            ref = raw["runs"]["original" if statistic == "did" else "negative"]
            vals = _specific(vals, _specific(*_changes(ref, name, outcome, elig, t0)))
        _, collapsed = _collapse(runs_u, runs_o, name, raw["ids"], cfg, boot)
        out[name] = {"ids": [raw["ids"]["forget"][i] for i in elig], "values": vals, "collapsed": collapsed}
    return out


__all__ = [
    "ControlledRecovery",
    "ControlledSettings",
    "OUTCOMES",
    "controlled_recovery",
    "item_effects",
    "specific_recovery",
    "summarise",
]
