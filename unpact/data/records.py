"""Typed records for the three benchmark shapes, and a split that holds them.

* :class:`QAItem` (TOFU-shaped): question, answer, optional paraphrased answer,
  perturbed (wrong) answers and a paraphrased question;
* :class:`MCItem` (WMDP-shaped): question, choices, index of the right choice;
* :class:`TextItem` (MUSE-shaped): a verbatim passage as prompt + continuation
  (a raw passage has an empty prompt).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from unpact.errors import DataError, InputError


@dataclass(frozen=True)
class QAItem:
    """A question with its answer (TOFU's ``question``/``answer`` fields)."""

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "qa"


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice question (WMDP's ``question``/``choices``/``answer`` fields)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "mc"

    @property
    def answer_text(self) -> str:
        return self.choices[self.answer]


@dataclass(frozen=True)
class TextItem:
    """A verbatim passage: ``prompt`` then ``continuation`` (MUSE's ``prompt``/``gt``; raw ``text``)."""

    prompt: str
    continuation: str
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "text"

    @property
    def text(self) -> str:
        return self.prompt + self.continuation


Item = QAItem | MCItem | TextItem


#: evaluation styles: which reference defines the metrics of a split
STYLES = ("tofu", "muse", "wmdp")
#: a split's role in TOFU's sense (the truth ratio of a forget split is scored the other way round)
ROLES = ("forget", "retain", "other")


@dataclass
class Benchmark(Sequence):
    """One split of a benchmark: a list of records plus where they came from, and what it is.

    ``style`` (one of :data:`STYLES`: which reference defines its metrics), ``role`` (one of
    :data:`ROLES`) and ``embedded`` (a split of the embedded world, whose answers are one short
    line) are declared by the loader that knows the benchmark
    (:func:`unpact.data.load_benchmark`); None where nothing declared them (a split built by
    hand, a user's file of an unknown benchmark): then :func:`style_of`, :func:`role_of` and
    :func:`is_embedded` fall back on the names.

    Example:
        >>> bench = Benchmark("demo", "forget", [QAItem("Who?", "Ana")], style="tofu", role="forget")
        >>> len(bench), bench[0].answer, bench[:1].role
        (1, 'Ana', 'forget')
    """

    name: str
    split: str
    items: list[Item]
    source: str | None = None
    style: str | None = None
    role: str | None = None
    embedded: bool | None = None

    def __post_init__(self) -> None:
        if self.style is not None and self.style not in STYLES:
            raise DataError(f"benchmark {self.name!r}: unknown style {self.style!r}; use one of {', '.join(STYLES)}")
        if self.role is not None and self.role not in ROLES:
            raise DataError(
                f"benchmark {self.name!r} split {self.split!r}: unknown role {self.role!r}; "
                f"use one of {', '.join(ROLES)}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return replace(self, items=self.items[i])
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def style_of(benchmark: Any) -> str:
    """Which reference defines the metrics of ``benchmark``: its declared ``style``.

    Where none is declared (a :class:`Benchmark` built by hand or from a user's file of an
    unknown benchmark, which cannot declare one) the benchmark's name decides: ``"muse"`` or
    ``"wmdp"`` when it holds that word, else ``"tofu"`` (also for a plain list of items).

    Example:
        >>> style_of(Benchmark("my-muse-copy", "forget", [])), style_of([])
        ('muse', 'tofu')
    """
    declared = getattr(benchmark, "style", None)
    if declared is not None:
        return declared
    name = str(getattr(benchmark, "name", "") or "").lower()
    return "muse" if "muse" in name else "wmdp" if "wmdp" in name else "tofu"


def role_of(benchmark: Any, name: str | None = None) -> str:
    """``"forget"``, ``"retain"`` or ``"other"``: the declared ``role`` of ``benchmark``.

    Where none is declared, the split name says it (``forget`` or ``retain`` in it), else
    ``name``, the group a plain list of items stands under (the main job's groups).

    Example:
        >>> role_of(Benchmark("mine", "my_forget_set", [])), role_of([], "retain")
        ('forget', 'retain')
    """
    declared = getattr(benchmark, "role", None)
    if declared is not None:
        return declared
    for label in (getattr(benchmark, "split", None), name):
        label = str(label or "").lower()
        if "forget" in label:
            return "forget"
        if "retain" in label:
            return "retain"
    return "other"


def is_embedded(benchmark: Any) -> bool:
    """Whether ``benchmark`` is a split of the embedded world: its declared ``embedded``; where
    none is declared, whether its name starts with ``embedded:`` (a plain list: False)."""
    declared = getattr(benchmark, "embedded", None)
    if declared is not None:
        return bool(declared)
    return str(getattr(benchmark, "name", "") or "").startswith("embedded:")


def question_answer(item: Any, i: int, what: str = "this") -> tuple[str, str, str]:
    """``(id, question, answer)`` of a QA item, an MC item (its right choice's text) or a
    ``(question, answer)`` pair: the one place that dispatches on the item type for the
    callers that need a question and its answer (emphasis, attacks). ``i`` is the id of an
    item without one; ``what`` names the caller in the error.

    Example:
        >>> question_answer(MCItem("2 + 2?", ["3", "4"], 1, id="m"), 0)
        ('m', '2 + 2?', '4')
        >>> question_answer(("Where?", "Lima"), 7)
        ('7', 'Where?', 'Lima')
    """
    iid = str(item.id) if getattr(item, "id", None) is not None else str(i)
    if isinstance(item, QAItem):
        return iid, item.question, item.answer
    if isinstance(item, MCItem):
        return iid, item.question, item.answer_text
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return iid, item[0], item[1]
    raise InputError(
        f"item {iid!r}: {what} needs question/answer items (QAItem, MCItem or (question, answer)), "
        f"got {type(item).__name__}"
    )


def spread_sample(items: Iterable, k: int | None) -> list:
    """``k`` items evenly spaced over ``items`` (deterministic); all of them when ``k`` is
    None or there are at most ``k``.

    Example:
        >>> spread_sample(range(10), 3)
        [0, 3, 6]
    """
    items = list(items)
    if k is None or len(items) <= k:
        return items
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]
