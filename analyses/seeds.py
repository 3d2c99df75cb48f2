"""Verdicts pooled over seeds: the same study run at several seeds, one verdict per claim.

A verdict read from one seed can flip at the next (issue 28: finding 1 for ``ga_gdr`` was
supported at seed 0, not at seed 1). Each pooled verdict here states its rule in its result
(``rule``), carries its pooled statistic, and sits beside the per-seed verdicts
(:func:`seed_marks`): a claim that holds at some seeds and not at others is reported
**seed-dependent**, with the counts.

* :func:`pooled_keyword_null` — finding 1 against the damage-matched nulls: the method's
  statistic of every seed against the null draws of every seed in one exact stratified rank
  test (:func:`unpact.stats.stratified_rank_test`), and the method-minus-nulls interval over
  items x seeds, clustered by item.
* :func:`pooled_finding2` — keyword-specific recovery at one checkpoint (matched by its name,
  e.g. ``forget_below_0.5``, across seeds): the per-item outcomes of every seed, intervals by a
  bootstrap over items (clusters of one item's rows on every seed), Bonferroni over settings.
* :func:`pooled_dilemma` — (a) the within-stratum rank correlation of erasure and utility drop
  with each seed's strata kept apart; (b) the share of recovered items some probe finds over
  items x seeds x checkpoints, with a cluster-bootstrap interval over items.
* :func:`summary_spread` — every summary metric as mean and min-max over seeds.
* :func:`pool_seeds` — all of it from each seed's results.

Example:
    >>> seed_marks({0: True, 1: False, 2: True})["text"]
    'seed-dependent: holds on 2 of 3 seeds (seed 0 yes, seed 1 no, seed 2 yes)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unpact.analyses._stats import fmt, mean
from unpact.analyses.dilemma import DilemmaSettings, dilemma_verdict, finding2_verdict, recovered_ids
from unpact.emphasis.controlled import ControlledRecovery, item_effects
from unpact.stats import cluster_bootstrap_mean_ci, stratified_rank_test


@dataclass
class SeedSettings:
    """How the pooled verdicts are computed; every threshold with its reason.

    Attributes:
        alpha: finding 1's level when a seed's test does not record its own (0.05, the
            per-seed test's default: the pooled verdict is judged as the one-seed one).
        n_boot: resamples of the cluster bootstraps (2000, as every per-seed interval).
        confidence: of finding 1's and the dilemma's intervals (0.95, as per seed); finding 2's
            is 1 - alpha / k for k settings (Bonferroni), as per seed.
        seed: of the bootstraps (0: the per-seed tests at seed 0 use 0, so pooling copies of one
            seed reproduces its interval).
        dilemma: finding 2's and the dilemma's thresholds (:class:`DilemmaSettings`: min_items,
            min_effect, alpha, always_share, min_points), the same as per seed.
    """

    alpha: float = 0.05
    n_boot: int = 2000
    confidence: float = 0.95
    seed: int = 0
    dilemma: DilemmaSettings | None = None

    @property
    def dilemma_settings(self) -> DilemmaSettings:
        return self.dilemma or DilemmaSettings()


def seed_marks(marks: Mapping[Any, bool | None]) -> dict[str, Any]:
    """The per-seed verdicts of one claim and whether they agree.

    ``marks``: seed -> True (holds), False (does not) or None (not applicable / not measured).
    ``consistency`` is ``"holds on every seed"``, ``"holds on no seed"`` or ``"seed-dependent"``
    (held on some seeds and not on others), over the seeds with a mark.

    Example:
        >>> seed_marks({0: True, 1: True})["consistency"], seed_marks({0: False, 1: None})["n_seeds"]
        ('holds on every seed', 1)
    """
    marked = {k: v for k, v in marks.items() if v is not None}
    k = sum(bool(v) for v in marked.values())
    n = len(marked)
    if not n:
        cons = "no seed has a verdict"
    elif k == n:
        cons = "holds on every seed"
    elif k == 0:
        cons = "holds on no seed"
    else:
        cons = "seed-dependent"
    each = ", ".join(f"seed {s} {'n/a' if v is None else 'yes' if v else 'no'}" for s, v in marks.items())
    text = f"{cons}: holds on {k} of {n} seeds ({each})" if n else f"{cons} ({each})"
    return {
        "per_seed": {str(s): v for s, v in marks.items()},
        "n_seeds": n,
        "n_holds": k,
        "seed_dependent": cons == "seed-dependent",
        "consistency": cons,
        "text": text,
    }


# ------------------------------------------------------------------ finding 1

FINDING1_RULE = (
    "pooled statistic T = mean over seeds of the method's mean normalised KeyToken gap (one T_s per seed); "
    "p = share of the prod(K_s + 1) tuples that take one value per seed - that seed's T_s or one of its K_s "
    "damage-matched null draws - whose mean is <= T (an exact stratified rank test: under the null the method "
    "is one more null draw of its own seed, so the observed tuple is uniform over those tuples; p >= "
    "1 / prod(K_s + 1), 1/8000 for 3 seeds of 19 draws); interval: method minus the seed's mean null gap per "
    "item, over items x seeds, percentile bootstrap resampling items (clusters of one item's rows on every "
    "seed); supported when p <= alpha and the interval's upper end is below 0"
)


def pooled_keyword_null(
    tests: Mapping[Any, Mapping[str, Any] | None], settings: SeedSettings | None = None
) -> dict[str, Any]:
    """Finding 1 against damage-matched nulls, pooled over seeds (rule: :data:`FINDING1_RULE`).

    ``tests``: seed -> that seed's :func:`~unpact.analyses.keyword_focus.keyword_focus_vs_null`
    result (``methods.<m>.keyword_nulls.test``; None where the seed had no damage-matched null).
    A seed without a statistic adds no draws and marks "n/a".

    Example:
        >>> t = {"statistic": -1.0, "null_statistics": [0.0, 0.1, 0.2], "supported": False, "alpha": 0.05,
        ...      "items": {"ids": ["a", "b"], "method_gap": [-1.0, -1.0], "null_mean_gap": [0.1, 0.1]}}
        >>> r = pooled_keyword_null({0: t, 1: t})
        >>> r["statistic"], r["n_null_draws"], r["p_value"]
        (-1.0, 6, 0.0625)
    """
    s = settings or SeedSettings()
    usable = {k: t for k, t in tests.items() if t and t.get("statistic") is not None and t.get("null_statistics")}
    marks = seed_marks(
        {k: (None if not t or t.get("statistic") is None else bool(t.get("supported"))) for k, t in tests.items()}
    )
    alpha = next((t["alpha"] for t in usable.values() if t.get("alpha") is not None), s.alpha)
    out: dict[str, Any] = {
        "rule": FINDING1_RULE,
        "alpha": alpha,
        "seeds": marks,
        "n_seeds_pooled": len(usable),
        "per_seed": _finding1_per_seed(tests),
    }
    if not usable:
        out.update(
            statistic=None,
            p_value=None,
            interval=None,
            n_null_draws=0,
            supported=False,
            verdict=f"not applicable: no seed has a damage-matched null test; {marks['text']}",
        )
        return out
    rank = stratified_rank_test(
        [t["statistic"] for t in usable.values()], [t["null_statistics"] for t in usable.values()], alternative="less"
    )
    missing = [k for k, t in usable.items() if not t.get("items")]
    ci = _method_minus_nulls_ci(usable, s) if not missing else {"mean": None, "interval": None, "n": 0, "n_clusters": 0}
    lo_hi = ci["interval"]
    supported = bool(rank["min_p"] <= alpha and rank["p_value"] <= alpha and lo_hi is not None and lo_hi[1] < 0)
    out.update(
        statistic=rank["statistic"],
        null_mean=rank["null_mean"],
        p_value=rank["p_value"],
        min_p=rank["min_p"],
        rank_test=rank["test"],
        n_null_draws=rank["n_null"],
        difference=ci["mean"],
        interval=lo_hi,
        n_rows=ci["n"],
        n_items=ci["n_clusters"],
        confidence=s.confidence,
        supported=supported,
    )
    out["verdict"] = _finding1_verdict(rank, ci, alpha, supported, missing, len(usable), s.confidence, marks["text"])
    return out


def _finding1_per_seed(tests: Mapping[Any, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Each seed's own finding-1 test in brief: statistic, p, interval, draws, supported, verdict."""
    return {
        str(k): {
            "statistic": t.get("statistic") if t else None,
            "p_value": t.get("p_value") if t else None,
            "interval": t.get("interval") if t else None,
            "n_null_draws": t.get("n_null_draws") if t else 0,
            "supported": t.get("supported") if t else None,
            "verdict": t.get("verdict") if t else None,
        }
        for k, t in tests.items()
    }


def _finding1_verdict(
    rank: Mapping[str, Any],
    ci: Mapping[str, Any],
    alpha: float,
    supported: bool,
    missing: Sequence[Any],
    n_seeds: int,
    confidence: float,
    marks_text: str,
) -> str:
    """The pooled finding-1 verdict: the rank test, the method-minus-nulls interval and the seeds' marks."""
    lo_hi = ci["interval"]
    why = ""
    if missing:
        why = (
            f" (no interval: the results of seed {', '.join(map(str, missing))} predate the per-item gaps; "
            "rerun their keyword_nulls stage)"
        )
    elif not supported:
        why = " (p above alpha or the interval reaches 0)"
    interval = "n/a" if lo_hi is None else f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]"
    return (
        f"{'supported' if supported else 'not supported'} over {n_seeds} seeds: mean normalised KeyToken gap "
        f"{fmt(rank['statistic'])} under the method vs {fmt(rank['null_mean'])} over {rank['n_null']} null draws "
        f"(stratified rank p = {rank['p_value']:.3g}, alpha {alpha:g}); method minus nulls {fmt(ci['mean'])}, "
        f"{int(100 * confidence)}% interval {interval} over {ci['n']} item x seed rows clustered by "
        f"{ci['n_clusters']} items{why}; {marks_text}"
    )


