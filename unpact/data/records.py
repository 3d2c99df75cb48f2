"""Typed records for the three benchmark shapes, and a split that holds them.

* :class:`QAItem` (TOFU-shaped): question, answer, optional paraphrased answer,
  perturbed (wrong) answers and a paraphrased question;
* :class:`MCItem` (WMDP-shaped): question, choices, index of the right choice;
* :class:`TextItem` (MUSE-shaped): a verbatim passage as prompt + continuation
  (a raw passage has an empty prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence, Union


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


Item = Union[QAItem, MCItem, TextItem]


@dataclass
class Benchmark(Sequence):
    """One split of a benchmark: a list of records plus where they came from.

    Example:
        >>> bench = Benchmark("demo", "forget", [QAItem("Who?", "Ana")])
        >>> len(bench), bench[0].answer
        (1, 'Ana')
    """

    name: str
    split: str
    items: list[Item]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Benchmark(self.name, self.split, self.items[i], self.source)
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def kinds(self) -> set[str]:
        return {it.kind for it in self.items}

    def of_kind(self, kind: str) -> list[Item]:
        return [it for it in self.items if it.kind == kind]


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
