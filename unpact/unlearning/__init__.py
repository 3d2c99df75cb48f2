"""Unlearning methods as weight edits: one class per method behind a registry.

All methods are called the same way (+SKIP lines need a model, data or files, so the doctest run skips them):

    >>> from unpact.unlearning import unlearn, METHODS
    >>> result = unlearn(model, "npo_gdr", forget, retain, {"steps": 10}, seed=0)   # doctest: +SKIP
    >>> unpact.save_model(result.model, "out/npo_gdr")                              # doctest: +SKIP

The paper's six: ``ga_gdr``, ``ga_klr``, ``npo_gdr``, ``npo_klr``, ``task_vector``,
``rmu``; beyond them ``ga``, ``npo``, ``simnpo``, ``idk``. Each method's
hyperparameters and defaults are one dataclass (``get_method(name).config_class``).
"""

from __future__ import annotations

from collections.abc import Sequence

from unpact.errors import ConfigError
from unpact.progress import ProgressFactory, null_progress
from unpact.unlearning.base import (
    PRESETS,
    UnlearnConfig,
    UnlearningMethod,
    UnlearnResult,
    copy_model,
    make_config,
    resolve_preset,
    train,
)
from unpact.unlearning.registry import METHODS, PAPER_METHODS, get_method, make_method, register

# Importing the method modules registers them.
from unpact.unlearning.ga import GAConfig, GAGDRConfig, GAKLRConfig  # noqa: E402
from unpact.unlearning.idk import IDKConfig  # noqa: E402
from unpact.unlearning.npo import NPOConfig, NPOGDRConfig, NPOKLRConfig  # noqa: E402
from unpact.unlearning.rmu import RMUConfig  # noqa: E402
from unpact.unlearning.simnpo import SimNPOConfig  # noqa: E402
from unpact.unlearning.task_vector import TaskVectorConfig  # noqa: E402
from unpact.protocols import Model


def unlearn(
    model: Model,
    method: str,
    forget: Sequence,
    retain: Sequence | None = None,
    config: UnlearnConfig | dict | None = None,
    *,
    inplace: bool = False,
    seed: int = 0,
    progress: ProgressFactory = null_progress,
    fmt=None,
) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` with the registered ``method``.

    Args:
        model: a bridge from :func:`unpact.load_model`. Left untouched unless
            ``inplace=True`` (the edits are made on a deep copy).
        method: a registry name (see :data:`METHODS`).
        forget, retain: sequences of :class:`~unpact.data.QAItem`,
            :class:`~unpact.data.MCItem` or :class:`~unpact.data.TextItem` (a
            :class:`~unpact.data.Benchmark` works); formatted with
            :func:`unpact.data.prompt_answer_pair` with ``fmt``.
        config: the method's config dataclass, or a dict of overrides of its defaults;
            its ``preset`` ("auto" by default) picks the embedded-tuned or the reference
            repository's defaults for this model (:func:`~unpact.unlearning.base.resolve_preset`).
        seed: seeds the batch schedule and any random draw; equal seeds give equal weights on CPU.
        progress: a progress factory (the CLI passes ``tqdm_progress``).
        fmt: the items' prompt format (default plain; for a chat model the
            :func:`unpact.data.chat_format` it was fine-tuned in).

    Returns:
        :class:`UnlearnResult` with the edited model, per-step losses and the config used.
        A NaN/inf loss stops the run: ``stopped_early`` is True, ``message`` names the
        step and the last finite loss, and the model holds the last finite weights.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> result = unlearn(model, "ga_gdr", forget, retain, {"steps": 5})   # doctest: +SKIP
        >>> [round(r["loss"], 2) for r in result.losses]                     # doctest: +SKIP
    """
    cls = get_method(method)
    cfg = resolve_preset(make_config(cls.config_class, config), model)
    if cls.retain == "required" and (retain is None or len(retain) == 0):
        raise ConfigError(f"method {cls.name!r} needs a retain set; pass retain=... (e.g. TOFU retain90)")
    target = model if inplace else copy_model(model)
    impl = cls(cfg)
    losses, stopped, message = train(impl, target, forget, retain, seed=seed, progress=progress, fmt=fmt)
    return UnlearnResult(target, losses, cfg, cls.name, stopped, message)


__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "PRESETS",
    "UnlearnConfig",
    "UnlearnResult",
    "UnlearningMethod",
    "get_method",
    "make_method",
    "register",
    "unlearn",
    "GAConfig",
    "GAGDRConfig",
    "GAKLRConfig",
    "NPOConfig",
    "NPOGDRConfig",
    "NPOKLRConfig",
    "SimNPOConfig",
    "TaskVectorConfig",
    "RMUConfig",
    "IDKConfig",
]