def _method_minus_nulls_ci(usable: Mapping[Any, Mapping[str, Any]], s: SeedSettings) -> dict[str, Any]:
    """The per-item method-minus-nulls gaps of every seed, pooled as item x seed rows, with a
    bootstrap interval that resamples items (clusters of one item's rows on every seed)."""
    values: list[float] = []
    clusters: list[str] = []
    for t in usable.values():
        it = t.get("items") or {}
        for i, gm, gn in zip(it.get("ids", []), it.get("method_gap", []), it.get("null_mean_gap", [])):
            values.append(gm - gn)
            clusters.append(str(i))
    return cluster_bootstrap_mean_ci(values, clusters, n_boot=s.n_boot, confidence=s.confidence, seed=s.seed)


# ------------------------------------------------------------------ finding 2

FINDING2_RULE = (
    "per setting, the per-item keyword-specific change (the same difference-in-differences as one seed's finding 2) "
    "of every seed's items at this checkpoint, pooled as items x seeds; mean with a percentile bootstrap interval "
    "that resamples items (clusters of one item's rows on every seed) at confidence 1 - alpha / k for k settings "
    "(Bonferroni); a setting counts when it has >= min_items distinct items and its controls held at every seed; "
    "supported when some counted setting's lower end exceeds min_effect"
)


