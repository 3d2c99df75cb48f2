"""Progress reporting without printing from library code.

Long-running library functions take a ``progress`` argument: a factory called as
``progress(total=..., desc=...)`` that returns a context manager with an
``update(n=1)`` method. The default, :func:`null_progress`, does nothing; the
command line passes :func:`tqdm_progress`, which draws a bar on stderr.

Example:
    >>> with null_progress(total=3, desc="demo") as bar:
    ...     for _ in range(3):
    ...         bar.update()
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...


ProgressFactory = Callable[..., ContextManager[Bar]]


class _NullBar:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None


@contextmanager
def null_progress(total: int | None = None, desc: str | None = None) -> Iterator[Bar]:
    """A progress factory that reports nothing (the library default)."""
    yield _NullBar()


@contextmanager
def tqdm_progress(total: int | None = None, desc: str | None = None) -> Iterator[Bar]:
    """A progress factory that draws a tqdm bar on stderr (used by the command line)."""
    import sys

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
