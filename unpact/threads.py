"""How many CPU threads torch uses, on a machine that other jobs may share.

Two measures, both applied by the command line (library code never changes
process-wide settings on its own; call :func:`apply_thread_policy` yourself if you want them):

* **the OpenMP wait policy.** PyTorch's CPU kernels run on OpenMP (libgomp); with
  the default (active) policy an idle worker thread *spins* for a while before it
  sleeps. On a machine whose cores are busy with other jobs those spinning threads
  steal the cores the work needs (a run took 5x its CPU time with two other Python
  jobs running). ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once.
  libgomp reads it when it is loaded, i.e. when torch is imported: it must be in the
  environment *before* ``import torch`` (:func:`set_wait_policy` does that; the
  ``unpact`` command calls it before anything imports torch; ``import unpact`` no
  longer imports torch by itself).
* **the thread count.** :func:`choose_threads` takes the cores this process may run
  on (``os.sched_getaffinity``, which honours ``taskset`` and container CPU sets)
  minus the machine's load (:func:`machine_load`: the *other* processes running
  right now, from the kernel's count of runnable tasks sampled over a fifth of a
  second), at least 1: on an idle 2-core machine 2 threads, with one other
  CPU-bound job 1. The 1-minute load average was the first choice and was wrong
  in the measurement it was made for: it lags, so a run started just after
  another job ended took 1 thread on an idle machine (docs/performance.md).

``OMP_NUM_THREADS`` set in the environment wins (the policy leaves the count
alone), and ``UNPACT_THREAD_POLICY=off`` switches both measures off (the
behaviour before they existed; used by ``benchmarks/busy_machine.py``).

Example:
    >>> choose_threads(cores=2, load=0.1)
    2
    >>> choose_threads(cores=2, load=1.2)
    1
    >>> choose_threads(cores=16, load=3.6)
    12
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

#: environment switch: "off" disables the wait policy and the thread count choice
POLICY_ENV = "UNPACT_THREAD_POLICY"


def policy_enabled() -> bool:
    return os.environ.get(POLICY_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: how often and how far apart :func:`machine_load` reads the runnable-task count: 10 reads
#: over 0.2 s smooth out a task that wakes for an instant without the lag of a load average
LOAD_SAMPLES, LOAD_INTERVAL_S = 10, 0.02


def machine_load(samples: int = LOAD_SAMPLES, interval: float = LOAD_INTERVAL_S) -> float | None:
    """Other processes running now: the mean over ``samples`` reads of the kernel's runnable
    task count (``/proc/loadavg``'s fourth field, ``running/total``) minus this process.
    Where there is no ``/proc/loadavg``, the 1-minute load average; None where neither exists.
    """
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        counts.append(max(0, running - 1))  # the reading process is itself running
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return sum(counts) / len(counts)
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def choose_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads for torch: the usable cores minus the load other jobs put on them (rounded), at least 1."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        load = machine_load() or 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def set_wait_policy() -> bool:
    """Put ``OMP_WAIT_POLICY=PASSIVE`` in the environment (unless set). Returns whether it can
    still take effect, i.e. torch is not imported yet."""
    if not policy_enabled():
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def apply_thread_policy() -> dict[str, Any]:
    """Set torch's intra-op thread count by :func:`choose_threads` (unless ``OMP_NUM_THREADS`` is
    set or the policy is off). Returns what was decided, for the command line to show."""
    import torch

    info: dict[str, Any] = {
        "cores": usable_cores(),
        "load": machine_load(),
        "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    if not policy_enabled():
        info.update(threads=torch.get_num_threads(), why="thread policy off")
    elif os.environ.get("OMP_NUM_THREADS"):
        info.update(threads=torch.get_num_threads(), why="OMP_NUM_THREADS")
    else:
        n = choose_threads(info["cores"], info["load"])
        torch.set_num_threads(n)
        info.update(threads=n, why="cores minus load")
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for the console, e.g. ``2 threads (2 cores, load 0.10, OpenMP wait PASSIVE)``."""
    load = "n/a" if info.get("load") is None else f"{info['load']:.2f}"
    return (
        f"{info['threads']} thread{'s' if info['threads'] != 1 else ''} ({info['why']}: "
        f"{info['cores']} cores, load {load}; OpenMP wait {info['wait_policy']})"
    )
