"""Progress reporting without printing from library code.

Long-running library functions take a ``progress`` argument: a factory called as
``progress(total=..., desc=...)`` that returns a context manager with an
``update(n=1)`` method. The default, :func:`null_progress`, does nothing; the
command line passes a :class:`ConsoleProgress`: one live display of every running
task in a terminal (rich), plain lines when stderr is not a terminal (a log file).

Example:
    >>> with null_progress(total=3, desc="demo") as bar:
    ...     for _ in range(3):
    ...         bar.update()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...


ProgressFactory = Callable[..., AbstractContextManager[Bar]]


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

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class _Task:
    """One task of a :class:`ConsoleProgress` (what the ``progress(...)`` context yields)."""

    def __init__(self, owner: ConsoleProgress, desc: str, total: int | None, depth: int):
        self.owner, self.desc, self.total, self.depth = owner, desc, total, depth
        self.n = 0
        self.start = time.monotonic()
        self.id = owner._rich.add_task(desc, total=total) if owner._rich is not None else None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.id is not None:
            self.owner._rich.advance(self.id, n)

    def set_postfix_str(self, s: str) -> None:
        if self.id is not None:
            self.owner._rich.update(self.id, description=f"{self.desc} ({s})")


class ConsoleProgress:
    """The command line's progress display (a progress factory with a :meth:`log` for lines).

    In a terminal: one rich live display holding a row per running task (nested
    tasks are rows below their parent, removed when they finish), and lines from
    :meth:`log` printed above it, so nothing is spliced into a bar and no stale bar
    stays behind. Not in a terminal: no bars and no escape sequences; each task
    that took at least ``min_seconds`` ends with one plain line (``desc: n/total in
    12.3 s``), indented by nesting depth, and :meth:`log` lines are printed as they are.

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> with ConsoleProgress(file=log, min_seconds=0) as progress:
        ...     progress.log("start")
        ...     with progress(total=2, desc="demo") as bar:
        ...         bar.update(2)
        >>> log.getvalue().splitlines()[0]
        'start'
    """

    def __init__(self, file=None, *, force_terminal: bool | None = None, min_seconds: float = 1.0):

        from rich.console import Console

        self.console = Console(file=file or sys.stderr, force_terminal=force_terminal, highlight=False, soft_wrap=True)
        self.terminal = self.console.is_terminal
        self.min_seconds = min_seconds
        self._rich = None
        self._depth = 0
        if self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )

    def __enter__(self) -> ConsoleProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()

    def log(self, text: str) -> None:
        """Print a line (above the live display in a terminal)."""
        self.console.print(text, markup=False, highlight=False)

    @contextmanager
    def __call__(self, total: int | None = None, desc: str | None = None) -> Iterator[Bar]:
        desc = desc or "working"
        indent = "  " * self._depth
        task = _Task(self, indent + desc, total, self._depth)
        self._depth += 1
        try:
            yield task
        finally:
            self._depth -= 1
            if task.id is not None:
                self._rich.remove_task(task.id)
            elapsed = time.monotonic() - task.start
            if not self.terminal and elapsed >= self.min_seconds:
                count = f"{task.n}/{task.total}" if task.total is not None else f"{task.n}"
                self.log(f"{indent}{desc}: {count} in {elapsed:.1f} s")
