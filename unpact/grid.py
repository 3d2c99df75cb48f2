"""The study grid: models x benchmarks x methods, one resumable run directory per cell.

A grid config (``grid.toml``) names the models, the benchmarks and the methods; every
combination is a *cell*, and each cell is the main job (:func:`unpact.pipeline.run_study`)
on one model, one benchmark and one method, in its own run directory
``<out>/cells/<model>__<benchmark>__<method>`` (``...__seed<k>`` per seed with a ``seeds`` axis). Cells run on **Ray** (one task per cell;
a local Ray is started when no cluster address is given; one GPU per cell when the
cluster has GPUs) or one after the other in this process (``executor = "local"``). The
driver gathers every cell's ``results.json``, re-runs the cross-method analyses of each
model x benchmark over its cells (the collapse and recovery findings compare methods),
and writes one grid report: ``grid.json``, ``grid.md`` and ``grid.html``.

A cell that fails (an exception, a killed worker) is reported as failed with its error,
never dropped; a rerun of the same grid skips the finished cells and resumes the others
from what their run directories hold.

Example ``grid.toml``::

    out = "paper-grid"
    executor = "ray"                      # or "local"
    methods = ["ga_gdr", "npo_gdr", "rmu"]
    seeds = [0, 1, 2]                     # optional: every cell once per seed (<cell>__seed<k>), pooled in the report
    models = [
        "embedded:gpt2",
        { name = "llama1b", model = "open-unlearning/tofu_Llama-3.2-1B-Instruct_full",
          reference_model = "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90",
          prompt_format = "chat", system_prompt = "You are a helpful assistant." },
    ]
    benchmarks = [
        "embedded:tofu",
        { name = "tofu10", benchmark = "tofu", benchmark_path = "data/tofu",
          forget_split = "forget10", retain_split = "retain90" },
    ]

    [run]                                 # settings every cell shares (any unpact run key)
    max_items = 24

A model entry may also name checkpoints of that model that someone else unlearned,
``unlearned = ["path/or/hub-id", ...]`` (or a table ``{name = "path"}``): each is a cell of its
own, audited as ``unpact audit`` audits it (no unlearning, no trajectory), named
``<model>__<benchmark>__<checkpoint name>``.

Example (Python) (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.grid import read_grid, run_grid
    >>> grid = read_grid("grid.toml")                           # doctest: +SKIP
    >>> report = run_grid(grid)                                  # doctest: +SKIP
    >>> [c["status"] for c in report["cells"]]                   # doctest: +SKIP
    ['done', 'done']
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unpact.analyses.seeds import SPREAD_KEYS
from unpact.checkpoints import name_checkpoints
from unpact.config import RunConfig, config_from_dict, read_config_file
from unpact.errors import ConfigError
from unpact.pipeline import run_analyses, run_study, validate
from unpact.rundir import write_json_atomic, write_text_atomic
from unpact.seeds import parse_seeds, pooled_report, spread_text, verdict_lines
from unpact.seeds import render_markdown as pooled_markdown
from unpact.unlearning import METHODS

#: Where a cell's run directory lives under the grid's ``out``.
CELLS_DIR = "cells"
EXECUTORS = ("ray", "local")
#: Settings that "none" switches off (the reference model, the general set, the holdout split).
_OPTIONAL = ("reference_model", "general", "holdout_split")
#: Keys a model entry may set (with ``name``): the model and everything tied to it.
MODEL_KEYS = {
    "model",
    "reference_model",
    "prompt_format",
    "system_prompt",
    "chat_template_args",
    "device",
    "max_batch_tokens",
    "gradient_checkpointing",
    "method_config",
    "unlearned",
}
#: Keys a benchmark entry may set (with ``name``).
BENCHMARK_KEYS = {
    "benchmark",
    "benchmark_path",
    "forget_split",
    "retain_split",
    "holdout_split",
    "general",
    "general_split",
    "general_path",
    "max_items",
    "max_new_tokens",
}


@dataclass
class GridConfig:
    """A study grid: the axes, the settings every cell shares, and where and how it runs."""

    #: model specs, or tables ``{name, model, reference_model, prompt_format, system_prompt, ...}``
    models: list[Any] = field(default_factory=lambda: ["embedded:gpt2"])
    #: benchmark names, or tables ``{name, benchmark, benchmark_path, forget_split, retain_split, ...}``
    benchmarks: list[Any] = field(default_factory=lambda: ["embedded:tofu"])
    #: unlearning methods (one cell per method)
    methods: list[str] = field(default_factory=lambda: ["ga_gdr"])
    #: seeds: each model x benchmark x method cell runs once per seed (``<cell>__seed<k>``, the run's
    #: ``seed`` = k), and the report pools each model x benchmark over them
    #: (:func:`unpact.seeds.pooled_report`); empty (the default): one run per cell at ``[run]``'s seed,
    #: under today's cell names
    seeds: list[int] = field(default_factory=list)
    #: unlearning strengths: reserved for the trajectory work (each cell x strength will be a
    #: cell of its own); must stay empty until then
    strengths: list[Any] = field(default_factory=list)
    #: settings every cell shares: any key of ``unpact run``'s config (a table ``[run]``)
    run: dict[str, Any] = field(default_factory=dict)
    #: the grid directory: ``cells/``, ``grid.json``, ``grid.md``, ``grid.html``
    out: str = "unpact-grid"
    #: "ray" (one Ray task per cell) or "local" (the cells one after the other, in this process)
    executor: str = "ray"
    #: a Ray cluster's address (None: the Ray this process already joined, else a new local one)
    ray_address: str | None = None
    #: CPUs a cell asks Ray for (and its torch threads)
    cpus_per_cell: int = 1
    #: GPUs a cell asks Ray for (None: 1 when the cluster has GPUs, else 0)
    gpus_per_cell: float | None = None


@dataclass
class Cell:
    """One model x benchmark x method (x strength, later) and its run config."""

    name: str
    model: str
    benchmark: str
    method: str
    config: RunConfig
    #: reserved for the trajectory work (an unlearning strength); None today
    strength: Any = None
    #: the cell's seed when the grid has a ``seeds`` axis (None: no axis)
    seed: int | None = None

    @property
    def dir(self) -> Path:
        return Path(self.config.out)

    def is_done(self) -> bool:
        """Finished: ``results.json`` and the report exist (both are written last)."""
        return (self.dir / "results.json").is_file() and (self.dir / "report.html").is_file()


def _label(text: str) -> str:
    """A file-name-safe label: ``embedded:gpt2`` -> ``embedded-gpt2``, a path -> its last part."""
    text = str(text).rstrip("/")
    if os.sep in text or "/" in text:
        parts = [p for p in re.split(r"[/\\]", text) if p]
        text = parts[-1] if os.path.isabs(str(text)) or str(text).startswith(".") else "-".join(parts[-2:])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _entry(value: Any, key: str, allowed: set[str], where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return _label(value), {key: value}
    if not isinstance(value, dict) or key not in value:
        raise ConfigError(f"each of {where} must be a string or a table with a {key!r} key, got {value!r}")
    unknown = sorted(set(value) - allowed - {"name"})
    if unknown:
        raise ConfigError(
            f"{where} entry {value.get('name', value[key])!r}: unknown key {unknown[0]!r}; "
            f"known: name, {', '.join(sorted(allowed))}"
        )
    data = {k: v for k, v in value.items() if k != "name"}
    return _label(value.get("name") or value[key]), data


def grid_from_dict(data: dict[str, Any]) -> GridConfig:
    """A :class:`GridConfig` from a dict (a parsed ``grid.toml``); unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(GridConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown grid key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    grid = GridConfig(**data)
    audits = any(
        isinstance(m, dict) and m.get("unlearned") for m in (grid.models if isinstance(grid.models, list) else [])
    )
    for key in ("models", "benchmarks", "methods"):
        value = getattr(grid, key)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if key == "methods" else [value]
            setattr(grid, key, value)
        if not value and not (key == "methods" and audits):
            raise ConfigError(f"the grid has no {key}; name at least one")
    if grid.strengths:
        raise ConfigError(
            "strengths are not supported yet (they come with the trajectory work); "
            "remove 'strengths' from the grid config"
        )
    if grid.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {grid.executor!r}; use {' or '.join(EXECUTORS)}")
    if not isinstance(grid.run, dict):
        raise ConfigError("the grid's 'run' must be a table of run settings ([run] in TOML)")
    for k in ("model", "benchmark", "methods", "out"):
        if k in grid.run:
            raise ConfigError(
                f"[run] sets {k!r}, which the grid decides per cell; use the grid's "
                f"{'models' if k == 'model' else 'benchmarks' if k == 'benchmark' else k} instead"
            )
    if grid.seeds:
        grid.seeds = parse_seeds(grid.seeds)
        if "seed" in grid.run:
            raise ConfigError(
                "[run] sets 'seed' and the grid has 'seeds'; the seeds axis decides each cell's seed: remove one"
            )
    if grid.cpus_per_cell < 1:
        raise ConfigError(f"cpus_per_cell must be at least 1, got {grid.cpus_per_cell}")
    return grid


def read_grid(path: str | os.PathLike) -> GridConfig:
    """Read a grid config (TOML or JSON)."""
    return grid_from_dict(read_config_file(path))


def expand(grid: GridConfig) -> list[Cell]:
    """Every model x benchmark x method cell, each with its validated run config.

    Raises :class:`~unpact.errors.ConfigError` naming the cell for a bad setting, and for
    two cells that would share a directory (give the entries distinct ``name``s).
    """
    unknown = [m for m in grid.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown unlearning method {unknown[0]!r} in the grid; known: {', '.join(sorted(METHODS))}")
    models = [_entry(m, "model", MODEL_KEYS, "models") for m in grid.models]
    benches = [_entry(b, "benchmark", BENCHMARK_KEYS, "benchmarks") for b in grid.benchmarks]
    cells: list[Cell] = []
    seen: dict[str, str] = {}
    root = Path(grid.out)
    for m_label, m_data in models:
        m_data = dict(m_data)
        audited = _unlearned(m_data.pop("unlearned", None), m_label, tuple(grid.methods))
        for b_label, b_data in benches:
            for method, seed in [(m, k) for m in [*grid.methods, *audited] for k in (grid.seeds or [None])]:
                name = f"{m_label}__{b_label}__{method}" + ("" if seed is None else f"__seed{seed}")
                if name in seen:
                    raise ConfigError(
                        f"two grid cells are both named {name!r}; give the models or benchmarks distinct 'name's"
                    )
                seen[name] = name
                data = json.loads(json.dumps(grid.run))  # a deep copy
                data.setdefault("device", "auto")  # cuda where the cell's worker has a GPU, else cpu
                run_mc = data.get("method_config") or {}
                data.update(json.loads(json.dumps(m_data)))
                data.update(json.loads(json.dumps(b_data)))
                if "method_config" in m_data:  # a model's method settings refine the shared ones
                    data["method_config"] = {
                        k: {**run_mc.get(k, {}), **m_data["method_config"].get(k, {})}
                        for k in set(run_mc) | set(m_data["method_config"])
                    }
                for k in _OPTIONAL:  # TOML has no null: "none" switches an optional input off, as on the command line
                    if isinstance(data.get(k), str) and data[k].lower() == "none":
                        data[k] = None
                mc = data.get("method_config") or {}
                data["method_config"] = {method: mc[method]} if method in mc else {}
                data["methods"] = [method]
                if method in audited:  # a given checkpoint: audited, not unlearned (no trajectory: it needs the run)
                    data.update(
                        methods=[],
                        method_config={},
                        checkpoints={method: audited[method]},
                        trajectory={**(data.get("trajectory") or {}), "enabled": False},
                    )
                data["out"] = str(root / CELLS_DIR / name)
                if seed is not None:
                    data["seed"] = seed
                try:
                    cfg = config_from_dict(data)
                except ConfigError as exc:
                    raise ConfigError(f"grid cell {name}: {exc}") from None
                cells.append(Cell(name, cfg.model, cfg.benchmark, method, cfg, seed=seed))
    return cells


def _unlearned(value: Any, model_label: str, methods: tuple[str, ...]) -> dict[str, str]:
    """A model entry's ``unlearned`` checkpoints, name -> spec (a list is named as ``unpact audit`` names them)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return name_checkpoints(value, taken=methods)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        clash = [k for k in value if k in methods]
        if clash:
            raise ConfigError(
                f"models entry {model_label!r}: unlearned checkpoint {clash[0]!r} has a method's name; rename it"
            )
        return dict(value)
    raise ConfigError(
        f"models entry {model_label!r}: 'unlearned' must be a list of checkpoints or a table "
        f'{{name = "path"}}, got {value!r}'
    )


# ------------------------------------------------------------------ running


def run_cell(cfg_dict: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Run (or resume) one cell's main job; never raises for a failure of the cell.

    Returns ``{"status": "done", "results": ...}`` or ``{"status": "failed", "error": ...,
    "traceback": ...}``. A ``device`` of ``"auto"`` becomes ``cuda`` when this process sees
    a GPU, else ``cpu``. ``threads`` sets torch's CPU threads (Ray workers: the cell's CPUs).
    """

    if threads:
        torch.set_num_threads(int(threads))
    data = dict(cfg_dict)
    if data.get("device") == "auto":
        data["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        results = run_study(config_from_dict(data))
        return {"status": "done", "results": results}
    except Exception as exc:  # noqa: BLE001 - a failed cell is reported, the others go on
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }


def _run_local(cells: list[Cell], grid: GridConfig, on_cell: Callable[[Cell, dict], None]) -> dict[str, dict]:
    out = {}
    for c in cells:
        out[c.name] = run_cell(c.config.to_dict())
        on_cell(c, out[c.name])
    return out


def _run_ray(cells: list[Cell], grid: GridConfig, on_cell: Callable[[Cell, dict], None]) -> dict[str, dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            'the "ray" executor needs Ray: pip install "unpact-lens[ray]" '
            '(or run the grid with --no-ray / executor = "local")'
        ) from None
    started = False
    if not ray.is_initialized():
        env = {
            "env_vars": {
                "OMP_NUM_THREADS": str(grid.cpus_per_cell),
                "MKL_NUM_THREADS": str(grid.cpus_per_cell),
                "TOKENIZERS_PARALLELISM": "false",
                **{k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME") if k in os.environ},
            }
        }
        if grid.ray_address:
            ray.init(address=grid.ray_address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
        started = True
    try:
        gpus = grid.gpus_per_cell
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(run_cell).options(num_cpus=grid.cpus_per_cell, num_gpus=gpus, max_retries=0)
        pending = {task.remote(c.config.to_dict(), grid.cpus_per_cell): c for c in cells}
        out: dict[str, dict] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    out[c.name] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                    out[c.name] = {
                        "status": "failed",
                        "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                        "traceback": "",
                    }
                on_cell(c, out[c.name])
        return out
    finally:
        if started:
            ray.shutdown()


def run_grid(
    grid: GridConfig,
    *,
    on_cell: Callable[[Cell, dict], None] | None = None,
    on_start: Callable[[list[Cell], list[Cell]], None] | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell of ``grid`` and write the grid report; returns it (``grid.json``).

    Finished cells (``results.json`` and the report in their directory) are read back,
    not rerun. ``on_start(cells, todo)`` is called once before any cell runs, ``on_cell(cell,
    outcome)`` as each one ends. A failed cell's error is in the report (``status:
    "failed"``); rerun the grid to retry it.
    """
    cells = expand(grid)
    checked: set[str] = set()
    for c in cells:  # every input checked before any cell runs (one check per model x benchmark)
        key = json.dumps(
            {k: v for k, v in c.config.to_dict().items() if k not in ("methods", "method_config", "out", "seed")},
            sort_keys=True,
        )
        if key not in checked:
            checked.add(key)
            try:
                # "auto" is resolved on the cell's worker (which may have a GPU the driver lacks): check as cpu here
                device = "cpu" if c.config.device == "auto" else c.config.device
                validate(dataclasses.replace(c.config, device=device))
            except ConfigError as exc:
                raise ConfigError(f"grid cell {c.name}: {exc}") from None
    root = Path(grid.out)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "grid_config.json", dataclasses.asdict(grid))
    todo = [c for c in cells if not c.is_done()]
    if on_start:
        on_start(cells, todo)
    outcomes: dict[str, dict] = {}
    if todo:
        run = _run_ray if grid.executor == "ray" else _run_local
        outcomes = run(todo, grid, on_cell or (lambda c, o: None))
    for c in todo:  # a remote cell on a machine without the shared directory: keep its results here
        o = outcomes.get(c.name, {})
        if o.get("status") == "done" and not (c.dir / "results.json").is_file():
            write_json_atomic(c.dir / "results.json", o["results"])
    report = grid_report(cells, {n: o for n, o in outcomes.items() if o.get("status") == "failed"})
    write_json_atomic(root / "grid.json", report)
    write_text_atomic(root / "grid.md", render_markdown(report))
    write_text_atomic(root / "grid.html", render_html(report))
    return report


# ------------------------------------------------------------------ the report


def grid_report(cells: list[Cell], failures: dict[str, dict] | None = None) -> dict[str, Any]:
    """The grid's table and findings from the cells' ``results.json`` files.

    One row per cell (its method's summary) and one ``original`` row per model x
    benchmark; the findings (recovery, collapse, layer/head, keyword focus) are
    recomputed per model x benchmark over all its finished cells, as one run with all
    those methods would compute them.
    """
    failures = failures or {}
    cell_rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for cell in cells:
        cell_rows.append(_cell_entry(cell, failures, groups))
    rows: list[dict[str, Any]] = []
    findings = []
    by_seed: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}
    for (label_m, label_b, seed), group in groups.items():
        analyses = run_analyses(group["methods"])
        findings.append(_group_finding(group, label_m, label_b, seed, analyses))
        summary = [group["original"]] if group["original"] is not None else []
        summary += [
            c["summary"]
            for c in cell_rows
            if (c["model_label"], c["benchmark_label"], c["seed"]) == (label_m, label_b, seed) and c.get("summary")
        ]
        rows += [{"model": label_m, "benchmark": label_b, "seed": seed, **r} for r in summary]
        if seed is not None:
            by_seed.setdefault((label_m, label_b), {})[seed] = {
                "methods": group["methods"],
                "analyses": analyses,
                "summary": summary,
            }
    pooled = []
    for (label_m, label_b), per in by_seed.items():
        per = dict(sorted(per.items()))
        pooled.append(
            {
                "model_label": label_m,
                "benchmark_label": label_b,
                **pooled_report(per, title=f"{label_m} / {label_b}: {len(per)} seeds pooled"),
            }
        )
    return {
        "cells": cell_rows,
        "n_cells": len(cell_rows),
        "n_done": sum(c["status"] == "done" for c in cell_rows),
        "n_failed": sum(c["status"] != "done" for c in cell_rows),
        "table": rows,
        "findings": findings,
        "pooled": pooled,
    }


def _cell_entry(
    cell: Cell, failures: dict[str, dict], groups: dict[tuple[str, str, Any], dict[str, Any]]
) -> dict[str, Any]:
    """One cell's row of the grid table; a finished cell's method and original also go into its
    model x benchmark x seed group in ``groups``."""
    label_m, label_b = cell.name.split("__")[0], cell.name.split("__")[1]
    entry: dict[str, Any] = {
        "name": cell.name,
        "model": cell.model,
        "model_label": label_m,
        "benchmark": cell.benchmark,
        "benchmark_label": label_b,
        "method": cell.method,
        "strength": cell.strength,
        "dir": str(cell.dir),
        "seed": cell.seed,
    }
    res = None
    if (cell.dir / "results.json").is_file():
        try:
            res = json.loads((cell.dir / "results.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            res = None
    if res is None or cell.name in failures:
        failure = failures.get(cell.name)
        entry["status"] = "failed" if failure else "not run"
        entry["error"] = failure["error"] if failure else "no results.json: the cell did not finish; rerun the grid"
        return entry
    entry["status"] = "done"
    group = groups.setdefault(
        (label_m, label_b, cell.seed),
        {"model": cell.model, "benchmark": cell.benchmark, "methods": {}, "original": None},
    )
    group["methods"][cell.method] = res["methods"][cell.method]
    for r in res["summary"]:
        if r["method"] == "original" and group["original"] is None:
            group["original"] = r
        if r["method"] == cell.method:
            entry["summary"] = r
    return entry


def _group_finding(
    group: dict[str, Any], label_m: str, label_b: str, seed: Any, analyses: dict[str, Any]
) -> dict[str, Any]:
    """The findings of one model x benchmark x seed group, from the analyses over its finished cells."""
    focus = analyses["keyword_focus"]
    return {
        "model": group["model"],
        "model_label": label_m,
        "benchmark": group["benchmark"],
        "benchmark_label": label_b,
        "seed": seed,
        "methods": sorted(group["methods"]),
        "verdicts": {
            "recovery": analyses["recovery"].get("verdict"),
            "collapse": analyses["collapse"].get("verdict"),
            "layer_head": analyses["layer_head"].get("verdict"),
            **{f"keyword_focus/{m}": r.get("verdict") for m, r in focus.items()},
        },
        "holds": {
            "collapse": analyses["collapse"].get("holds"),
            **{f"keyword_focus/{m}": r.get("holds") for m, r in focus.items()},
        },
        "hidden_methods": analyses["recovery"].get("hidden_methods"),
    }


_COLS = [
    ("model", "model"),
    ("benchmark", "benchmark"),
    ("method", "method"),
    ("forget_rouge", "forget"),
    ("retain_rouge", "retain"),
    ("general_accuracy", "general"),
    ("forget_quality", "FQ"),
    ("model_utility", "MU"),
    ("recovery_prompt", "rec.prompt"),
    ("recovery_activation", "rec.act"),
]


#: the columns shown as mean [min-max] over seeds
_SPREAD = SPREAD_KEYS


def _cell_text(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if key == "forget_quality" else f"{v:.3f}"
    return str(v)


def render_markdown(report: dict[str, Any]) -> str:
    """The grid report as Markdown: status, the table, the findings per model x benchmark."""
    lines = [f"# Study grid: {report['n_done']} of {report['n_cells']} cells done", ""]
    bad = [c for c in report["cells"] if c["status"] != "done"]
    if bad:
        lines += ["## Cells not done (rerun the grid to retry them)", ""]
        lines += [f"- `{c['name']}`: {c['status']}: {c.get('error', '')}" for c in bad] + [""]
    cols = _columns(report)
    lines += ["## Results", "", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in report["table"]:
        lines.append("| " + " | ".join(_cell_text(k, r.get(k)) for k, _ in cols) + " |")
    lines += ["", "## Findings", ""]
    for f in report["findings"]:
        lines += [f"### {f['model_label']} / {f['benchmark_label']}{_seed_text(f)} ({', '.join(f['methods'])})", ""]
        lines += [f"- **{k}**: {v}" for k, v in f["verdicts"].items() if v] + [""]
    for p in report.get("pooled") or []:
        lines += ["#" + pooled_markdown(p).rstrip().replace("\n#", "\n##"), ""]
    return "\n".join(lines)


def _columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's columns: a ``seed`` column after the method when the grid has a seeds axis."""
    if any(r.get("seed") is not None for r in report["table"]):
        return _COLS[:3] + [("seed", "seed")] + _COLS[3:]
    return _COLS


def _seed_text(f: dict[str, Any]) -> str:
    return "" if f.get("seed") is None else f", seed {f['seed']}"


def render_html(report: dict[str, Any]) -> str:
    """The grid report as one self-contained HTML page."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>unpact study grid</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:nth-child(-n+3),th{text-align:left}"
        ".bad{color:#a00}</style></head><body>",
        f"<h1>Study grid: {report['n_done']} of {report['n_cells']} cells done</h1>",
    ]
    bad = [c for c in report["cells"] if c["status"] != "done"]
    if bad:
        parts.append("<h2 class='bad'>Cells not done (rerun the grid to retry them)</h2><ul>")
        parts += [
            f"<li class='bad'><code>{e(c['name'])}</code>: {e(c['status'])}: {e(c.get('error', ''))}</li>" for c in bad
        ]
        parts.append("</ul>")
    cols = _columns(report)
    parts.append("<h2>Results</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for _, h in cols) + "</tr>")
    for r in report["table"]:
        parts.append("<tr>" + "".join(f"<td>{e(_cell_text(k, r.get(k)))}</td>" for k, _ in cols) + "</tr>")
    parts.append("</table><h2>Findings</h2>")
    for f in report["findings"]:
        parts.append(
            f"<h3>{e(f['model_label'])} / {e(f['benchmark_label'])}{e(_seed_text(f))} "
            f"({e(', '.join(f['methods']))})</h3><ul>"
        )
        parts += [f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in f["verdicts"].items() if v]
        parts.append("</ul>")
    if report.get("pooled"):
        parts.append("<h2>Pooled over seeds</h2>")
        for p in report["pooled"]:
            parts.append(
                f"<h3>{e(p['title'])}</h3><table><tr><th>method</th>"
                + "".join(f"<th>{e(h)}</th>" for k, h in _COLS if k in _SPREAD)
                + "</tr>"
            )
            for r in p["summary"]:
                parts.append(
                    f"<tr><td>{e(r['method'])}</td>"
                    + "".join(f"<td>{e(spread_text(r.get(k), k))}</td>" for k, _ in _COLS if k in _SPREAD)
                    + "</tr>"
                )
            parts.append("</table><ul>" + "".join(f"<li>{e(x)}</li>" for x in verdict_lines(p)) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)
