"""Prompt attribution and contribution tracking (the paper's core instrument).

One entry point, one result type:

    attribute(model, items, method="loo", fmt=None, **options) -> Attribution | list[Attribution]

Methods (:data:`ATTRIBUTION_METHODS`):

* ``"loo"`` - leave-one-out, C_i = LP(x, y) - LP(x without x_i, y) (the paper's measure);
  ``mode="baseline"`` replaces x_i by a baseline token instead (captum's convention);
* ``"integrated_gradients"`` (``"ig"``) - IG on the token embeddings through ``hook_embed``,
  refined on nested quadrature points within a per-item pass budget, with the completeness gap,
  the points and passes used and whether the budget stopped it in ``extras``;
* ``"heads"`` - per layer/head/source-token direct and first-order total contributions.

:func:`key_tokens` applies the paper's KeyTokens rule to a result; :func:`compare`
tracks contributions between two models (original vs unlearned).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact import load_model                                          # doctest: +SKIP
    >>> from unpact.attribution import attribute, key_tokens
    >>> model = load_model("embedded:gpt2")                                    # doctest: +SKIP
    >>> a = attribute(model, ("Question: Where was Ana Lind born?\\nAnswer:", " Lima"))  # doctest: +SKIP
    >>> [a.tokens[i] for i in key_tokens(a)]                                   # doctest: +SKIP
    [' Ana', ' Lind']
"""

from __future__ import annotations

from typing import Any

from unpact.attribution.base import ATTRIBUTION_METHODS, AttributionMethod, get_method, make_method, register
from unpact.attribution.gradients import IGConfig, IntegratedGradients, quadrature
from unpact.attribution.heads import HeadFlow, HeadsConfig
from unpact.attribution.keytokens import KeyTokensConfig, key_tokens
from unpact.attribution.loo import LeaveOneOut, LooConfig
from unpact.attribution.prepare import Prepared, prepare_items
from unpact.attribution.result import Attribution
from unpact.attribution.tracking import Comparison, TokenDelta, compare
from unpact.progress import ProgressFactory, null_progress
from unpact.protocols import Model

__all__ = [
    "ATTRIBUTION_METHODS",
    "Attribution",
    "AttributionMethod",
    "Comparison",
    "HeadFlow",
    "HeadsConfig",
    "IGConfig",
    "IntegratedGradients",
    "KeyTokensConfig",
    "LeaveOneOut",
    "LooConfig",
    "Prepared",
    "TokenDelta",
    "attribute",
    "compare",
    "get_method",
    "key_tokens",
    "make_method",
    "prepare_items",
    "quadrature",
    "register",
]


def attribute(
    model: Model,
    items: Any,
    method: str = "loo",
    *,
    fmt=None,
    truncate: bool = False,
    group: str | None = None,
    progress: ProgressFactory = null_progress,
    **options: Any,
) -> Attribution | list[Attribution]:
    """Attribute each item's answer log-prob LP(x, y) to its prompt tokens.

    Args:
        model: a TransformerLens bridge from :func:`unpact.load_model`.
        items: one item or a list: ``QAItem``/``MCItem``/``TextItem`` records or
            ``(prompt, answer)`` string pairs. One item gives one result, a list a list.
        method: a name in :data:`ATTRIBUTION_METHODS` (``"loo"``, ``"integrated_gradients"``, ``"heads"``).
        fmt: prompt format for records (``"plain"``, a :class:`~unpact.data.PromptFormat`,
            or :func:`~unpact.data.chat_format`); pairs are used as given.
        truncate: drop prompt tokens from the left when prompt + answer exceed the
            context (otherwise an :class:`~unpact.errors.InputError` says by how much).
        group: the items' group (``"forget"``, ``"retain"``, ``"general"``) for
            :func:`compare`; default: each record's ``meta["group"]`` or ``meta["split"]``.
        progress: progress factory (the CLI passes ``tqdm_progress``).
        options: the method's options (its ``config_class`` dataclass: ``LooConfig``, ``IGConfig``, ``HeadsConfig``).

    Raises:
        ConfigError: unknown method or option. InputError: empty prompt/answer, an
        answer that tokenises to nothing, or an item longer than the context.
    """
    runner = make_method(method, **options)
    prepared, single = prepare_items(model, items, fmt=fmt, truncate=truncate, group=group)
    results = runner.run(model, prepared, progress=progress)
    return results[0] if single else results
