"""Knowledge presence in the main job: the probes on every model, calibrated on controls with known answers.

The probes (:mod:`unpact.probes`) ask whether a fact is still *in* a model; this
module runs them the way the study needs them:

* :func:`probe_model` — every configured probe on one model's forget items;
* :func:`presence_calls` — per item ``known`` / ``hidden`` / ``erased`` from the
  plain-prompt result and the probes (:func:`unpact.probes.classify`), with counts;
* :func:`calibrate` — each probe's sensitivity on the **positive control** (the
  original taught to hide the facts from the plain prompt, :func:`unpact.controls.hide_facts`)
  and specificity on the **negative control** (the retain-only model, which never
  saw them), so a "hidden" or an "erased" call comes with how often the probe is
  right where the answer is known;
* :func:`positive_control_model` — that positive control, keeping the facts in the
  probes' formats (the paraphrased question and, on the embedded world, the
  biography cloze) and the retain set;
* :func:`answer_space` and :func:`chance_levels` — per item, the chance of hitting its answer by
  guessing among the distinct answers its attribute takes in the benchmark;
* :func:`null_keyword_rows` — finding 1's damage-matched nulls: weight-noise draws
  matched to a method's forget accuracy, attributed like the method, in
  :func:`unpact.analyses.keyword_focus_vs_null`'s shape.

Example:
    >>> s = PresenceSettings()
    >>> s.probes
    ['format', 'choice', 'logit_lens']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unpact.attribution import attribute
from unpact.controls import HideConfig, hide_facts, match_noise, noise_model
from unpact.data import spread_sample
from unpact.data.records import QAItem, TextItem
from unpact.errors import ConfigError
from unpact.probes import PROBES, ProbeResult, classify, cloze_of, probe, sensitivity_specificity


@dataclass
class PresenceSettings:
    """What the study probes and how its controls are built.

    Attributes:
        probes: probe names (:data:`unpact.probes.PROBES`); every one is run on the original,
            on each unlearned model and on both controls.
        format_source: where the format probe asks: ``"auto"`` = the biography cloze when the
            item has one (the embedded world: trained, never unlearned), else the paraphrased
            question (what TOFU ships).
        positive_control: build the positive control and report sensitivity (needs items with
            a paraphrased question or a cloze to keep).
        hide_steps, hide_lr: the positive control's fine-tune (IDK on the plain forget questions);
            :class:`unpact.controls.HideConfig`'s defaults, which the probes' test showed hide
            all but <= 2 of 12 facts from the plain prompt on embedded:gpt2.
        keep_retain_items: retain items the positive control keeps answering beside the facts'
            other formats (so it hides the facts, not the ability to answer).
        null_draws: weight-noise draws per method for finding 1 (19 is the fewest with which a
            Monte Carlo rank test can reach p = 0.05: p >= 1 / (K + 1)); 0 turns the nulls off.
        null_max_scale: the largest noise scale (x each weight's std) the matching may try.
        min_specificity: a probe takes part in the hidden / erased call only if, on the negative
            control (a model that never had the facts), it calls at most one fact in ten present
            (specificity >= 0.9): otherwise a "hidden" from it is as likely a false alarm on an
            erased fact. Probes below it are still run and reported, with the reason they were
            left out. Without a negative control every probe takes part, and the call says so.
        unknown_split: a split of the benchmark holding facts the original does *not* know
            (``unpact known-facts`` writes it as ``unknown``). Where no retain-only reference model
            exists (a real pretrained model learned its facts in pretraining), the original on
            these items is the negative control: a probe that finds the answers of questions the
            model gets wrong raises false alarms. Used only without ``reference_model``.
        negative_items: how many ``unknown_split`` items the negative control probes (None: as
            many as the forget items probed). The call's false-hidden rate is a share of them,
            and with n items its Wilson upper end cannot fall below that of 0 of n: 0.24 at 12
            (a bar of 0.15 can never be met), 0.14 at 24, 0.07 at 48 (one false alarm in 48: 0.11).
            With a reference model the negative control answers the forget items themselves, so
            their number is fixed.
    """

    probes: list[str] = field(default_factory=lambda: ["format", "choice", "logit_lens"])
    format_source: str = "auto"
    positive_control: bool = True
    hide_steps: int = 30
    hide_lr: float = 1e-3
    keep_retain_items: int = 24
    null_draws: int = 19
    null_max_scale: float = 3.0
    min_specificity: float = 0.9
    unknown_split: str | None = None
    negative_items: int | None = None

    def probe_settings(self, name: str) -> dict[str, Any] | None:
        """The settings probe ``name`` takes from these (its class's ``study_settings``)."""
        return PROBES.get(name).study_settings(self)

    def validate(self) -> None:
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise ConfigError(f"unknown probe {unknown[0]!r} in presence.probes; known: {', '.join(PROBES)}")
        for cls in PROBES.values():
            cls.check_study_settings(self)
        if self.null_draws < 0 or self.keep_retain_items < 0 or self.hide_steps < 1:
            raise ConfigError("presence.null_draws and keep_retain_items must be >= 0 and hide_steps >= 1")
        if self.negative_items is not None and self.negative_items < 1:
            raise ConfigError(f"presence.negative_items must be >= 1 (or unset), got {self.negative_items}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_model(model, items: Sequence[QAItem], settings: PresenceSettings, fmt=None) -> dict[str, dict[str, Any]]:
    """Every probe of ``settings`` on ``model`` (``{probe name: ProbeResult.to_dict()}``).

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> probe_model(model, forget, PresenceSettings())["choice"]["share_present"]   # doctest: +SKIP
        0.96
    """
    qa = [it for it in items if isinstance(it, QAItem)]
    return {
        name: probe(model, qa, name, settings=settings.probe_settings(name), fmt=fmt).to_dict()
        for name in settings.probes
    }


def usable_probes(
    calibration: dict[str, dict[str, Any]] | None, probes: Sequence[str], min_specificity: float
) -> tuple[list[str], dict[str, str]]:
    """The probes whose specificity on the negative control is at least ``min_specificity``,
    and for each left out, why. Without a calibration every probe is used.

    Example:
        >>> usable_probes({"choice": {"specificity": 0.54}, "format": {"specificity": 0.96}}, ["format", "choice"], 0.9)
        (['format'], {'choice': 'specificity 0.54 < 0.9 on the negative control'})
    """
    if not calibration:
        return list(probes), {}
    used, left = [], {}
    for p in probes:
        spec = (calibration.get(p) or {}).get("specificity")
        if spec is None or spec >= min_specificity:
            used.append(p)
        else:
            left[p] = f"specificity {spec:.2f} < {min_specificity:g} on the negative control"
    return used, left


def presence_calls(
    ids: Sequence[str],
    plain_correct: Sequence[bool],
    probes: dict[str, dict[str, Any]],
    use: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per item ``known`` / ``hidden`` / ``erased`` / ``unprobed`` and their counts.

    ``plain_correct``: whether the model answers the plain prompt right (per item of ``ids``).
    ``hidden`` = plain wrong and some probe of ``use`` (default: all) finds the fact;
    ``erased`` = plain wrong and every such probe that asked misses it.

    Example:
        >>> p = {"choice": {"probe": "choice", "ids": ["a", "b"], "present": [True, False], "score": [1.0, -1.0]}}
        >>> presence_calls(["a", "b"], [False, False], p)["counts"]
        {'known': 0, 'hidden': 1, 'erased': 1, 'unprobed': 0}
    """
    res = {k: ProbeResult.from_dict(v) for k, v in probes.items()}
    used = list(res) if use is None else [k for k in use if k in res]
    calls = classify(list(plain_correct), {k: res[k] for k in used}, [str(i) for i in ids])
    counts = {k: calls.count(k) for k in ("known", "hidden", "erased", "unprobed")}
    forgotten = counts["hidden"] + counts["erased"]
    return {
        "ids": [str(i) for i in ids],
        "calls": calls,
        "counts": counts,
        "share_hidden_of_forgotten": counts["hidden"] / forgotten if forgotten else None,
        "share_present": {k: v.share_present for k, v in res.items()},
        "probes_used": used,
    }


def answer_space(*splits: Iterable[Any] | None) -> dict[str, int]:
    """Per attribute: the number of distinct answers it takes over ``splits`` (None splits skipped).

    An item declares its attribute and answer in ``meta["attribute"]`` and ``meta["value"]`` (the
    embedded world's records do); items that do not are not counted.

    Example:
        >>> a = QAItem("Where was A born?", "Lima", meta={"attribute": "birthplace", "value": "Lima"})
        >>> b = QAItem("Where was B born?", "Oslo", meta={"attribute": "birthplace", "value": "Oslo"})
        >>> answer_space([a, b], None, [a])
        {'birthplace': 2}
    """
    values: dict[str, set[str]] = {}
    for split in splits:
        for item in split or ():
            meta = getattr(item, "meta", None) or {}
            if meta.get("attribute") is not None and meta.get("value") is not None:
                values.setdefault(str(meta["attribute"]), set()).add(str(meta["value"]).strip().lower())
    return {k: len(v) for k, v in values.items()}


def chance_levels(items: Sequence[Any], space: dict[str, int]) -> list[float | None]:
    """Per item: 1 / the number of distinct answers of its attribute (None: no attribute declared).

    The hit rate of a probe that answered by guessing uniformly among the answers the attribute
    takes in the benchmark: a birth year among 30 years is hit 1 time in 30, a genre among 8
    1 time in 8, so a "hidden" call on a small answer space is weaker evidence.

    Example:
        >>> a = QAItem("Where was A born?", "Lima", meta={"attribute": "birthplace", "value": "Lima"})
        >>> chance_levels([a, QAItem("Q?", "x")], {"birthplace": 4})
        [0.25, None]
    """
    out: list[float | None] = []
    for item in items:
        k = space.get(str((getattr(item, "meta", None) or {}).get("attribute")))
        out.append(1.0 / k if k else None)
    return out


def chance_hits(chance: Sequence[float | None], calls: Sequence[str]) -> dict[str, Any]:
    """The hidden calls chance alone would give among the forgotten items: the sum of their
    chance levels (``expected``), over the ``n`` forgotten items whose attribute is declared.

    Example:
        >>> chance_hits([0.25, 0.5, None, 0.1], ["hidden", "erased", "erased", "known"])
        {'expected': 0.75, 'n': 2, 'n_forgotten': 3}
    """
    forgotten = [c for c, call in zip(chance, calls) if call in ("hidden", "erased")]
    known = [c for c in forgotten if c is not None]
    return {"expected": float(sum(known)), "n": len(known), "n_forgotten": len(forgotten)}


def calibrate(
    positive: dict[str, dict[str, Any]],
    negative: dict[str, dict[str, Any]],
    positive_hidden_ids: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each probe's sensitivity (positive control) and specificity (negative control), with Wilson intervals.

    ``positive_hidden_ids``: the items the positive control really hides (its plain answer is
    wrong); sensitivity is counted on those only, so an item the fine-tune failed to hide
    does not count as a probe's success.
    """
    out = {}
    for name in positive:
        pos = ProbeResult.from_dict(positive[name])
        if positive_hidden_ids is not None:
            keep = set(map(str, positive_hidden_ids))
            sel = [i for i, x in enumerate(pos.ids) if x in keep]
            pos = ProbeResult(
                pos.probe, [pos.ids[i] for i in sel], [pos.present[i] for i in sel], [pos.score[i] for i in sel]
            )
        if name in negative:
            out[name] = sensitivity_specificity(pos, ProbeResult.from_dict(negative[name]))
    return out


def keep_formats(forget: Sequence[QAItem]) -> list:
    """The forget facts in the probes' formats, for the positive control to keep answering:
    each paraphrased question (as a QA item) and each biography cloze (as a text item)."""
    out: list = []
    for it in forget:
        if not isinstance(it, QAItem):
            continue
        if it.paraphrased_question and it.paraphrased_question != it.question:
            out.append(QAItem(it.paraphrased_question, it.answer, id=f"{it.id}/paraphrase", meta=dict(it.meta or {})))
        c = cloze_of(it)
        if c is not None:
            out.append(TextItem(c[0], c[1], id=f"{it.id}/cloze"))
    return out


def positive_control_model(
    original,
    forget: Sequence[QAItem],
    retain: Sequence,
    settings: PresenceSettings,
    *,
    seed: int = 0,
    fmt=None,
    training: Mapping[str, Any] | None = None,
):
    """The original taught, in prompt format ``fmt``, to refuse the plain forget questions while keeping
    :func:`keep_formats` and ``settings.keep_retain_items`` retain items (None when the items give
    nothing to keep). ``training``: how the fine-tune's passes run (:func:`~unpact.controls.hide_facts`)."""
    keep = keep_formats(forget)
    if not keep:
        return None
    keep += spread_sample(list(retain), settings.keep_retain_items)
    return hide_facts(
        original,
        list(forget),
        keep,
        HideConfig(lr=settings.hide_lr, steps=settings.hide_steps),
        seed=seed,
        fmt=fmt,
        training=training,
    )


def keyword_rows(before: Sequence, after: Sequence, keys: Sequence[set[int]]) -> list[dict[str, Any]]:
    """Attribution pairs in :func:`unpact.analyses.keyword_focus`'s item shape (``key`` marks KeyTokens)."""
    return [
        {
            "id": b.item_id,
            "group": b.group or "forget",
            "before": list(b.scores),
            "after": list(a.scores),
            "special": list(b.special),
            "key": [i in k for i in range(len(b.scores))],
        }
        for b, a, k in zip(before, after, keys)
    ]


def null_keyword_rows(
    original,
    items: Sequence,
    before: Sequence,
    keys: Sequence[set[int]],
    measure: Callable[[Any], float],
    target: float,
    settings: PresenceSettings,
    *,
    seed: int = 0,
    fmt=None,
    max_batch_tokens: int | None = None,
    progress: Callable | None = None,
) -> dict[str, Any]:
    """Finding 1's null: ``settings.null_draws`` weight-noise models with the method's damage.

    The noise scale is matched (:func:`unpact.controls.match_noise`, bisection on the draw
    ``seed``) so that ``measure`` (the main job: the forget answers' mean log-prob, continuous,
    where the forget accuracy would sit at 0 for most methods and match any large noise) falls
    to ``target`` (the method's);
    then each draw ``seed + 1 ... seed + K`` at that scale is attributed with leave-one-out on
    ``items`` and returned in :func:`keyword_rows`' shape, with the matching's trace.
    """
    kw: dict[str, Any] = {"fmt": fmt}
    if max_batch_tokens is not None:
        kw["max_batch_tokens"] = max_batch_tokens
    try:
        match = match_noise(original, measure, target, hi=settings.null_max_scale, seed=seed)
    except ConfigError as exc:
        return {"match": None, "draws": [], "message": str(exc)}
    draws = []
    for k in range(settings.null_draws):
        null = noise_model(original, match["scale"], seed=seed + 1 + k)
        after = attribute(null, list(items), method="loo", group="forget", **kw)
        draws.append(keyword_rows(before, after, keys))
        del null
        if progress is not None:
            progress()
    return {"match": match, "draws": draws, "message": None}


__all__ = [
    "PresenceSettings",
    "answer_space",
    "calibrate",
    "chance_hits",
    "chance_levels",
    "usable_probes",
    "keep_formats",
    "keyword_rows",
    "null_keyword_rows",
    "positive_control_model",
    "presence_calls",
    "probe_model",
]