def pooled_finding2(
    controlled: Mapping[Any, Mapping[str, Any] | None],
    settings: SeedSettings | None = None,
) -> dict[str, Any]:
    """Finding 2 at one checkpoint (the same name at every seed), pooled over seeds (rule: :data:`FINDING2_RULE`).

    ``controlled``: seed -> that checkpoint's controlled recovery (``ControlledRecovery.to_dict()``;
    None where the seed never reached the checkpoint, e.g. its forget accuracy never crossed the target).
    """
    s = settings or SeedSettings()
    d = s.dilemma_settings
    present = {k: c for k, c in controlled.items() if c}
    per_seed = {k: finding2_verdict(c, d) for k, c in present.items()}
    marks = _finding2_marks(controlled, per_seed)
    out: dict[str, Any] = {
        "rule": FINDING2_RULE,
        "seeds": marks,
        "n_seeds_pooled": len(present),
        "per_seed": {str(k): {"supported": v["supported"], "verdict": v["verdict"]} for k, v in per_seed.items()},
    }
    if not present:
        out.update(supported=False, verdict="not applicable: no seed reached this checkpoint")
        return out
    res = {k: ControlledRecovery.from_dict(c) for k, c in present.items()}
    stat = d.statistic or ("did_negative" if all("negative" in r.raw["runs"] for r in res.values()) else "did")
    names: list[str] = []
    for r in res.values():
        names += [x["name"] for x in r.raw["settings"] if x["name"] not in names]
    k = len(names)
    conf = 1 - d.alpha / max(1, k)
    floor = float(d.min_effect.get(d.outcome, 0.0))
    rows = _pooled_setting_rows(res, names, d, stat, conf, floor)
    out.update(statistic=stat, outcome=d.outcome, confidence=conf, n_settings=k, min_effect=floor, settings=rows)
    usable = {n: r for n, r in rows.items() if r["usable"]}
    hits = {n: r for n, r in usable.items() if r["above_zero"]}
    if not usable:
        n_max = max((r["n_items"] for r in rows.values()), default=0)
        out.update(
            supported=False,
            verdict=f"not applicable over {len(present)} seeds: at most {n_max} distinct "
            f"eligible items in a setting whose controls held (need {d.min_items}); "
            f"not supported; {marks['text']}",
        )
        return out
    best_name, best = max((hits or usable).items(), key=lambda kv: kv[1]["interval"][0])
    out["best_setting"] = best_name
    out["supported"] = bool(hits)
    out["verdict"] = _finding2_verdict(best_name, best, len(hits), len(present), k, stat, d.outcome, conf, floor, marks)
    return out


