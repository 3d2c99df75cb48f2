"""The method registry: one class per attribution method, one config dataclass each.

Every method takes prepared items (:mod:`unpact.attribution.prepare`) and returns
one :class:`~unpact.attribution.result.Attribution` per item, in order. Add a
method by subclassing :class:`AttributionMethod` and decorating it with
:func:`register`.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

from unpact.attribution.prepare import Prepared, token_strings
from unpact.attribution.result import Attribution
from unpact.errors import ConfigError
from unpact.progress import ProgressFactory, null_progress
from unpact.registry import Registry

#: name -> method class (filled by :func:`register`); aliases resolve (``ig``).
ATTRIBUTION_METHODS: Registry[type[AttributionMethod]] = Registry("attribution method")


def register(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator: add a method under ``cls.name`` and its ``cls.aliases``."""
    return ATTRIBUTION_METHODS.register()(cls)


class AttributionMethod:
    """Base class: ``config_class`` holds the hyperparameters (with defaults), ``run`` does the work."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type]

    def __init__(self, **options: Any) -> None:
        known = {f.name for f in fields(self.config_class)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for attribution method {self.name!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        self.config = self.config_class(**options)

    @property
    def options(self) -> dict[str, Any]:
        return asdict(self.config)

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        raise NotImplementedError


def make_result(
    model, prep: Prepared, scores, lp: float, method: str, options: dict, extras: dict | None = None
) -> Attribution:
    tok = model.tokenizer
    return Attribution(
        item_id=prep.item_id,
        tokens=token_strings(tok, prep.prompt_ids),
        token_ids=list(prep.prompt_ids),
        scores=[float(s) for s in scores],
        lp=float(lp),
        method=method,
        special=list(prep.special),
        options=dict(options),
        answer_tokens=token_strings(tok, prep.answer_ids),
        answer_ids=list(prep.answer_ids),
        prompt=prep.prompt,
        answer=prep.answer,
        group=prep.group,
        extras=dict(extras or {}),
    )


def get_method(name: str) -> type[AttributionMethod]:
    """The method class registered as ``name`` or one of its aliases (ConfigError listing the known ones).

    Example:
        >>> get_method("ig").name
        'integrated_gradients'
    """
    return ATTRIBUTION_METHODS.get(name)


def make_method(name: str, **options: Any) -> AttributionMethod:
    """An instance of method ``name`` with ``options`` overriding its ``config_class`` defaults.

    Example:
        >>> make_method("loo", mode="baseline").options["mode"]
        'baseline'
    """
    return get_method(name)(**options)
