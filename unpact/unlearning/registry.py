"""The registry of unlearning methods: name -> class.

Example:
    >>> from unpact.unlearning import METHODS, get_method
    >>> sorted(METHODS)[:3]
    ['ga', 'ga_gdr', 'ga_klr']
    >>> get_method("npo_gdr").config_class().beta
    0.1
"""

from __future__ import annotations

from typing import TypeVar

from unpact.errors import ConfigError
from unpact.unlearning.base import UnlearningMethod

#: name -> method class, filled by :func:`register`.
METHODS: dict[str, type[UnlearningMethod]] = {}
#: The six methods the paper compares.
PAPER_METHODS = ("ga_gdr", "ga_klr", "npo_gdr", "npo_klr", "task_vector", "rmu")

M = TypeVar("M", bound=type[UnlearningMethod])


def register(cls: M) -> M:
    """Class decorator: add a method under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[UnlearningMethod]:
    """The method class registered as ``name`` (ConfigError listing the known ones otherwise)."""
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise ConfigError(f"unknown unlearning method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[key]