def _finding2_marks(
    controlled: Mapping[Any, Mapping[str, Any] | None], per_seed: Mapping[Any, Mapping[str, Any]]
) -> dict[str, Any]:
    """The per-seed finding-2 marks: a seed's verdict where it has one that applies, else None."""
    return seed_marks(
        {
            k: (
                per_seed[k]["supported"]
                if k in per_seed and not per_seed[k]["verdict"].startswith("not applicable")
                else None
            )
            for k in controlled
        }
    )


def _finding2_verdict(
    best_name: str,
    best: Mapping[str, Any],
    n_hits: int,
    n_seeds: int,
    n_settings: int,
    stat: str,
    outcome: str,
    conf: float,
    floor: float,
    marks: Mapping[str, Any],
) -> str:
    """The pooled finding-2 verdict from its strongest setting (the one with the highest lower end)."""
    numbers = (
        f"{best_name}: {fmt(best['mean'])}, interval [{fmt(best['interval'][0])}, {fmt(best['interval'][1])}], "
        f"{best['n_rows']} item x seed rows of {best['n_items']} items"
    )
    test = (
        f"{stat} of the {outcome} change, cluster bootstrap over items at {100 * conf:.1f}% (Bonferroni over "
        f"{n_settings} settings), lower end must exceed {floor:g}"
    )
    return (
        f"supported over {n_seeds} seeds: keyword-specific recovery in {n_hits} of {n_settings} settings; "
        f"strongest {numbers} ({test}); {marks['text']}"
        if n_hits
        else f"not supported over {n_seeds} seeds: no setting's interval lies above {floor:g}; highest "
        f"lower end {numbers} ({test}); {marks['text']}"
    )


