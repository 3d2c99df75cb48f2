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

from unpact.registry import Registry
from unpact.unlearning.base import UnlearnConfig, UnlearningMethod, make_config

#: name -> method class, filled by :func:`register`.
METHODS: Registry[type[UnlearningMethod]] = Registry("unlearning method")
#: The six methods the paper compares: a fixed subset (the paper's comparison), not every
#: registered method, so a method added later does not join the default run by itself.
PAPER_METHODS = ("ga_gdr", "ga_klr", "npo_gdr", "npo_klr", "task_vector", "rmu")

M = TypeVar("M", bound=type[UnlearningMethod])


def register(cls: M) -> M:
    """Class decorator: add a method under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> type[UnlearningMethod]:
    """The method class registered as ``name`` (ConfigError listing the known ones otherwise)."""
    return METHODS.get(name)


def make_method(name: str, config: UnlearnConfig | dict | None = None) -> UnlearningMethod:
    """An instance of method ``name`` with ``config`` (None: its defaults; a dict: overrides of
    them; or its ``config_class`` instance). The preset is not resolved here (see
    :func:`unpact.unlearning.base.resolve_preset`).

    Example:
        >>> make_method("npo_gdr", {"beta": 0.2}).config.beta
        0.2
    """
    cls = get_method(name)
    return cls(make_config(cls.config_class, config))
