"""The error types unpact raises for bad input.

Every error a user can cause (a missing file, a malformed record, an unknown
method, a prompt longer than the context, a loss that turned NaN) is an
:class:`UnpactError` whose message names the thing and says how to fix it. The
command line prints the message on one line and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class UnpactError(Exception):
    """Base class of every error unpact raises for bad input."""


class ModelLoadError(UnpactError):
    """A model spec (directory, hub id, ``embedded:<name>``) could not be loaded."""


class DataError(UnpactError):
    """A benchmark file, record or split is missing or malformed."""


class ConfigError(UnpactError):
    """An unknown option, method, split or a value out of range."""


class InputError(UnpactError):
    """An item cannot be scored: empty prompt or answer, too long for the context."""


class TrainingError(UnpactError):
    """An unlearning run stopped, for example because its loss became NaN or infinite."""


def lookup(registry: Mapping[str, T], name: str, what: str, error: type[UnpactError] = ConfigError) -> T:
    """``registry[name]``; an unknown name raises ``error`` naming ``what`` and listing the known
    names in registration order (the one lookup of every name-to-thing registry).

    Example:
        >>> lookup({"mean": 1, "sum": 2}, "median", "quantity")
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown quantity 'median'; known: mean, sum
    """
    if name not in registry:
        raise error(f"unknown {what} {name!r}; known: {', '.join(registry)}")
    return registry[name]