def _pooled_setting_rows(
    res: Mapping[Any, ControlledRecovery], names: list[str], d: DilemmaSettings, stat: str, conf: float, floor: float
) -> dict[str, dict[str, Any]]:
    """Per setting: every seed's per-item keyword-specific changes pooled as item x seed rows, their mean
    and cluster bootstrap interval, whether a control collapsed at some seed, and whether it counts."""
    pooled: dict[str, dict[str, list]] = {n: {"values": [], "ids": [], "collapsed": []} for n in names}
    n_boot = max(r.settings.n_boot for r in res.values())
    for r in res.values():
        for n, e in item_effects(r.raw, r.settings, d.outcome, stat).items():
            pooled[n]["values"] += e["values"]
            pooled[n]["ids"] += [str(i) for i in e["ids"]]
            pooled[n]["collapsed"].append(e["collapsed"])
    rows = {}
    for n, p in pooled.items():
        ci = cluster_bootstrap_mean_ci(p["values"], p["ids"], n_boot=n_boot, confidence=conf, seed=d.seed)
        collapsed = (
            True
            if any(c is True for c in p["collapsed"])
            else (None if all(c is None for c in p["collapsed"]) else False)
        )
        ok = ci["n_clusters"] >= d.min_items and ci["interval"] is not None
        rows[n] = {
            "mean": ci["mean"],
            "interval": ci["interval"],
            "n_rows": ci["n"],
            "n_items": ci["n_clusters"],
            "collapsed": collapsed,
            "above_zero": bool(ok and ci["interval"][0] > floor),
            "usable": bool(ok and collapsed is not True),
        }
    return rows


def checkpoints_by_name(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> checkpoint name (``step_10``, ``forget_below_0.5``, ``final``) -> its measurement,
    from a study's methods (each name of a checkpoint that carries several)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m, r in methods.items():
        for c in (r.get("trajectory") or {}).get("measured") or []:
            for n in c.get("names") or [f"step_{c['step']}"]:
                out.setdefault(m, {}).setdefault(n, c)
    return out


# ------------------------------------------------------------------ the dilemma

DILEMMA_RULE = (
    "(a) the summed within-stratum Spearman rho of erased share and utility drop, with each seed's strata of "
    "matched forgetting kept apart (stratum = seed x target) and shuffled within them; (b) the share of recovered "
    "items some probe finds over items x seeds x checkpoints, with a percentile bootstrap interval resampling "
    "items (clusters of one item's rows on every seed and checkpoint); supported as per seed: (a) p <= alpha on "
    ">= min_points checkpoints, (b) the interval's lower end >= always_share"
)


def recovered_rows(methods: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, float]]:
    """Per recovered forget item at each measured checkpoint (the items the dilemma's part (b)
    counts): ``(item id, 1.0 if some probe finds it else 0.0)``."""
    rows = []
    for r in methods.values():
        for c in (r.get("trajectory") or {}).get("measured") or []:
            ctrl = c.get("controlled")
            if not ctrl:
                continue
            pres = c.get("presence") or {}
            kind = dict(zip(pres.get("ids") or [], pres.get("calls") or []))
            for i in recovered_ids(ctrl):
                if str(i) in kind and kind[str(i)] != "unprobed":
                    rows.append((str(i), 1.0 if kind[str(i)] == "hidden" else 0.0))
    return rows


