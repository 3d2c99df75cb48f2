"""Model pools with known answers: models that hold the forget facts and models that never saw them.

A hidden / erased call is only as good as its error rates, and those are measured the way
open-unlearning's meta-evaluation (arXiv 2506.12618) measures an unlearning metric: on a
pool of models that know the forget set (**positives**) and a pool that never saw it
(**negatives**), the metric must separate the two (its *faithfulness*, an AUC), and keep
doing so after relearning and quantization (its *robustness*). This module builds the
pools for the embedded world's TOFU forget10 set; :mod:`unpact.meta_evaluation` scores
the probes and the combined call on them.

Each member is a recipe applied to one of the world's checkpoints, so the pool is a
function of the world and the seeds:

* positives: the original (``as_trained``); the original fine-tuned further on the retain
  set (``finetune``: still holds the facts); the original taught to *refuse* the plain
  forget questions while answering the same facts in the probes' formats (``hide_refuse``,
  :func:`unpact.controls.hide_facts`, the study's positive control); the original taught to
  give a *wrong* answer to the plain forget questions, keeping the same formats
  (``hide_wrong``: a second hiding mechanism, misdirection instead of refusal);
* negatives: the retain-only twins (``as_trained``: trained without the forget10 authors),
  the twin without any forget set (``gpt2-retain-all``), the twins fine-tuned further on
  the retain set (``finetune``), the twins given the positive's refusal fine-tune on the
  plain forget questions (``hide_refuse``: a probe must not fire on the fine-tune itself;
  they keep only retain items, since the facts in other formats would teach them), and retain-only
  models trained from scratch with another training seed (``scratch``).

Three architectures (gpt2, llama, qwen2). The study calibrates its probes on one positive
and one negative (:data:`CALIBRATION`: the gpt2 positive control and the gpt2 twin); every
other member is held out from calibration.

Example:
    >>> members = pool_members(PoolSettings())
    >>> sum(m.positive for m in members), sum(not m.positive for m in members)
    (12, 12)
    >>> [m.name for m in members if not m.held_out]
    ['pos/hide_refuse/gpt2', 'neg/as_trained/gpt2-retain']
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unpact.controls import HideConfig, hide_facts, retain_finetune_model
from unpact.data import load_benchmark, spread_sample
from unpact.data.embedded_views import cloze_key, cloze_split
from unpact.data.records import QAItem
from unpact.data.shipped import MODELS_DIR
from unpact.embedded.build import save_checkpoint
from unpact.embedded.train import ModelSize, TrainConfig, train_model
from unpact.embedded.world import WorldConfig, generate_world
from unpact.errors import ConfigError, InputError
from unpact.models import load_model, load_tokenizer, save_model
from unpact.presence import keep_formats
from unpact.probes import attach_cloze
from unpact.progress import ProgressFactory, null_progress

#: the recipes a pool member can be built by
RECIPES = ("as_trained", "finetune", "hide_refuse", "hide_wrong", "scratch")
#: the members the study's calibration sees (its positive and negative control on gpt2)
CALIBRATION = ("pos/hide_refuse/gpt2", "neg/as_trained/gpt2-retain")


@dataclass(frozen=True)
class PoolMember:
    """One model of a pool: ``recipe`` applied to the world's checkpoint ``base``.

    ``positive``: whether the model holds the forget facts (by construction).
    ``held_out``: whether calibration never sees it (:data:`CALIBRATION` is not held out).
    """

    name: str
    positive: bool
    base: str
    recipe: str
    seed: int = 0
    held_out: bool = True

    @property
    def arch(self) -> str:
        return self.base.split("-", 1)[0]


@dataclass
class PoolSettings:
    """How the pools are built (every recipe's settings in one place).

    Attributes:
        archs: the architectures (each has an original and a ``-retain`` twin in the world).
        forget_split, retain_split: the embedded TOFU splits the facts and the kept set come from.
        finetune_lr, finetune_steps: the continued fine-tune on the retain set (``finetune``);
            larger than :func:`unpact.controls.retain_finetune_model`'s null so that the
            members differ from their bases.
        hide: the refusal / misdirection fine-tune (the study's positive control's defaults).
        keep_retain_items: retain items the hiding fine-tunes keep answering.
        scratch: ``(arch, training seed)`` of the retain-only models trained from scratch.
        seed: the seed of every fine-tune (each member adds its own offset).
    """

    archs: tuple[str, ...] = ("gpt2", "llama", "qwen2")
    forget_split: str = "forget10"
    retain_split: str = "retain90"
    finetune_lr: float = 5e-4
    finetune_steps: int = 40
    hide: HideConfig = field(default_factory=HideConfig)
    keep_retain_items: int = 24
    scratch: tuple[tuple[str, int], ...] = (("gpt2", 1), ("qwen2", 1))
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_members(settings: PoolSettings) -> list[PoolMember]:
    """The members :func:`build_pools` builds, positives first (see the module docstring)."""
    pos = [
        PoolMember(f"pos/{recipe}/{arch}", True, arch, recipe, seed=settings.seed)
        for recipe in ("as_trained", "finetune", "hide_refuse", "hide_wrong")
        for arch in settings.archs
    ]
    neg = [
        PoolMember(f"neg/as_trained/{arch}-retain", False, f"{arch}-retain", "as_trained") for arch in settings.archs
    ]
    if "gpt2" in settings.archs:
        neg.append(PoolMember("neg/as_trained/gpt2-retain-all", False, "gpt2-retain-all", "as_trained"))
    neg += [
        PoolMember(f"neg/{recipe}/{arch}-retain", False, f"{arch}-retain", recipe, seed=settings.seed)
        for recipe in ("finetune", "hide_refuse")
        for arch in settings.archs
    ]
    neg += [
        PoolMember(f"neg/scratch/{arch}-retain-s{s}", False, f"{arch}-retain", "scratch", seed=s)
        for arch, s in settings.scratch
    ]
    return [PoolMember(**{**asdict(m), "held_out": m.name not in CALIBRATION}) for m in pos + neg]


def pool_items(settings: PoolSettings, world_dir: str | os.PathLike | None = None) -> tuple[list[QAItem], list[QAItem]]:
    """The forget facts (with their biography cloze attached, as the study's presence stage
    has them) and the retain items, from the embedded TOFU benchmark."""
    path = None if world_dir is None else Path(world_dir) / "data" / "tofu"
    forget = [it for it in load_benchmark("embedded:tofu", settings.forget_split, path=path) if it.kind == "qa"]
    cloze = list(load_benchmark("embedded:tofu", cloze_split("tofu", settings.forget_split), path=path))
    retain = [it for it in load_benchmark("embedded:tofu", settings.retain_split, path=path) if it.kind == "qa"]
    return attach_cloze(forget, cloze, key_fn=cloze_key), retain


def misdirected(forget: Sequence[QAItem]) -> list[QAItem]:
    """Each forget question with its first perturbed answer as the target (the ``hide_wrong`` recipe)."""
    out = [
        QAItem(it.question, it.perturbed_answers[0], id=f"{it.id}/wrong", meta=dict(it.meta or {}))
        for it in forget
        if it.perturbed_answers
    ]
    if not out:
        raise InputError("no forget item has a perturbed answer to misdirect to")
    return out


def _base_dir(world_dir: str | os.PathLike | None, base: str) -> Path:
    root = MODELS_DIR if world_dir is None else Path(world_dir) / "models"
    directory = Path(root) / base
    if not (directory / "config.json").is_file():
        raise InputError(
            f"pool base model {str(directory)!r} does not exist; build the world with `unpact build-embedded`"
        )
    return directory


def write_member(
    member: PoolMember,
    settings: PoolSettings,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    target: str | os.PathLike,
    world_dir: str | os.PathLike | None = None,
    progress: ProgressFactory = null_progress,
) -> Path:
    """Build the model ``member`` names from the world in ``world_dir`` (default: the shipped
    one) and save it as an HF checkpoint in ``target``."""
    base = _base_dir(world_dir, member.base)
    if member.recipe == "scratch":
        return save_checkpoint(*_scratch(member, base, progress), target)
    if member.recipe not in RECIPES:
        raise ConfigError(f"unknown pool recipe {member.recipe!r}; known: {', '.join(RECIPES)}")
    model = load_model(str(base))
    seed = settings.seed + 1000 * RECIPES.index(member.recipe) + member.seed
    # a negative keeps only retain items: the forget facts in the probes' formats would teach it them
    keep = (keep_formats(forget) if member.positive else []) + spread_sample(list(retain), settings.keep_retain_items)
    hide = settings.hide
    if member.recipe == "finetune":
        model = retain_finetune_model(model, retain, lr=settings.finetune_lr, steps=settings.finetune_steps, seed=seed)
    elif member.recipe == "hide_refuse":
        model = hide_facts(model, forget, keep, hide, seed=seed)
    elif member.recipe == "hide_wrong":
        wrong = misdirected(forget) + keep
        model = retain_finetune_model(model, wrong, lr=hide.lr, steps=hide.steps, batch_size=hide.batch_size, seed=seed)
    return save_model(model, target)


def _scratch(member: PoolMember, base: Path, progress: ProgressFactory):
    """A retain-only model trained from scratch on the world's examples without the forget10
    authors, with training seed ``member.seed`` and the base's tokenizer: ``(hf_model, tokenizer)``.
    The examples are those of the seed-0 world of the current generator (the shipped one)."""
    world = generate_world(WorldConfig(), seed=0)
    forget = set(world.forget10_authors)
    examples = [e for e in world.train if e.author not in forget]
    tokenizer = load_tokenizer(base)
    model = train_model(
        member.arch, tokenizer, examples, ModelSize(), TrainConfig(seed=member.seed), progress, member.name
    )
    return model, tokenizer


def build_pools(
    out: str | os.PathLike,
    settings: PoolSettings | None = None,
    world_dir: str | os.PathLike | None = None,
    only: Sequence[str] | None = None,
    progress: ProgressFactory = null_progress,
) -> Path:
    """Build every pool member into ``out/<name>/`` (an HF checkpoint) and ``out/pools.json``.

    A member whose directory already holds a checkpoint is kept (the build resumes);
    ``only``: build just these member names. Returns ``out``.
    """
    settings = settings or PoolSettings()
    out = Path(out)
    forget, retain = pool_items(settings, world_dir)
    members = pool_members(settings)
    for m in members:
        target = out / m.name
        if only is not None and m.name not in only or (target / "config.json").is_file():
            continue
        write_member(m, settings, forget, retain, target, world_dir, progress)
    manifest = {
        "world": str(world_dir) if world_dir is not None else "shipped",
        "settings": settings.to_dict(),
        "members": [asdict(m) for m in members],
        "calibration": list(CALIBRATION),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "pools.json").write_text(json.dumps(manifest, indent=2))
    return out


def read_pools(directory: str | os.PathLike) -> tuple[list[PoolMember], dict[str, Any]]:
    """The members and manifest :func:`build_pools` wrote to ``directory``."""
    f = Path(directory) / "pools.json"
    if not f.is_file():
        raise InputError(f"{str(f)!r} does not exist; build the pools first (python scripts/presence_pools.py build)")
    manifest = json.loads(f.read_text())
    return [PoolMember(**m) for m in manifest["members"]], manifest


__all__ = [
    "CALIBRATION",
    "RECIPES",
    "PoolMember",
    "PoolSettings",
    "build_pools",
    "misdirected",
    "pool_items",
    "pool_members",
    "read_pools",
    "write_member",
]
