"""Relearning attack: fine-tune a few steps on some data, then ask the rest of the forget set.

The relearning attacks of the unlearning-robustness literature (e.g. Hu et al.
2024, "Jogging the memory of unlearned LLMs through targeted relearning";
Lynch et al. 2024, "Eight methods to evaluate robust unlearning") fine-tune an
unlearned model for a handful of steps on a small, *disjoint* part of the
forget set (or on unrelated public text) and find that the rest of the
forgotten facts come back. A model that really erased the facts has nothing
to relearn them from; one that only hid them is unlocked.

Here the forget items are split by a seeded draw into a *training* part
(``train_fraction`` of them; ``source="forget"``) and an *asked* part; the
asked items are never trained on. With ``group_key`` (e.g. ``"author"``) whole
groups of items (by ``item.meta[group_key]``) fall on one side, so no asked
fact shares its subject with a trained one. ``source="retain"`` trains on
retain items instead (``pool["retain"]``) and asks every forget item.
Fine-tuning is plain NLL on the answers with AdamW, through the same loop as the
unlearning methods (:func:`unpact.unlearning.base.train`), on a copy of the model;
``steps`` x ``lrs`` are swept (each step mark read from one run per learning rate,
as the batch schedule of a shorter run is a prefix of a longer one's).

Example:
    >>> from unpact.attacks import make_attack
    >>> make_attack("relearning", {"steps": (2, 4), "lrs": (1e-4,)}).settings()[1]["name"]
    'lr=0.0001,steps=4'
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unpact.attacks.base import Attack, Attacked, question_answer, register_attack
from unpact.errors import ConfigError, InputError
from unpact.unlearning.base import UnlearnConfig, UnlearningMethod, answer_logprobs_of, copy_model, train
from unpact.unlearning.losses import nll


@dataclass
class RelearningConfig:
    """Relearning settings.

    Attributes:
        source: ``"forget"`` (a disjoint part of the forget set) or ``"retain"`` (``pool["retain"]``).
        train_fraction: share of the forget items trained on when ``source="forget"``.
        group_key: split whole groups of items by ``item.meta[group_key]`` (None: item by item).
        max_train_items: at most this many retain items when ``source="retain"``.
        steps: step marks swept (optimizer steps of plain fine-tuning).
        lrs: learning rates swept.
        batch_size: items per step.
        max_batch_tokens: token budget of one forward+backward pass (None: one pass per step);
            gradients of a step's passes add up, so it changes how the fine-tune runs, not what
            it learns (:class:`~unpact.unlearning.UnlearnConfig`). A study passes its own.
        gradient_checkpointing: recompute activations in the backward pass (less memory).
    """

    source: str = "forget"
    train_fraction: float = 0.5
    group_key: str | None = None
    max_train_items: int = 32
    steps: tuple[int, ...] = (5, 10, 20)
    lrs: tuple[float, ...] = (1e-4, 5e-4)
    batch_size: int = 8
    max_batch_tokens: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("forget", "retain"):
            raise ConfigError(f"relearning source must be 'forget' or 'retain', got {self.source!r}")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"relearning train_fraction must be in (0, 1), got {self.train_fraction}")
        self.steps = tuple(sorted({int(s) for s in self.steps}))
        self.lrs = tuple(float(x) for x in self.lrs)
        if not self.steps or self.steps[0] < 1:
            raise ConfigError(f"relearning steps must be positive integers, got {self.steps}")
        if not self.lrs or min(self.lrs) <= 0:
            raise ConfigError(f"relearning learning rates must be positive, got {self.lrs}")


def split_forget(
    items: Sequence, fraction: float, seed: int, group_key: str | None = None
) -> tuple[list[int], list[int]]:
    """``(train, asked)`` indices: a seeded, disjoint split of ``items`` (by group when ``group_key``)."""
    if len(items) < 2:
        raise InputError(f"relearning on the forget set needs at least 2 items to split, got {len(items)}")
    keys = []
    for i, it in enumerate(items):
        if group_key is None:
            keys.append(i)
        else:
            meta = getattr(it, "meta", {}) or {}
            if group_key not in meta:
                raise InputError(
                    f"item {getattr(it, 'id', i)!r} has no meta[{group_key!r}] to group the relearning split by"
                )
            keys.append(meta[group_key])
    groups = sorted(set(keys), key=str)
    if len(groups) < 2:
        raise InputError(f"relearning needs at least 2 groups to split, got {len(groups)} (group_key={group_key!r})")
    random.Random(seed).shuffle(groups)
    n_train = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    train_groups = set(groups[:n_train])
    train = [i for i, k in enumerate(keys) if k in train_groups]
    asked = [i for i, k in enumerate(keys) if k not in train_groups]
    return train, asked


@register_attack
class Relearning(Attack):
    """Fine-tune on a disjoint part of the forget set (or on retain data), then ask the rest."""

    name = "relearning"
    config_class = RelearningConfig
    description = "a few fine-tuning steps on disjoint forget items (or retain data), then the rest is asked"
    edits_weights = True

    def settings(self) -> list[dict[str, Any]]:
        return [
            {"name": f"lr={lr:g},steps={s}", "lr": lr, "steps": s} for lr in self.config.lrs for s in self.config.steps
        ]

    def _data(self, items: Sequence, pool, seed: int) -> tuple[list, list[int], list[str]]:
        cfg = self.config
        if cfg.source == "forget":
            train, asked = split_forget(items, cfg.train_fraction, seed, cfg.group_key)
            return [items[i] for i in train], asked, [question_answer(items[i], i)[0] for i in train]
        retain = list(pool.get("retain") or [])
        if not retain:
            raise InputError("relearning with source='retain' needs retain items: pass pool={'retain': ...}")
        asked_questions = {question_answer(it, i)[1] for i, it in enumerate(items)}
        rng = random.Random(seed)
        chosen = [r for r in retain if question_answer(r, 0)[1] not in asked_questions]
        rng.shuffle(chosen)
        chosen = chosen[: cfg.max_train_items]
        return chosen, list(range(len(items))), [question_answer(r, i)[0] for i, r in enumerate(chosen)]

    def apply(self, model, items: Sequence, setting, *, fmt, pool, seed: int = 0) -> Attacked:
        train_items, asked, train_ids = self._data(items, pool, seed)
        tuned = copy_model(model)
        cfg = UnlearnConfig(
            lr=setting["lr"],
            steps=setting["steps"],
            batch_size=self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            gradient_checkpointing=self.config.gradient_checkpointing,
        )
        cfg.validate()
        losses, stopped, message = train(fine_tune_method(cfg), tuned, train_items, None, seed=seed, fmt=fmt)
        prompts = [fmt.prompt(question_answer(items[i], i)[1]) for i in asked]
        info = {
            "trained_ids": train_ids,
            "n_trained": len(train_items),
            "source": self.config.source,
            "final_loss": losses[-1]["loss"] if losses else None,
            "stopped_early": stopped,
            "message": message,
        }
        return Attacked(tuned, prompts, asked, info)


class FineTune(UnlearningMethod):
    """Plain NLL on the given items' answers (the relearning step; not an unlearning method)."""

    name = "relearn"

    def loss(self, model, batch):
        _, lp = answer_logprobs_of(model, batch.forget)
        loss = nll(lp, batch.forget.target_mask)
        return loss, {"nll": loss}


def fine_tune_method(cfg) -> FineTune:
    """The relearning step as a method :func:`unpact.unlearning.base.train` runs, with settings ``cfg``."""
    return FineTune(cfg)
