"""One registry type for every kind of pluggable component: methods, attacks, probes, metrics,
templates, emphasis kinds, quantities, formats, stages, analyses.

A :class:`Registry` maps a name (and its aliases) to a component, keeps registration order
(the order defaults and help texts list them in), normalises the names it is asked for, and
raises one error for an unknown name: ``unknown <kind> 'x'; known: a, b, c``
(:class:`~unpact.errors.ConfigError`, exit 2 on the command line).

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red", aliases=("crimson",))
    ... def red():
    ...     return "#f00"
    >>> colours.get("Crimson")()
    '#f00'
    >>> colours.names()
    ('red',)
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    unpact.errors.ConfigError: unknown colour 'blue'; known: red
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from unpact.errors import ConfigError, UnpactError

T = TypeVar("T")
_MISSING: object = object()


def exact(name: str) -> str:
    """The key of a registry whose names are kept as written (file names, model short names).

    Example:
        >>> exact("smollm2-135m")
        'smollm2-135m'
    """
    return name


def normalise(name: str) -> str:
    """The key a name is stored and looked up under: stripped, lower case, ``-`` as ``_``.

    Example:
        >>> normalise(" NPO-GDR ")
        'npo_gdr'
    """
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Name -> component, in registration order, with aliases and one unknown-name error.

    ``kind`` is the word the error uses ("unlearning method", "attack", ...); ``error`` is the
    error type an unknown name raises (:class:`~unpact.errors.ConfigError` unless a caller
    promised another); ``key`` turns a name into the key it is stored under (default
    :func:`normalise`; :func:`exact` keeps names as written). Components are registered with
    :meth:`register`, used as a decorator (``@REG.register("name")``, or ``@REG.register()``
    on a class with a ``name`` attribute) or called directly (``REG.add("name", thing)``,
    ``REG["name"] = thing``). Registering a name twice replaces the component (a user may
    override a built-in), and keeps its place in the order. It reads like a dict of the
    registered names: ``in``, iteration, ``sorted(REG)``, ``len``, ``keys``/``values``/``items``.
    """

    def __init__(
        self, kind: str, *, error: type[UnpactError] = ConfigError, key: Callable[[str], str] = normalise
    ) -> None:
        self.kind = kind
        self.error = error
        self.key = key
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, component: T, aliases: tuple[str, ...] = ()) -> T:
        """Register ``component`` as ``name`` (and ``aliases``); returns the component."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        key = self.key(name)
        self._items[key] = component
        self._aliases.pop(key, None)
        for alias in aliases:
            self._aliases[self.key(alias)] = key
        return component

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; without ``name`` it takes the component's ``name``
        attribute (and its ``aliases`` attribute, when it has one)."""

        def decorate(component: T) -> T:
            key = name if name is not None else getattr(component, "name", "")
            own = tuple(getattr(component, "aliases", ()) or ()) if name is None else ()
            return self.add(key, component, tuple(aliases) + own)

        return decorate

    def resolve(self, name: str) -> str:
        """The registered name ``name`` stands for (itself or the name it is an alias of)."""
        key = self.key(name) if isinstance(name, str) else name
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}")
        return key

    def get(self, name: str, default=_MISSING):
        """The component registered as ``name`` or one of its aliases; an unknown name raises
        the registry's error listing the known ones, or returns ``default`` when one is given."""
        if default is not _MISSING and name not in self:
            return default
        return self._items[self.resolve(name)]

    def remove(self, name: str) -> T:
        """Unregister ``name`` (and the aliases that point to it); returns its component."""
        key = self.resolve(name)
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}
        return self._items.pop(key)

    def pop(self, name: str, default=_MISSING):
        """:meth:`remove`, or ``default`` for an unknown name when one is given."""
        if default is not _MISSING and name not in self:
            return default
        return self.remove(name)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (aliases left out)."""
        return tuple(self._items)

    def aliases(self, name: str) -> tuple[str, ...]:
        """The aliases of the registered ``name``."""
        key = self.resolve(name)
        return tuple(a for a, k in self._aliases.items() if k == key)

    def items(self) -> list[tuple[str, T]]:
        """(name, component) pairs in registration order."""
        return list(self._items.items())

    def keys(self) -> list[str]:
        """The registered names as a list (so ``dict(REG)`` works)."""
        return list(self._items)

    def values(self) -> list[T]:
        """The components in registration order."""
        return list(self._items.values())

    def update(self, other: Registry[T] | dict[str, T] | Iterable[tuple[str, T]]) -> None:
        """Register every (name, component) of ``other`` (a registry brings its aliases along)."""
        if isinstance(other, Registry):
            for name, component in other.items():
                self.add(name, component, other.aliases(name))
            return
        pairs = other.items() if isinstance(other, dict) else other
        for name, component in pairs:
            self.add(name, component)

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """The registry, restored on exit to what it held on entry (for a test or a script that
        registers a component for a while).

        Example:
            >>> reg = Registry("colour")
            >>> with reg.scoped():
            ...     _ = reg.add("red", 1)
            >>> "red" in reg
            False
        """
        items, aliases = dict(self._items), dict(self._aliases)
        try:
            yield self
        finally:
            self._items, self._aliases = items, aliases

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self.key(name)
        return self._aliases.get(key, key) in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, component: T) -> None:
        self.add(name, component)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
