"""One study at several seeds: a resumable run directory per seed and one pooled report.

``unpact run --seeds 0,1,2 --out OUT`` runs the main job (:func:`unpact.pipeline.run_study`)
once per seed, each in its own resumable run directory ``OUT/seed<k>`` (the config with
``seed = k``; nothing else changes), then pools them (:func:`unpact.analyses.seeds.pool_seeds`)
into ``OUT/pooled.json``, ``OUT/pooled.md`` and ``OUT/pooled.html``: every summary metric as mean
and min-max over seeds, each finding's pooled verdict with its rule and its per-seed marks, and
the claims that are seed-dependent. The study grid pools its ``seeds`` axis the same way
(:func:`pooled_report`, per model x benchmark).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> parse_seeds("0,1,2")
    [0, 1, 2]
    >>> from unpact.config import RunConfig
    >>> pooled = run_seeds(RunConfig(methods=["ga_gdr"], max_items=4, out="runs/s"), [0, 1])  # doctest: +SKIP
    >>> pooled["finding1"]["ga_gdr"]["verdict"]                                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unpact.analyses.seeds import SPREAD_KEYS, SeedSettings, pool_seeds
from unpact.config import RunConfig
from unpact.errors import ConfigError
from unpact.pipeline import run_study, validate
from unpact.progress import ProgressFactory, null_progress
from unpact.rundir import write_json_atomic, write_text_atomic


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """Seeds from ``"0,1,2"`` (or a list): distinct non-negative integers, in the order given.

    Example:
        >>> parse_seeds([2, 0])
        [2, 0]
        >>> parse_seeds("0,0")
        Traceback (most recent call last):
        unpact.errors.ConfigError: seeds must be distinct, got [0, 0]
    """
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    try:
        seeds = []
        for s in items:
            if isinstance(s, bool) or not isinstance(s, (int, str)):
                raise ValueError
            seeds.append(int(s))
    except ValueError:
        raise ConfigError(f"seeds must be integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("seeds is empty; name at least one seed, e.g. 0,1,2")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds}")
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    """The run directory of ``seed`` under ``out``: ``out/seed<k>``."""
    return Path(out) / f"seed{int(seed)}"


def seed_configs(cfg: RunConfig, seeds: Sequence[int]) -> dict[int, RunConfig]:
    """``cfg`` once per seed, each with its own run directory (:func:`seed_dir`)."""
    return {k: dataclasses.replace(cfg, seed=int(k), out=str(seed_dir(cfg.out, k))) for k in seeds}


def run_seeds(
    cfg: RunConfig,
    seeds: Sequence[int],
    *,
    progress: ProgressFactory = null_progress,
    on_stage: Callable[[str, bool], None] | None = None,
    on_seed: Callable[[int, RunConfig], None] | None = None,
    settings: SeedSettings | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``cfg`` at each seed, then write and return the pooled report.

    Every seed's inputs are checked before any seed runs (they differ only in ``seed`` and
    ``out``). A seed's run directory is an ordinary one: a killed run resumes where it stopped,
    ``unpact report OUT/seed<k>`` rebuilds its own report. ``on_seed(seed, cfg)`` is called as
    each seed starts.
    """
    cfgs = seed_configs(cfg, parse_seeds(list(seeds)))
    for c in cfgs.values():
        validate(c)
    results = {}
    for k, c in cfgs.items():
        start = (lambda k=k, c=c: on_seed(k, c)) if on_seed else None
        results[k] = run_study(c, progress=progress, on_stage=on_stage, on_start=start)
    pooled = pooled_report(results, {k: c.out for k, c in cfgs.items()}, settings)
    write_pooled(cfg.out, pooled)
    return pooled


