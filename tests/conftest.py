"""Shared fixtures: tiny real HF checkpoints built in a temporary directory.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadfile`` in pyproject.toml): each test
file runs whole on one worker, in file order, so a module-scoped fixture (a finished run, a
trained model) is built once and the tests that change what it built still run in order. Each
worker, and every process a test starts from it, uses one torch thread: two workers of one thread
fill two cores (two threads each would oversubscribe them, and the spinning threads of a busy
machine slow the tiny models most). A test marked ``serial`` runs while the other worker waits
(it measures the machine's load).
"""

from __future__ import annotations

import fcntl
import os
import tempfile

import pytest

#: set by pytest-xdist in its workers ("gw0", "gw1"); None in a run in one process (-n 0)
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if XDIST_WORKER:  # before torch is imported: OpenMP reads it once, subprocesses inherit it
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_configure(config):
    """Torch's thread count in each process that runs tests; pytest-xdist's controller only hands
    out the files and does not import torch (its start delays the workers')."""
    if XDIST_WORKER or not getattr(config.option, "numprocesses", None):
        import torch

        torch.set_num_threads(1 if XDIST_WORKER else max(1, min(2, os.cpu_count() or 1)))


#: Real TOFU files (MIT licence, see LICENSE there), copied from shared/data/tofu.
TOFU_DIR = os.path.join(os.path.dirname(__file__), "data", "tofu")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    """One tiny random checkpoint per architecture, built once per session."""
    from unpact.testing import TINY_ARCHITECTURES, make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return {a: str(make_tiny_checkpoint(a, root / a)) for a in TINY_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dirs):
    from unpact import load_model

    return load_model(tiny_dirs["gpt2"])


@pytest.fixture(scope="session")
def tofu_dir() -> str:
    return os.path.abspath(TOFU_DIR)


# ------------------------------------------------------------------ pytest-xdist


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the files that hold a ``serial`` test run after the other test files,
    before the docstring examples: by then the other worker runs short tests, so the serial test
    waits little for it, and the examples still fill both workers at the end. Both workers reorder
    alike (they must collect the same list)."""
    if not XDIST_WORKER:
        return
    files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("serial")}
    moved = [item for item in items if item.nodeid.split("::")[0] in files]
    rest = [item for item in items if item.nodeid.split("::")[0] not in files]
    at = next((i for i, item in enumerate(rest) if not item.nodeid.startswith("tests/")), len(rest))
    items[:] = rest[:at] + moved + rest[at:]


class _Turns:
    """A readers-writer lock across the xdist workers (``flock`` on two files): every test holds
    it shared; a ``serial`` test holds it exclusively. The gate stops new shared holders while a
    serial test waits, so it cannot starve."""

    def __init__(self, uid: str):
        base = os.path.join(tempfile.gettempdir(), f"unpact-xdist-{uid}")
        self.paths = (f"{base}.gate", f"{base}.lock")
        self.gate, self.lock = (open(p, "a+") for p in self.paths)

    def acquire(self, serial: bool) -> None:
        if serial:
            fcntl.flock(self.gate, fcntl.LOCK_EX)
            fcntl.flock(self.lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(self.gate, fcntl.LOCK_SH)
            fcntl.flock(self.lock, fcntl.LOCK_SH)
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        fcntl.flock(self.gate, fcntl.LOCK_UN)

    def close(self) -> None:
        for f, p in zip((self.gate, self.lock), self.paths):
            f.close()
            try:
                os.unlink(p)
            except OSError:
                pass


_TURNS = _Turns(os.environ.get("PYTEST_XDIST_TESTRUNUID", "run")) if XDIST_WORKER else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup (module fixtures included), call and teardown of a test hold the workers' lock."""
    if _TURNS is None:
        yield
        return
    _TURNS.acquire(item.get_closest_marker("serial") is not None)
    try:
        yield
    finally:
        _TURNS.release()


def pytest_unconfigure(config):
    if _TURNS is not None:
        _TURNS.close()
