"""Paraphrase attack: ask each forgotten fact in other words.

Unlearning trained on the forget set's exact questions may not generalise to
the same fact asked differently (TOFU ships a ``paraphrased_question`` per
item for this). Items without a paraphrased question are not asked (a set
without any gives an empty row, not an error, so a study on such data goes on).

Example:
    >>> from unpact.attacks import make_attack
    >>> make_attack("paraphrase").settings()
    [{'name': 'paraphrased_question'}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unpact.attacks.base import Attack, Attacked, register_attack
from unpact.data.records import QAItem


@dataclass
class ParaphraseConfig:
    """Paraphrase settings (none yet: the paraphrased question comes with the item)."""


@register_attack
class Paraphrase(Attack):
    """Ask ``item.paraphrased_question`` instead of the question."""

    name = "paraphrase"
    config_class = ParaphraseConfig
    description = "the forget questions' paraphrased forms (TOFU's paraphrased_question)"

    def settings(self) -> list[dict[str, Any]]:
        return [{"name": "paraphrased_question"}]

    def apply(self, model, items: Sequence, setting, *, fmt, pool, seed: int = 0) -> Attacked:
        asked = [
            i
            for i, it in enumerate(items)
            if isinstance(it, QAItem) and it.paraphrased_question and it.paraphrased_question != it.question
        ]
        return Attacked(
            model,
            [fmt.prompt(items[i].paraphrased_question) for i in asked],
            asked,
            {"n_without_paraphrase": len(items) - len(asked)},
        )