def pooled_report(
    results: Mapping[int, Mapping[str, Any]],
    dirs: Mapping[int, str] | None = None,
    settings: SeedSettings | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """The pooled report of several seeds' results (each a ``results.json`` dict, or ``{"methods",
    "analyses", "summary"}``): :func:`unpact.analyses.seeds.pool_seeds` and where each seed lives."""
    pooled = pool_seeds(
        {
            k: {
                "methods": r.get("methods") or {},
                "analyses": r.get("analyses") or {},
                "summary": r.get("summary") or [],
            }
            for k, r in results.items()
        },
        settings,
    )
    return {
        "title": title or f"unpact: {len(results)} seeds pooled",
        "dirs": {str(k): v for k, v in (dirs or {}).items()},
        **pooled,
    }


def write_pooled(out: str | Path, pooled: Mapping[str, Any], stem: str = "pooled") -> None:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.html`` in ``out``."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / f"{stem}.json", pooled)
    write_text_atomic(root / f"{stem}.md", render_markdown(pooled))
    write_text_atomic(root / f"{stem}.html", render_html(pooled))


# ------------------------------------------------------------------ rendering

_HEAD = {
    "forget_rouge": "forget",
    "retain_rouge": "retain",
    "general_accuracy": "general",
    "forget_quality": "FQ",
    "model_utility": "MU",
    "recovery_prompt": "rec.prompt",
    "recovery_activation": "rec.act",
}


def spread_text(v: Mapping[str, Any] | None, key: str = "") -> str:
    """``mean [min-max]`` of one metric over seeds (``-`` when never measured); forget quality (a
    p-value, often tiny) in 3 significant figures, as the one-seed summary prints it.

    Example:
        >>> spread_text({"mean": 0.25, "min": 0.1, "max": 0.4}), spread_text({"mean": 2e-5, "min": 1e-5, "max": 3e-5}, "forget_quality")
        ('0.250 [0.100-0.400]', '2e-05 [1e-05-3e-05]')
    """
    if not v or v.get("mean") is None:
        return "-"
    f = ".3g" if key == "forget_quality" else ".3f"
    return f"{v['mean']:{f}} [{v['min']:{f}}-{v['max']:{f}}]"


def verdict_lines(pooled: Mapping[str, Any]) -> list[str]:
    """Every pooled verdict as one line (its per-seed marks inside), then the seed-dependent claims."""
    lines = []
    for m, v in (pooled.get("finding1") or {}).items():
        lines.append(f"finding 1 (keyword focus vs nulls), {m}: {v['verdict']}")
    if pooled.get("finding2_verdict"):
        lines.append(f"finding 2: {pooled['finding2_verdict']}")
    for m, cps in (pooled.get("finding2") or {}).items():
        for n, v in cps.items():
            lines.append(f"finding 2, {m} at {n}: {v['verdict']}")
    d = pooled.get("dilemma")
    if d:
        lines.append(f"dilemma: {d['verdict']}")
        for part in ("erasure_costs_utility", "recoverable_is_present"):
            lines.append(f"dilemma, {part}: {d[part]['verdict']}; {d[part]['seeds']['text']}")
    for k, v in (pooled.get("per_seed_marks") or {}).items():
        lines.append(f"{k} (per seed, not pooled): {v['text']}")
    dep = pooled.get("seed_dependent") or []
    lines.append(f"seed-dependent claims: {'; '.join(dep)}" if dep else "seed-dependent claims: none")
    return lines


def summary_text(pooled: Mapping[str, Any]) -> str:
    """The pooled summary as plain text (what ``unpact run --seeds`` prints): the metrics as mean
    [min-max] over seeds, then every verdict."""
    seeds = ", ".join(map(str, pooled.get("seeds") or []))
    cols = [("method", 12)] + [(_HEAD[k], 21) for k in SPREAD_KEYS]
    lines = [
        f"pooled over seeds {seeds}: mean [min-max] over seeds",
        "  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w) in enumerate(cols)),
    ]
    for r in pooled.get("summary") or []:
        lines.append("  ".join([f"{r['method']:<12}"] + [f"{spread_text(r.get(k), k):>21}" for k in SPREAD_KEYS]))
    return "\n".join(lines + [""] + verdict_lines(pooled))


def render_markdown(pooled: Mapping[str, Any]) -> str:
    """The pooled report as Markdown: the spread table, the pooled verdicts with their rules and per-seed marks."""
    lines = [
        f"# {pooled.get('title', 'unpact: seeds pooled')}",
        "",
        f"Seeds: {', '.join(map(str, pooled.get('seeds') or []))}",
    ]
    lines += [f"- seed {k}: `{d}`" for k, d in (pooled.get("dirs") or {}).items()]
    lines += [
        "",
        "## Summary: mean [min-max] over seeds",
        "",
        "| method | " + " | ".join(_HEAD[k] for k in SPREAD_KEYS) + " |",
        "|---" * (1 + len(SPREAD_KEYS)) + "|",
    ]
    for r in pooled.get("summary") or []:
        lines.append(f"| {r['method']} | " + " | ".join(spread_text(r.get(k), k) for k in SPREAD_KEYS) + " |")
    lines += ["", "## Verdicts", ""] + [f"- {x}" for x in verdict_lines(pooled)] + ["", "## Rules", ""]
    rules = {}
    for v in (pooled.get("finding1") or {}).values():
        rules["finding 1"] = v["rule"]
    for cps in (pooled.get("finding2") or {}).values():
        for v in cps.values():
            rules["finding 2"] = v["rule"]
    if pooled.get("dilemma"):
        rules["dilemma"] = pooled["dilemma"]["rule"]
    lines += [f"- **{k}**: {v}" for k, v in rules.items()]
    return "\n".join(lines) + "\n"


def render_html(pooled: Mapping[str, Any]) -> str:
    """The pooled report as one self-contained HTML page (the Markdown's content)."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>",
        e(pooled.get("title", "unpact")),
        "</title><style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th{text-align:left}.dep{color:#a60}</style></head><body>",
        f"<h1>{e(pooled.get('title', ''))}</h1><p>Seeds: {e(', '.join(map(str, pooled.get('seeds') or [])))}</p>",
        "<h2>Summary: mean [min-max] over seeds</h2><table><tr><th>method</th>",
        "".join(f"<th>{e(_HEAD[k])}</th>" for k in SPREAD_KEYS),
        "</tr>",
    ]
    for r in pooled.get("summary") or []:
        parts.append(
            f"<tr><td>{e(r['method'])}</td>"
            + "".join(f"<td>{e(spread_text(r.get(k), k))}</td>" for k in SPREAD_KEYS)
            + "</tr>"
        )
    parts.append("</table><h2>Verdicts</h2><ul>")
    for x in verdict_lines(pooled):
        parts.append(f"<li{' class=dep' if 'seed-dependent' in x else ''}>{e(x)}</li>")
    parts.append("</ul></body></html>")
    return "".join(parts)


__all__ = [
    "parse_seeds",
    "pooled_report",
    "render_html",
    "render_markdown",
    "run_seeds",
    "seed_configs",
    "seed_dir",
    "spread_text",
    "summary_text",
    "verdict_lines",
    "write_pooled",
]