def pooled_dilemma(
    points: Mapping[Any, Sequence[Mapping[str, Any]]],
    rows: Mapping[Any, Sequence[tuple[str, float]]],
    per_seed: Mapping[Any, Mapping[str, Any] | None],
    settings: SeedSettings | None = None,
) -> dict[str, Any]:
    """The dilemma pooled over seeds (rule: :data:`DILEMMA_RULE`).

    ``points``: seed -> that seed's dilemma points (:func:`unpact.analyses.dilemma.checkpoint_point`);
    ``rows``: seed -> :func:`recovered_rows`; ``per_seed``: seed -> that seed's dilemma verdict (its marks).
    """
    s = settings or SeedSettings()
    d = s.dilemma_settings
    pts = [
        {**p, "seed": k, "stratum": None if p.get("stratum") is None else f"seed{k}:{p['stratum']}"}
        for k, ps in points.items()
        for p in ps
    ]
    a = dilemma_verdict(pts, d)["erasure_costs_utility"]
    a["verdict"] = a["verdict"].replace("strata", "seed x target strata", 1)
    b = _pooled_presence_share(rows, s)
    marks = {
        part: seed_marks({k: ((v or {}).get(part) or {}).get("supported") if v else None for k, v in per_seed.items()})
        for part in ("erasure_costs_utility", "recoverable_is_present")
    }
    overall = seed_marks({k: (v or {}).get("supported") if v else None for k, v in per_seed.items()})
    a["seeds"], b["seeds"] = marks["erasure_costs_utility"], marks["recoverable_is_present"]
    both = bool(a["supported"] and b["supported"])
    return {
        "rule": DILEMMA_RULE,
        "erasure_costs_utility": a,
        "recoverable_is_present": b,
        "supported": both,
        "seeds": overall,
        "n_seeds_pooled": len(points),
        "verdict": (
            f"{'supported' if both else 'not supported'} over {len(points)} seeds: erasure goes with "
            f"utility loss - {a['verdict'].split(':')[0]} ({a['seeds']['consistency']} alone); "
            f"recoverable knowledge is probe-present - {b['verdict'].split(':')[0]} "
            f"({b['seeds']['consistency']} alone); {overall['text']}"
        ),
    }


def _pooled_presence_share(rows: Mapping[Any, Sequence[tuple[str, float]]], settings: SeedSettings) -> dict[str, Any]:
    """The dilemma's part (b): the share of recovered items some probe finds over items x seeds x
    checkpoints, with its cluster bootstrap interval over items and its verdict."""
    always_share = settings.dilemma_settings.always_share
    vals = [v for rs in rows.values() for _, v in rs]
    ids = [i for rs in rows.values() for i, _ in rs]
    ci = cluster_bootstrap_mean_ci(
        vals, ids, n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed
    )
    share: dict[str, Any] = {
        "test": "share of recovered items some probe finds over items x seeds x checkpoints, "
        "cluster bootstrap over items",
        "n_rows": ci["n"],
        "n_items": ci["n_clusters"],
        "n_present": int(sum(vals)),
        "share": ci["mean"],
        "interval": ci["interval"],
        "always_share": always_share,
    }
    if not vals:
        share.update(
            supported=False,
            verdict="not applicable: no item was recovered at any checkpoint of any seed; not supported",
        )
    else:
        sup = ci["interval"][0] >= always_share
        share.update(
            supported=bool(sup),
            verdict=(
                f"{'supported' if sup else 'not supported'}: {int(sum(vals))} of {len(vals)} recovered item x seed x "
                f"checkpoint rows ({fmt(100 * ci['mean'], 0)}%) are present by some probe, "
                f"{int(100 * settings.confidence)}% interval [{fmt(ci['interval'][0])}, {fmt(ci['interval'][1])}] "
                f"clustered by {ci['n_clusters']} items (needs its lower end >= {always_share:g})"
            ),
        )
    return share


# ------------------------------------------------------------------ the summary

#: The summary metrics shown as mean and min-max over seeds (the columns of ``unpact run``'s table).
SPREAD_KEYS = (
    "forget_rouge",
    "retain_rouge",
    "general_accuracy",
    "forget_quality",
    "model_utility",
    "recovery_prompt",
    "recovery_activation",
)


