"""In-context attack: a few solved question-answer pairs of the same kind before the question.

Shown a handful of answered questions in the prompt, a model that only learned
to refuse or deflect the plain question may answer again (in-context
"unlearning" is undone by context; e.g. Lynch et al. 2024 and Shi et al. 2024
use few-shot prompts as a probe). The examples come from another set (the retain
set by default, ``pool[source]``), formatted like the asked question, and never
contain the asked item (neither its id nor its question). With ``match_key``
(e.g. ``"attribute"``) examples asking about the same attribute
(``item.meta[match_key]``) are preferred. When the examples, the question and
its answer do not fit the model's context, the examples farthest from the
question are dropped (``info["shots_used"]`` says how many each item got).

Example:
    >>> from unpact.attacks import make_attack
    >>> make_attack("in_context", {"shots": (1, 3)}).settings()[1]["name"]
    'shots=3'
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unpact.attacks.base import Attack, Attacked, question_answer, register_attack
from unpact.errors import ConfigError, InputError
from unpact.scoring import context_length, tokenize


@dataclass
class InContextConfig:
    """In-context settings.

    Attributes:
        shots: numbers of examples swept.
        source: the ``pool`` entry the examples come from.
        match_key: prefer examples whose ``meta[match_key]`` equals the asked item's (None: any).
        separator: text between examples, and between the last example and the question.
    """

    shots: tuple[int, ...] = (3,)
    source: str = "retain"
    match_key: str | None = "attribute"
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        self.shots = tuple(int(s) for s in self.shots)
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"in-context shots must be positive integers, got {self.shots}")


def choose_examples(item, i: int, pool: Sequence, k: int, rng: random.Random, match_key: str | None) -> list:
    """Up to ``k`` examples from ``pool`` for ``item``: never the item itself, same ``meta[match_key]`` first
    (fewer when the pool is smaller; ``info["shots_used"]`` of the attack says how many)."""
    iid, question, _ = question_answer(item, i)
    others = [
        p
        for j, p in enumerate(pool)
        if question_answer(p, j)[1] != question and (getattr(p, "id", None) is None or str(p.id) != iid)
    ]
    if not others:
        raise InputError("in-context: the example pool holds no item other than the asked one; give a larger pool")
    order = others[:]
    rng.shuffle(order)
    if match_key is not None:
        want = (getattr(item, "meta", {}) or {}).get(match_key)
        order.sort(key=lambda p: (getattr(p, "meta", {}) or {}).get(match_key) != want)  # stable: matches first
    return order[:k]


@register_attack
class InContext(Attack):
    """Put ``shots`` solved examples from another set before each question."""

    name = "in_context"
    config_class = InContextConfig
    description = "a few solved question-answer pairs of the same kind placed before the question"

    def settings(self) -> list[dict[str, Any]]:
        return [{"name": f"shots={k}", "shots": k} for k in self.config.shots]

    def apply(self, model, items: Sequence, setting, *, fmt, pool, seed: int = 0) -> Attacked:
        cfg = self.config
        source = list(pool.get(cfg.source) or [])
        if not source:
            raise InputError(f"in-context examples come from pool[{cfg.source!r}]; pass pool={{'{cfg.source}': items}}")
        n_ctx = context_length(model)
        rng = random.Random(seed)
        prompts, shown = [], {}
        for i, it in enumerate(items):
            iid, q, a = question_answer(it, i)
            examples = choose_examples(it, i, source, setting["shots"], rng, cfg.match_key)
            parts = [
                fmt.prompt(eq) + fmt.answer(ea)
                for eq, ea in (question_answer(ex, j)[1:] for j, ex in enumerate(examples))
            ]
            room = None if n_ctx is None else n_ctx - 1 - len(tokenize(model.tokenizer, fmt.answer(a)))
            while (
                parts
                and room is not None
                and len(tokenize(model.tokenizer, cfg.separator.join(parts + [fmt.prompt(q)]))) > room
            ):
                parts.pop(0)
                examples = examples[1:]
            prompts.append(cfg.separator.join(parts + [fmt.prompt(q)]))
            shown[iid] = [question_answer(ex, j)[0] for j, ex in enumerate(examples)]
        return Attacked(
            model,
            prompts,
            list(range(len(items))),
            {"examples": shown, "shots_used": {k: len(v) for k, v in shown.items()}},
        )
