"""Typed records for the three benchmark shapes, and a split that holds them.

* :class:`QAItem` (TOFU-shaped): question, answer, optional paraphrased answer,
  perturbed (wrong) answers and a paraphrased question;
* :class:`MCItem` (WMDP-shaped): question, choices, index of the right choice;
* :class:`TextItem` (MUSE-shaped): a verbatim passage as prompt + continuation
  (a raw passage has an empty prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from unpact.errors import InputError


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
    raise InputError(f"item {iid!r}: {what} needs question/answer items (QAItem, MCItem or (question, answer)), "
                     f"got {type(item).__name__}")


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