def summary_spread(summaries: Mapping[Any, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per summary row (the original, each method): each metric's mean, min and max over seeds.

    Example:
        >>> r = summary_spread({0: [{"method": "ga", "forget_rouge": 0.2}], 1: [{"method": "ga", "forget_rouge": 0.4}]})
        >>> r[0]["forget_rouge"]["mean"], r[0]["forget_rouge"]["min"], r[0]["forget_rouge"]["max"]
        (0.30000000000000004, 0.2, 0.4)
    """
    order: list[str] = []
    by: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for k, rows in summaries.items():
        for r in rows:
            if r["method"] not in by:
                order.append(r["method"])
            by.setdefault(r["method"], {})[k] = r
    out = []
    for m in order:
        row: dict[str, Any] = {"method": m, "n_seeds": len(by[m])}
        for key in SPREAD_KEYS:
            vals = {k: r.get(key) for k, r in by[m].items() if isinstance(r.get(key), (int, float))}
            row[key] = (
                {
                    "mean": mean(list(vals.values())),
                    "min": min(vals.values()),
                    "max": max(vals.values()),
                    "per_seed": {str(k): v for k, v in vals.items()},
                }
                if vals
                else None
            )
        out.append(row)
    return out


# ------------------------------------------------------------------ everything


def pool_seeds(per_seed: Mapping[Any, Mapping[str, Any]], settings: SeedSettings | None = None) -> dict[str, Any]:
    """The pooled verdicts and the spread from several seeds of one study.

    ``per_seed``: seed -> ``{"methods": stage results per method, "analyses": that seed's analyses,
    "summary": its summary rows}`` (a ``results.json`` has all three). Returns ``{"seeds",
    "summary" (:func:`summary_spread`), "finding1" (method -> :func:`pooled_keyword_null`),
    "finding2" (method -> checkpoint name -> :func:`pooled_finding2`), "dilemma"
    (:func:`pooled_dilemma`), "per_seed_marks" (the other verdicts' per-seed marks), "seed_dependent"
    (the claims that flip), "precondition"}``.
    """
    s = settings or SeedSettings()
    seeds = list(per_seed)
    an = {k: per_seed[k].get("analyses") or {} for k in seeds}
    methods = {k: per_seed[k].get("methods") or {} for k in seeds}
    method_names: list[str] = []
    for k in seeds:
        method_names += [m for m in methods[k] if m not in method_names]
    out: dict[str, Any] = {
        "seeds": seeds,
        "summary": summary_spread({k: per_seed[k].get("summary") or [] for k in seeds}),
    }
    f1 = _pooled_finding1_by_method(methods, method_names, seeds, s)
    out["finding1"] = f1
    f2 = _pooled_finding2_by_checkpoint(methods, method_names, seeds, s)
    out["finding2"] = f2
    n_sup = sum(v["supported"] for cps_ in f2.values() for v in cps_.values())
    n_all = sum(len(v) for v in f2.values())
    if n_all:
        out["finding2_verdict"] = (
            f"{'supported' if n_sup else 'not supported'}: keyword-specific recovery pooled "
            f"over {len(seeds)} seeds at {n_sup} of {n_all} checkpoints (matched by name across "
            "seeds, each tested on its own)"
        )
    if any(a.get("dilemma") for a in an.values()):
        out["dilemma"] = pooled_dilemma(
            {k: (an[k].get("dilemma") or {}).get("points") or [] for k in seeds},
            {k: recovered_rows(methods[k]) for k in seeds},
            {k: an[k].get("dilemma") for k in seeds},
            s,
        )
    marks = _other_verdict_marks(an, method_names, seeds)
    out["per_seed_marks"] = marks
    out["seed_dependent"] = _seed_dependent_claims(f1, f2, out.get("dilemma"), marks)
    pre = {k: an[k].get("precondition") for k in seeds if an[k].get("precondition")}
    failed = [k for k, p in pre.items() if p.get("holds") is False]
    out["precondition"] = {"holds": None if not pre else not failed, "failed_seeds": failed}
    if failed:
        na = (
            f"not applicable: the original model does not know the forget set at seed "
            f"{', '.join(map(str, failed))} ({pre[failed[0]].get('reason')})"
        )
        for v in [*f1.values(), *(x for c in f2.values() for x in c.values())] + (
            [out["dilemma"]] if "dilemma" in out else []
        ):
            v["verdict"], v["supported"] = na, None
    return out


def _pooled_finding1_by_method(
    methods: Mapping[Any, Mapping[str, Any]], method_names: Sequence[str], seeds: Sequence[Any], settings: SeedSettings
) -> dict[str, dict[str, Any]]:
    """Finding 1 against the nulls pooled over seeds, per method that ran the keyword_nulls stage at some seed."""
    pooled = {}
    for m in method_names:
        nulls = {k: (methods[k].get(m) or {}).get("keyword_nulls") for k in seeds}
        if any(nulls.values()):
            pooled[m] = pooled_keyword_null({k: (v or {}).get("test") for k, v in nulls.items()}, settings)
    return pooled


def _pooled_finding2_by_checkpoint(
    methods: Mapping[Any, Mapping[str, Any]], method_names: Sequence[str], seeds: Sequence[Any], settings: SeedSettings
) -> dict[str, dict[str, Any]]:
    """Finding 2 pooled over seeds, per method and checkpoint name that some seed measured with controls."""
    cps = {k: checkpoints_by_name(methods[k]) for k in seeds}
    f2: dict[str, dict[str, Any]] = {}
    for m in method_names:
        names: list[str] = []
        for k in seeds:
            names += [n for n in (cps[k].get(m) or {}) if n not in names]
        for n in names:
            ctrl = {k: ((cps[k].get(m) or {}).get(n) or {}).get("controlled") for k in seeds}
            if any(ctrl.values()):
                f2.setdefault(m, {})[n] = pooled_finding2(ctrl, settings)
    return f2


def _other_verdict_marks(
    analyses: Mapping[Any, Mapping[str, Any]], method_names: Sequence[str], seeds: Sequence[Any]
) -> dict[str, Any]:
    """The per-seed marks of the verdicts that are not pooled (collapse, each method's keyword-focus sign test)."""
    marks: dict[str, Any] = {}
    if any("collapse" in a for a in analyses.values()):
        marks["collapse"] = seed_marks({k: (analyses[k].get("collapse") or {}).get("holds") for k in seeds})
    for m in method_names:
        if any(m in (a.get("keyword_focus") or {}) for a in analyses.values()):
            marks[f"keyword_focus_sign_test/{m}"] = seed_marks(
                {k: ((analyses[k].get("keyword_focus") or {}).get(m) or {}).get("holds") for k in seeds}
            )
    return marks


def _seed_dependent_claims(
    finding1: Mapping[str, Mapping[str, Any]],
    finding2: Mapping[str, Mapping[str, Mapping[str, Any]]],
    dilemma: Mapping[str, Any] | None,
    marks: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """The claims whose per-seed verdicts disagree (held on some seeds and not on others)."""
    dependent = [f"finding 1, {m}" for m, v in finding1.items() if v["seeds"]["seed_dependent"]]
    dependent += [
        f"finding 2, {m} at {n}" for m, c in finding2.items() for n, v in c.items() if v["seeds"]["seed_dependent"]
    ]
    if dilemma is not None:
        dependent += [
            f"dilemma, {p}"
            for p in ("erasure_costs_utility", "recoverable_is_present")
            if dilemma[p]["seeds"]["seed_dependent"]
        ]
    dependent += [k for k, v in marks.items() if v["seed_dependent"]]
    return dependent


__all__ = [
    "DILEMMA_RULE",
    "FINDING1_RULE",
    "FINDING2_RULE",
    "SPREAD_KEYS",
    "SeedSettings",
    "checkpoints_by_name",
    "pool_seeds",
    "pooled_dilemma",
    "pooled_finding2",
    "pooled_keyword_null",
    "recovered_rows",
    "seed_marks",
    "summary_spread",
]
