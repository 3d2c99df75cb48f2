"""The same ``unpact run`` on an idle machine and beside competing CPU-bound jobs, before and after
the thread policy (unpact/threads.py). Prints a markdown table for docs/performance.md.

Each cell is one run of ``python -m unpact.cli run`` in a fresh output directory, in a
child process whose wall time and CPU time (user + system, from ``os.wait4``) are
measured. "before" is ``UNPACT_THREAD_POLICY=off`` (torch's default thread count and
OpenMP's default, spinning wait policy: the behaviour before the policy existed);
"after" is the default (``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported, and
torch threads = usable cores minus the load). ``OMP_NUM_THREADS`` is removed from the
children's environment so that the policy, not the caller, decides. "busy" runs
``--competitors`` processes that spin a CPU core each (``while True: pass``) for the
whole run. The issue's target: busy <= 2.5x idle (wall time), on a 2-core machine.

``--check-wait-policy`` instead shows whether ``OMP_WAIT_POLICY`` takes effect: the CPU
time of a loop of small parallel torch ops separated by short sleeps, with the variable
unset, set before ``import torch``, and set after it (spinning threads burn CPU during
the sleeps; sleeping ones do not).

Usage (run it on an otherwise idle machine; it takes 4 runs of the default study):

    python benchmarks/busy_machine.py                  # the default run, 1 competitor
    python benchmarks/busy_machine.py --competitors 2  # two other jobs, as in issue 17
    python benchmarks/busy_machine.py --tiny           # seconds-long check that the script works
    python benchmarks/busy_machine.py --check-wait-policy
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

SPIN = "while True: pass"


def _env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        UNPACT_THREAD_POLICY="off" if policy == "before" else "on",
    )
    return env


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the child, exit status) of ``cmd``."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would block the run
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.stderr.write(log.read()[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def run_cell(policy: str, busy: bool, competitors: int, run_args: list[str], root: str) -> dict:
    out = os.path.join(root, f"{policy}-{'busy' if busy else 'idle'}")
    if not busy:  # an idle cell starts on an idle machine: wait until the last cell's processes are gone
        from unpact.threads import machine_load

        while (machine_load() or 0.0) >= 0.5:
            time.sleep(1)
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(competitors if busy else 0)]
    try:
        time.sleep(2 if busy else 0)  # let the load average see them
        wall, cpu, rc = timed([sys.executable, "-m", "unpact.cli", "run", "--out", out, *run_args], _env(policy))
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return {"policy": policy, "busy": busy, "wall": wall, "cpu": cpu, "rc": rc}


def wait_policy_check(reps: int = 300) -> None:
    body = (
        "import time\n"
        "t0 = time.process_time()\n"
        "x = torch.randn(256, 256)\n"
        f"for _ in range({reps}):\n"
        "    (x @ x).sum()\n"
        "    time.sleep(0.002)\n"
        "print(f'{time.process_time() - t0:.2f}')\n"
    )
    variants = {
        "unset": "import torch\n",
        "PASSIVE before import torch": "import os\nos.environ['OMP_WAIT_POLICY'] = 'PASSIVE'\nimport torch\n",
        "PASSIVE after import torch": "import torch, os\nos.environ['OMP_WAIT_POLICY'] = 'PASSIVE'\n",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    print(f"| OMP_WAIT_POLICY | CPU s for {reps} small matmuls + 2 ms sleeps |")
    print("|---|---|")
    for name, head in variants.items():
        out = subprocess.run(
            [sys.executable, "-c", head + "torch.set_num_threads(2)\n" + body],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"| {name} | {out} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--competitors", type=int, default=1, help="CPU-bound jobs beside the busy runs (default 1)")
    ap.add_argument(
        "--tiny", action="store_true", help="a seconds-long configuration (checks the script, not the machine)"
    )
    ap.add_argument("--policies", default="before,after")
    ap.add_argument("--check-wait-policy", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the run directories under this directory")
    ap.add_argument(
        "--config", default=None, help="a run config (TOML) passed to every run, e.g. one that turns a stage off"
    )
    a = ap.parse_args()
    if a.check_wait_policy:
        wait_policy_check(30 if a.tiny else 300)
        return 0
    run_args = ["--max-items", "1", "--methods", "ga_gdr"] if a.tiny else []
    if a.config:
        run_args += ["--config", a.config]
    root = a.keep or tempfile.mkdtemp(prefix="unpact-busy-")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cores} usable cores, load before start {os.getloadavg()[0]:.2f}; "
        f"run: unpact run {' '.join(run_args) or '(defaults)'}; competitors: {a.competitors}\n"
    )
    print("| threads | machine | wall (s) | CPU (s) | CPU / wall | busy / idle (wall) |")
    print("|---|---|---|---|---|---|")
    ok = True
    for policy in a.policies.split(","):
        idle = run_cell(policy, False, a.competitors, run_args, root)
        print(
            f"| {policy} | idle | {idle['wall']:.1f} | {idle['cpu']:.1f} | {idle['cpu'] / idle['wall']:.2f} | |",
            flush=True,
        )  # each row as soon as it is measured
        busy = run_cell(policy, True, a.competitors, run_args, root)
        print(
            f"| {policy} | busy | {busy['wall']:.1f} | {busy['cpu']:.1f} | {busy['cpu'] / busy['wall']:.2f} | "
            f"{busy['wall'] / idle['wall']:.2f}x |",
            flush=True,
        )
        ok &= idle["rc"] == 0 and busy["rc"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
