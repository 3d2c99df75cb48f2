"""A run directory whose every stage result is written atomically, so a killed run resumes.

Each stage writes ``stages/<name>.json`` through a temporary file and
``os.replace`` (atomic on POSIX): a stage file either holds the complete result
or does not exist. A rerun reads the finished stages and computes only the rest.
Directories (saved checkpoints) are built under a temporary name and renamed.
Every computed stage also appends one line to ``stages/timings.jsonl``: its wall and CPU
seconds and the process's peak memory so far (:func:`stage_timings` reads them back).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> rd = RunDir("/tmp/demo-run")                      # doctest: +SKIP
    >>> rd.stage("original/evaluate", lambda: {"rouge": 0.9})  # computed once, then read back  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unpact.errors import ConfigError


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tuples lists, numpy/torch scalars floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(_clean(obj), indent=1, allow_nan=False))


#: mode a new run-directory file is created with, before the umask: a plain ``open(path, "w")``'s
#: (``0o666``), so under umask 022 the file is 0644 like any other file the user writes
#: (``tempfile.mkstemp`` would create it 0600 whatever the umask)
FILE_MODE = 0o666


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` (``.<name>.<random>.tmp``), opened for writing with
    :data:`FILE_MODE` less the umask (the kernel applies the umask: nothing reads or sets it)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {str(path)!r}")


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, fsync, rename.

    The file gets the mode a plain ``open`` would give it (``0o666`` less the umask: 0644 under
    umask 022), not ``tempfile.mkstemp``'s owner-only 0600.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> oct(write_text_atomic("/tmp/demo/results.json", "{}").stat().st_mode & 0o777)  # doctest: +SKIP
        '0o644'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class RunLock:
    """An exclusive lock on a run directory, held while a run writes into it.

    The lock is ``fcntl.flock`` on ``<root>/.lock`` (which holds the holder's PID): the
    kernel drops it when the holder exits, however it exits, so a lock left by a
    killed run is stale and the next run takes it over. A second run on a directory
    whose lock is held gets a :class:`~unpact.errors.ConfigError` naming the holder's PID.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> with RunLock("/tmp/demo-run"):   # doctest: +SKIP
        ...     pass                         # write stages here
    """

    NAME = ".lock"

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise ConfigError(
                    f"run directory {str(self.path.parent)!r} is in use by another unpact run (PID {holder}); "
                    "wait for it to finish, stop it, or give another --out"
                ) from None
            try:  # the holder may have removed the file between our open and flock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting run then locks a fresh file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: one JSON line per computed stage, in ``stages/``
TIMINGS_FILE = "timings.jsonl"


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (``getrusage``'s ``ru_maxrss``: KiB on Linux,
    bytes on macOS). It never falls, so a stage's line shows the peak of the run up to its end:
    the stage where it rises is where the new peak was."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def stage_timings(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The cost of each stage a run directory computed, in the order they finished (every session
    that resumed it included). A nested stage (a trajectory checkpoint) is also inside its parent's
    seconds.

    Example:
        >>> stage_timings("/tmp/no-such-run")
        []
    """
    path = Path(root) / "stages" / TIMINGS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RunDir:
    """The run directory: ``config.json``, ``stages/``, ``models/``, ``results.json``, report."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def clean_temporaries(self) -> list[Path]:
        """Remove what an interrupted write left behind (``.*.tmp`` files, ``.<name>.*`` model dirs)."""
        removed = []
        if not self.root.is_dir():
            return removed
        for p in list(self.root.rglob(".*")):
            if p.is_file() and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
            elif p.is_dir() and p.parent.name == "models":
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed

    def stage_file(self, name: str) -> Path:
        return self.root / "stages" / f"{name}.json"

    def has(self, name: str) -> bool:
        return self.stage_file(name).is_file()

    def read(self, name: str) -> Any:
        with open(self.stage_file(name), encoding="utf-8") as f:
            return json.load(f)

    def write(self, name: str, obj: Any) -> Any:
        write_json_atomic(self.stage_file(name), obj)
        return self.read(name)

    def stage(self, name: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The stage's result: read back when done, else computed and written (its cost appended
        to ``stages/timings.jsonl``). Returns (result, computed)."""
        if self.has(name):
            return self.read(name), False
        wall, cpu = time.perf_counter(), time.process_time()
        result = self.write(name, compute())
        record = {
            "stage": name,
            "seconds": round(time.perf_counter() - wall, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(self.root / "stages" / TIMINGS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return result, True

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def has_model(self, name: str) -> bool:
        return (self.model_dir(name) / "config.json").is_file()

    def save_model_atomic(self, name: str, save: Callable[[Path], Any]) -> Path:
        """Build a directory with ``save(tmp_dir)`` and rename it into place."""
        final = self.model_dir(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=str(final.parent)))
        try:
            save(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
