"""The typed result of :func:`unpact.emphasis.recover`: :class:`RecoveryTable`.

A table holds, for one unlearned model, the plain answers (:class:`Baseline`), one
:class:`RecoveryRow` per emphasis setting (every prompt rewrite and every activation
setting; each with its forget numbers, one :class:`ControlOutcome` per control set and the
collapse flag), the best setting of each kind, and the answers per item
(:class:`RecoveryItem`). ``to_dict()`` is plain JSON (the layout ``results.json`` has always
had under ``methods.<method>.recovery``) and ``RecoveryTable.from_dict(d)`` gives the same
table back; :func:`render_table` prints it for the command line.

Example:
    >>> row = RecoveryRow(kind="prompt", template="quote", forget_rate=0.5, n_recovered=1, n_forgotten=2,
    ...                   controls={"retain": ControlOutcome(accuracy=1.0, baseline_accuracy=1.0, drop=0.0)})
    >>> t = RecoveryTable(n_forget=2, n_forgotten=2, prompt={"quote": row})
    >>> t.prompt_best_setting, t.prompt_best, t.prompt_collapse = best_setting(t.prompt)
    >>> t.best("prompt").name, t.best("prompt").rate, t.best("prompt").row.n_recovered
    ('quote', 0.5, 1)
    >>> RecoveryTable.from_dict(t.to_dict()) == t
    True
    >>> t.to_dict()["prompt"]["quote"]["retain_accuracy"]  # the flat per-control keys of the JSON layout
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from unpact import figures
from unpact.emphasis.activation import ActivationEmphasis
from unpact.errors import InputError


@dataclass
class ControlOutcome:
    """One control set under one emphasis setting, against its plain run.

    Attributes:
        accuracy: share of the control items right under the emphasis.
        baseline_accuracy: share right plainly.
        drop: ``baseline_accuracy - accuracy`` (None without items); above the table's
            ``collapse_margin`` the setting collapses.
        recovered: control items wrong plainly and right under the emphasis (on holdout items,
            which no model ever knew, anything above 0 is guessing).
        delta_logprob: mean change of the answers' log-prob.
    """

    accuracy: float | None = None
    baseline_accuracy: float | None = None
    drop: float | None = None
    recovered: int = 0
    delta_logprob: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "drop": self.drop,
            "recovered": self.recovered,
            "delta_logprob": self.delta_logprob,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ControlOutcome:
        return cls(
            d.get("accuracy"),
            d.get("baseline_accuracy"),
            d.get("drop"),
            int(d.get("recovered") or 0),
            d.get("delta_logprob"),
        )


@dataclass
class RecoveryRow:
    """One emphasis setting: a prompt rewrite (``kind="prompt"``, ``template``) or an activation
    setting (``emphasis``; ``kind`` is its kind, ``noop`` when its factor is 1), and what it did.

    Attributes:
        forget_rate: recovered / forgotten forget items (None when none was forgotten).
        n_recovered, n_forgotten: the rate's numerator and denominator.
        forget_accuracy, forget_rouge: forget accuracy and mean ROUGE-L recall under the setting.
        delta_logprob: mean change of the forget answers' log-prob (teacher forcing).
        recovered_ids: ids of the recovered forget items.
        controls: control name -> :class:`ControlOutcome`.
        collapse: a control's accuracy fell by more than the margin (the rate does not count).
    """

    kind: str
    template: str | None = None
    emphasis: ActivationEmphasis | None = None
    noop: bool = False
    forget_rate: float | None = None
    n_recovered: int = 0
    n_forgotten: int = 0
    forget_accuracy: float | None = None
    forget_rouge: float | None = None
    delta_logprob: float | None = None
    recovered_ids: list[str] = field(default_factory=list)
    controls: dict[str, ControlOutcome] = field(default_factory=dict)
    collapse: bool = False

    @property
    def route(self) -> str:
        """``"prompt"`` or ``"activation"``."""
        return "prompt" if self.emphasis is None else "activation"

    @property
    def name(self) -> str:
        """The setting's name: the template, or the activation setting's name (``attention x4 @ all``)."""
        return str(self.template) if self.emphasis is None else self.emphasis.name

    def to_dict(self) -> dict[str, Any]:
        if self.emphasis is None:
            d: dict[str, Any] = {"kind": self.kind, "template": self.template}
        else:
            d = {**self.emphasis.to_dict(), "noop": self.noop}
        d.update(
            {
                "forget_rate": self.forget_rate,
                "n_recovered": self.n_recovered,
                "n_forgotten": self.n_forgotten,
                "forget_accuracy": self.forget_accuracy,
                "forget_rouge": self.forget_rouge,
                "delta_logprob": self.delta_logprob,
                "recovered_ids": list(self.recovered_ids),
            }
        )
        for name, c in self.controls.items():  # flat copies, for readers of the JSON layout
            d[f"{name}_accuracy"] = c.accuracy
            d[f"{name}_recovered"] = c.recovered
        if "retain" in self.controls:
            d["retain_rate"] = self.controls["retain"].accuracy
        d["controls"] = {name: c.to_dict() for name, c in self.controls.items()}
        d["collapse"] = self.collapse
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecoveryRow:
        if d.get("kind") == "prompt":
            setting: dict[str, Any] = {"kind": "prompt", "template": d.get("template")}
        else:
            layers = d.get("layers", "all")
            heads = d.get("heads")
            emph = ActivationEmphasis(
                d["kind"],
                float(d["factor"]),
                layers if isinstance(layers, str) else tuple(layers),
                None if heads is None else tuple(heads),
                d.get("site", "resid_post"),
            )
            setting = {"kind": emph.kind, "emphasis": emph, "noop": bool(d.get("noop", emph.factor == 1))}
        return cls(
            **setting,
            forget_rate=d.get("forget_rate"),
            n_recovered=int(d.get("n_recovered") or 0),
            n_forgotten=int(d.get("n_forgotten") or 0),
            forget_accuracy=d.get("forget_accuracy"),
            forget_rouge=d.get("forget_rouge"),
            delta_logprob=d.get("delta_logprob"),
            recovered_ids=[str(i) for i in d.get("recovered_ids") or []],
            controls={k: ControlOutcome.from_dict(v) for k, v in (d.get("controls") or {}).items()},
            collapse=bool(d.get("collapse")),
        )


@dataclass
class ControlBaseline:
    """A control set without emphasis: its accuracy, mean ROUGE-L recall and size."""

    accuracy: float | None = None
    rouge: float | None = None
    n: int = 0


@dataclass
class Baseline:
    """The unlearned model's plain answers (and the original model's, when it was given)."""

    forget_accuracy: float | None = None
    forget_rouge: float | None = None
    forget_logprob: float | None = None
    original_forget_accuracy: float | None = None
    original_forget_rouge: float | None = None
    original_forget_logprob: float | None = None
    controls: dict[str, ControlBaseline] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "forget_accuracy": self.forget_accuracy,
            "forget_rouge": self.forget_rouge,
            "forget_logprob": self.forget_logprob,
            "original_forget_accuracy": self.original_forget_accuracy,
            "original_forget_rouge": self.original_forget_rouge,
            "original_forget_logprob": self.original_forget_logprob,
            "controls": {g: {"accuracy": c.accuracy, "rouge": c.rouge, "n": c.n} for g, c in self.controls.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Baseline:
        return cls(
            d.get("forget_accuracy"),
            d.get("forget_rouge"),
            d.get("forget_logprob"),
            d.get("original_forget_accuracy"),
            d.get("original_forget_rouge"),
            d.get("original_forget_logprob"),
            {
                g: ControlBaseline(c.get("accuracy"), c.get("rouge"), int(c.get("n") or 0))
                for g, c in (d.get("controls") or {}).items()
            },
        )


@dataclass
class EmphasisItem:
    """An item ready for emphasis: its keywords and their positions in the original prompt."""

    id: str
    question: str
    answer: str
    keywords: list[str]
    positions: list[int]
    prompt: str
    target: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecoveryItem(EmphasisItem):
    """One forget item of a table: the :class:`EmphasisItem`, its plain answer, the original
    model's answer and the answers under each kind's best setting (None where not measured)."""

    baseline_answer: str = ""
    baseline_rouge: float = 0.0
    baseline_logprob: float = 0.0
    original_answer: str | None = None
    original_rouge: float | None = None
    original_logprob: float | None = None
    prompt_best_answer: str | None = None
    activation_best_answer: str | None = None

    _OPTIONAL = (
        "original_answer",
        "original_rouge",
        "original_logprob",
        "prompt_best_answer",
        "activation_best_answer",
    )

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        for k in self._OPTIONAL:  # absent, as before, where not measured
            if d[k] is None:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecoveryItem:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d or k in cls._OPTIONAL})


class BestSetting(NamedTuple):
    """The best setting of one kind of emphasis (see :meth:`RecoveryTable.best`)."""

    name: str | None
    rate: float | None
    collapse: bool
    row: RecoveryRow | None


def best_setting(rows: Mapping[str, RecoveryRow]) -> tuple[str | None, float | None, bool]:
    """``(name, rate, collapse)`` of the best setting: highest forget rate among settings whose
    controls held (ties: larger log-prob gain); if every setting collapsed, the best of those."""

    def key(item):
        _n, r = item
        return (
            r.forget_rate if r.forget_rate is not None else -1.0,
            r.delta_logprob if r.delta_logprob is not None else -math.inf,
        )

    valid = [(n, r) for n, r in rows.items() if not r.collapse and r.forget_rate is not None]
    pool = valid or [(n, r) for n, r in rows.items() if r.forget_rate is not None]
    if not pool:
        return None, None, False
    n, r = max(pool, key=key)
    return n, r.forget_rate, bool(r.collapse)


@dataclass
class RecoveryTable:
    """:func:`unpact.emphasis.recover`'s result (see the module docstring); it shows itself as HTML
    in a notebook (``to_html()``: the baseline, every prompt rewrite, the activation sweep as a
    factor x layer-set map of the recovery rate, a cross where a control collapsed, and the answers).

    Attributes:
        method: the unlearning method's name (as the caller gave it).
        config: the :class:`~unpact.emphasis.RecoveryConfig` it was made with, as a plain dict.
        keywords_source: ``"keytokens"`` (the original's KeyTokens) or ``"given"``.
        n_forget, n_forgotten: forget items, and those wrong plainly (below the threshold).
        n_original_known, n_forgotten_known: of them, those the original model answers right (None
            without the original).
        baseline: :class:`Baseline`.
        prompt, activation: setting name -> :class:`RecoveryRow`.
        prompt_best, prompt_best_setting, prompt_collapse (and ``activation_*``): each kind's best
            setting (:func:`best_setting`); :meth:`best` gives them with the row.
        items: :class:`RecoveryItem` per forget item.
        rewrite_attributions: the main job's attributions of the best rewrite on the unlearned
            model (the report's heatmaps; None outside the main job).
        extra: other top-level keys (``unpact recover --out`` records the models and the benchmark).
    """

    method: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    keywords_source: str = "keytokens"
    n_forget: int = 0
    n_forgotten: int = 0
    n_original_known: int | None = None
    n_forgotten_known: int | None = None
    baseline: Baseline = field(default_factory=Baseline)
    prompt: dict[str, RecoveryRow] = field(default_factory=dict)
    activation: dict[str, RecoveryRow] = field(default_factory=dict)
    prompt_best: float | None = None
    prompt_best_setting: str | None = None
    prompt_collapse: bool = False
    activation_best: float | None = None
    activation_best_setting: str | None = None
    activation_collapse: bool = False
    items: list[RecoveryItem] = field(default_factory=list)
    rewrite_attributions: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    #: the keys every table's JSON holds
    SECTIONS = (
        "method",
        "config",
        "keywords_source",
        "n_forget",
        "n_forgotten",
        "n_original_known",
        "n_forgotten_known",
        "baseline",
        "prompt",
        "activation",
        "prompt_best",
        "prompt_best_setting",
        "prompt_collapse",
        "activation_best",
        "activation_best_setting",
        "activation_collapse",
        "items",
    )

    @property
    def threshold(self) -> float | None:
        """The ROUGE-L recall at or above which an answer counted as right."""
        return self.config.get("threshold")

    @property
    def collapse_margin(self) -> float | None:
        """The control accuracy drop above which a setting collapsed (``control_margin`` in tables
        written before the name was unified)."""
        return self.config.get("collapse_margin", self.config.get("control_margin"))

    @property
    def control_names(self) -> list[str]:
        """The control sets, in order."""
        return list(self.baseline.controls)

    def rows(self) -> list[RecoveryRow]:
        """Every setting's row: the prompt rewrites, then the activation settings."""
        return [*self.prompt.values(), *self.activation.values()]

    def best(self, kind: str) -> BestSetting:
        """The best ``"prompt"`` or ``"activation"`` setting: its name, rate, collapse flag and row."""
        if kind not in ("prompt", "activation"):
            raise InputError(f"unknown emphasis route {kind!r}; known: prompt, activation")
        name = getattr(self, f"{kind}_best_setting")
        rows = getattr(self, kind)
        return BestSetting(
            name,
            getattr(self, f"{kind}_best"),
            bool(getattr(self, f"{kind}_collapse")),
            rows.get(name) if name is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, in the layout results.json has always had."""
        d: dict[str, Any] = {
            "method": self.method,
            "config": dict(self.config),
            "keywords_source": self.keywords_source,
            "n_forget": self.n_forget,
            "n_forgotten": self.n_forgotten,
            "n_original_known": self.n_original_known,
            "n_forgotten_known": self.n_forgotten_known,
            "baseline": self.baseline.to_dict(),
            "prompt": {n: r.to_dict() for n, r in self.prompt.items()},
            "activation": {n: r.to_dict() for n, r in self.activation.items()},
            "prompt_best": self.prompt_best,
            "prompt_best_setting": self.prompt_best_setting,
            "prompt_collapse": self.prompt_collapse,
            "activation_best": self.activation_best,
            "activation_best_setting": self.activation_best_setting,
            "activation_collapse": self.activation_collapse,
            "items": [it.to_dict() for it in self.items],
        }
        if self.rewrite_attributions is not None:
            d["rewrite_attributions"] = list(self.rewrite_attributions)
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecoveryTable:
        """Inverse of :meth:`to_dict`; a dict lacking a section is an error that names it."""
        missing = [k for k in cls.SECTIONS if k not in d]
        if missing:
            raise InputError(f"not a recovery table: it lacks {', '.join(missing)}")
        known = set(cls.SECTIONS) | {"rewrite_attributions"}
        return cls(
            method=d["method"],
            config=dict(d["config"] or {}),
            keywords_source=d["keywords_source"],
            n_forget=d["n_forget"],
            n_forgotten=d["n_forgotten"],
            n_original_known=d["n_original_known"],
            n_forgotten_known=d["n_forgotten_known"],
            baseline=Baseline.from_dict(d["baseline"] or {}),
            prompt={n: RecoveryRow.from_dict(r) for n, r in (d["prompt"] or {}).items()},
            activation={n: RecoveryRow.from_dict(r) for n, r in (d["activation"] or {}).items()},
            prompt_best=d["prompt_best"],
            prompt_best_setting=d["prompt_best_setting"],
            prompt_collapse=bool(d["prompt_collapse"]),
            activation_best=d["activation_best"],
            activation_best_setting=d["activation_best_setting"],
            activation_collapse=bool(d["activation_collapse"]),
            items=[RecoveryItem.from_dict(it) for it in d["items"] or []],
            rewrite_attributions=d.get("rewrite_attributions"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_html(self) -> str:
        return figures.fragment(figures.recovery_html(self))

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:  # short: the rows and items are in to_dict()
        return (
            f"RecoveryTable(method={self.method!r}, n_forget={self.n_forget}, n_forgotten={self.n_forgotten}, "
            f"prompt_best={self.prompt_best_setting!r}: {self.prompt_best}, "
            f"activation_best={self.activation_best_setting!r}: {self.activation_best}, "
            f"settings={len(self.prompt)} + {len(self.activation)})"
        )


# ------------------------------------------------------------------ rendering


def _pct(x) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}%"


def _num(x, d: int = 3) -> str:
    return "-" if x is None else f"{x:+.{d}f}"


def render_table(table: RecoveryTable) -> str:
    """A plain-text rendering of :func:`~unpact.emphasis.recover`'s table (for the command line)."""
    base = table.baseline
    ctl_names = table.control_names
    lines = []
    title = f"Emphasis recovery{' — ' + table.method if table.method else ''}"
    lines += [title, "=" * len(title)]
    lines.append(
        f"forget items: {table.n_forget}, forgotten (ROUGE-L recall < {table.threshold}): "
        f"{table.n_forgotten}"
        + (f", known by the original model: {table.n_original_known}" if table.n_original_known is not None else "")
    )
    b = [f"forget accuracy {_pct(base.forget_accuracy).strip()}"]
    if base.original_forget_accuracy is not None:
        b.append(f"original model {_pct(base.original_forget_accuracy).strip()}")
    for c in ctl_names:
        b.append(f"{c} accuracy {_pct(base.controls[c].accuracy).strip()} (n={base.controls[c].n})")
    lines.append("without emphasis: " + ", ".join(b))
    lines.append(
        f"keywords: {table.keywords_source}; collapse = a control's accuracy falls by more than "
        f"{100 * (table.collapse_margin or 0):.0f} points"
    )
    head = ["setting", "recovered", "rate", "Δ logprob"] + [f"{c} acc" for c in ctl_names] + ["collapse"]
    for kind in ("prompt", "activation"):
        rows: dict[str, RecoveryRow] = getattr(table, kind)
        if not rows:
            continue
        best = table.best(kind)
        body = []
        for name, r in rows.items():
            body.append(
                [
                    ("* " if name == best.name else "  ") + name,
                    f"{r.n_recovered}/{r.n_forgotten}",
                    _pct(r.forget_rate),
                    _num(r.delta_logprob),
                ]
                + [_pct(r.controls[c].accuracy if c in r.controls else None) for c in ctl_names]
                + ["COLLAPSE" if r.collapse else ""]
            )
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines.append("")
        lines.append(
            f"{'prompt rewrites' if kind == 'prompt' else 'activation scaling'} (best: {best.name or '-'}, "
            f"rate {_pct(best.rate).strip()}{', collapsed' if best.collapse else ''})"
        )
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        lines.append("  ".join("-" * w for w in widths))
        for row in body:
            lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    return "\n".join(lines)
