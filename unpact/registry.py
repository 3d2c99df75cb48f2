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

from typing import Callable, Generic, Iterator, TypeVar

from unpact.errors import ConfigError

T = TypeVar("T")


def normalise(name: str) -> str:
    """The key a name is stored and looked up under: stripped, lower case, ``-`` as ``_``.

    Example:
        >>> normalise(" NPO-GDR ")
        'npo_gdr'
    """
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Name -> component, in registration order, with aliases and one unknown-name error.

    ``kind`` is the word the error uses ("unlearning method", "attack", ...). Components are
    registered with :meth:`register`, used as a decorator (``@REG.register("name")``, or
    ``@REG.register()`` on a class with a ``name`` attribute) or called directly
    (``REG.add("name", thing)``). Registering a name twice replaces the component (a user may
    override a built-in), and keeps its place in the order.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, component: T, aliases: tuple[str, ...] = ()) -> T:
        """Register ``component`` as ``name`` (and ``aliases``); returns the component."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        key = normalise(name)
        self._items[key] = component
        for alias in aliases:
            self._aliases[normalise(alias)] = key
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
        key = normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}")
        return key

    def get(self, name: str) -> T:
        """The component registered as ``name`` or one of its aliases (ConfigError otherwise)."""
        return self._items[self.resolve(name)]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (aliases left out)."""
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, component) pairs in registration order."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = normalise(name)
        return self._aliases.get(key, key) in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
