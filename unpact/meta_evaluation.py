"""How far the presence call can be trusted: faithfulness, error rates and robustness on model pools.

open-unlearning's meta-evaluation (arXiv 2506.12618) scores an unlearning metric by how well
it separates models that know the forget set from models that never saw it. This module
does that for every presence probe (:mod:`unpact.probes`) and for the study's combined
hidden / erased call (:func:`unpact.presence.presence_calls`), on the pools of
:mod:`unpact.pools`:

* **faithfulness**: the AUC with which a model-level score (a probe's share of facts found;
  the call's share of facts called present, known or hidden) ranks the held-out positives
  above the held-out negatives (:func:`faithfulness_auc`, the Mann-Whitney statistic);
* **sensitivity and specificity** per item, pooled over the held-out members, with Wilson
  intervals; for the combined call the **false-hidden rate**: among the facts a negative
  does not answer, the share the call says are hidden (:func:`call_rates`);
* **robustness**: the call on negatives after 4-bit quantization and after relearning on
  half of the forget authors (asked about the other half) must stay "erased".

The pooled items are the same facts asked of several models, so the intervals treat
model x fact pairs as independent; the per-member rows show the spread the intervals do not.

Example:
    >>> faithfulness_auc([0.9, 0.8, 1.0], [0.1, 0.85, 0.0])
    0.8888888888888888
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy.stats import mannwhitneyu

from unpact.analyses.presence_call import MAX_FALSE_HIDDEN, MAX_FALSE_HIDDEN_UPPER
from unpact.attacks.quantization import quantize_model_
from unpact.controls import retain_finetune_model
from unpact.data.records import QAItem
from unpact.emphasis.recovery import RecoveryConfig
from unpact.metrics import rouge_recalls
from unpact.models import load_model
from unpact.pools import PoolMember, PoolSettings, pool_items, read_pools
from unpact.presence import PresenceSettings, calibrate, presence_calls, probe_model, usable_probes
from unpact.probes import ProbeResult
from unpact.progress import ProgressFactory, null_progress
from unpact.stats import wilson_interval

#: the combined call's name in the tables (beside the probes' names)
CALL = "call"


@dataclass
class MetaSettings:
    """The meta-evaluation's settings and the bars it is held to.

    Attributes:
        presence: the probes and the specificity rule the study uses (its defaults).
        threshold: ROUGE-L recall at which a plain answer counts as right: the study's
            (:class:`unpact.emphasis.recovery.RecoveryConfig`'s), so the call is the study's call.
        max_new_tokens: greedy tokens of a plain answer.
        quant_bits: the robustness check's quantization (4 bits, round-to-nearest per channel,
            as the quantization attack).
        relearn_lr, relearn_steps: the robustness check's relearning, the largest setting of the
            relearning attack's sweep (:class:`unpact.attacks.relearning.RelearningConfig`).
        max_false_hidden, max_false_hidden_upper: the bars on the combined call's false-hidden
            rate on held-out negatives and on its Wilson upper bound: the study's own
            (:data:`unpact.analyses.presence_call.MAX_FALSE_HIDDEN` and ``MAX_FALSE_HIDDEN_UPPER``), at
            which the study lets the call decide.
        min_sensitivity: the bar on the call's sensitivity on held-out positives.
    """

    presence: PresenceSettings = field(default_factory=PresenceSettings)
    threshold: float = RecoveryConfig.threshold
    max_new_tokens: int = 32
    quant_bits: int = 4
    relearn_lr: float = 5e-4
    relearn_steps: int = 20
    max_false_hidden: float = MAX_FALSE_HIDDEN
    max_false_hidden_upper: float = MAX_FALSE_HIDDEN_UPPER
    min_sensitivity: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_member(model, items: Sequence[QAItem], settings: MetaSettings) -> dict[str, Any]:
    """The plain answers' ROUGE-L recalls and every probe on ``model`` for ``items``."""
    recalls = rouge_recalls(model, items, max_new_tokens=settings.max_new_tokens)
    return {
        "ids": [str(it.id) for it in items],
        "plain_recall": recalls,
        "plain_correct": [r >= settings.threshold for r in recalls],
        "probes": probe_model(model, items, settings.presence),
    }


def member_call(record: Mapping[str, Any], use: Sequence[str]) -> dict[str, Any]:
    """The combined call (:func:`unpact.presence.presence_calls`) on one measured member."""
    return presence_calls(record["ids"], record["plain_correct"], record["probes"], use)


def faithfulness_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive's score > a negative's), ties counted half: the Mann-Whitney U over ``n_pos * n_neg``."""
    if not positive or not negative:
        return None
    u = mannwhitneyu(list(positive), list(negative), alternative="two-sided").statistic
    return float(u) / (len(positive) * len(negative))


def call_rates(calls: Sequence[Sequence[str]], positive: bool) -> dict[str, Any]:
    """Pooled item rates of the combined call over members' ``calls`` (lists of known / hidden /
    erased / unprobed): on positives, sensitivity (known or hidden) and the hidden share of the
    facts the plain prompt misses; on negatives, specificity and the false-hidden rate."""
    flat = [c for member in calls for c in member if c != "unprobed"]
    present = sum(c in ("known", "hidden") for c in flat)
    forgotten = [c for c in flat if c in ("hidden", "erased")]
    hidden = forgotten.count("hidden")
    if positive:
        return {
            "sensitivity": present / len(flat) if flat else None,
            "sensitivity_ci": wilson_interval(present, len(flat)),
            "n": len(flat),
            "hidden_found": hidden / len(forgotten) if forgotten else None,
            "hidden_found_ci": wilson_interval(hidden, len(forgotten)),
            "n_plain_wrong": len(forgotten),
        }
    return {
        "specificity": 1 - present / len(flat) if flat else None,
        "specificity_ci": _complement(wilson_interval(present, len(flat))),
        "n": len(flat),
        "false_hidden": hidden / len(forgotten) if forgotten else None,
        "false_hidden_ci": wilson_interval(hidden, len(forgotten)),
        "n_plain_wrong": len(forgotten),
    }


def _complement(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [1 - ci[1], 1 - ci[0]]


def probe_rates(records: Sequence[Mapping[str, Any]], name: str, positive: bool) -> dict[str, Any]:
    """One probe's pooled sensitivity (``positive``: share found) or specificity (share not found)
    over members' records, with a Wilson interval."""
    present = [bool(p) for r in records for p in r["probes"][name]["present"]]
    n = len(present)
    if positive:
        k = sum(present)
        return {"sensitivity": k / n if n else None, "sensitivity_ci": wilson_interval(k, n), "n_positive": n}
    k = n - sum(present)
    return {"specificity": k / n if n else None, "specificity_ci": wilson_interval(k, n), "n_negative": n}


def calibration_probes(records: Mapping[str, Mapping[str, Any]], calibration: Sequence[str], settings: MetaSettings):
    """The probes the study would use, calibrated on the calibration members only as the study
    calibrates them (:func:`unpact.presence.calibrate`: its positive control counted on the facts it
    hides, and its negative control), and why others are left out."""
    pos_name, neg_name = calibration
    pos, neg = records[pos_name], records[neg_name]
    hidden = [i for i, ok in zip(pos["ids"], pos["plain_correct"]) if not ok]
    cal = calibrate(pos["probes"], neg["probes"], hidden)
    use, left = usable_probes(cal, settings.presence.probes, settings.presence.min_specificity)
    return use, left, cal


def summarise(
    members: Sequence[PoolMember],
    records: Mapping[str, Mapping[str, Any]],
    settings: MetaSettings,
    calibration: Sequence[str],
) -> dict[str, Any]:
    """The meta-evaluation table: per probe and for the combined call, faithfulness AUC and pooled
    rates on the held-out members, each bar stated as met or not."""
    use, left, cal = calibration_probes(records, calibration, settings)
    held = [m for m in members if m.held_out and m.name in records]
    pos = [m for m in held if m.positive]
    neg = [m for m in held if not m.positive]
    calls = {m.name: member_call(records[m.name], use) for m in held}
    rows: dict[str, Any] = {}
    for name in settings.presence.probes:
        share = {m.name: ProbeResult.from_dict(records[m.name]["probes"][name]).share_present for m in held}
        rows[name] = {
            "auc": faithfulness_auc([share[m.name] for m in pos], [share[m.name] for m in neg]),
            **probe_rates([records[m.name] for m in pos], name, True),
            **probe_rates([records[m.name] for m in neg], name, False),
            "used_by_call": name in use,
        }
    present = {m.name: _present_share(calls[m.name]["calls"]) for m in held}
    pos_rates = call_rates([calls[m.name]["calls"] for m in pos], True)
    neg_rates = call_rates([calls[m.name]["calls"] for m in neg], False)
    rows[CALL] = {
        "auc": faithfulness_auc([present[m.name] for m in pos], [present[m.name] for m in neg]),
        **pos_rates,
        **neg_rates,
    }
    return {
        "probes_used": use,
        "probes_left_out": left,
        "calibration": cal,
        "table": rows,
        "bars": bars(rows[CALL], settings),
        "members": {m.name: _member_row(m, records[m.name], calls[m.name]) for m in held},
        "n_positive_members": len(pos),
        "n_negative_members": len(neg),
    }


def _present_share(calls: Sequence[str]) -> float:
    asked = [c for c in calls if c != "unprobed"]
    return sum(c in ("known", "hidden") for c in asked) / len(asked) if asked else 0.0


def _member_row(member: PoolMember, record: Mapping[str, Any], call: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "positive": member.positive,
        "recipe": member.recipe,
        "arch": member.arch,
        "plain_correct": sum(record["plain_correct"]) / len(record["plain_correct"]),
        "share_present": {k: v["share_present"] for k, v in record["probes"].items()},
        "counts": call["counts"],
    }


def bars(call: Mapping[str, Any], settings: MetaSettings) -> dict[str, Any]:
    """Each bar of :class:`MetaSettings` on the combined call's row: the value, the bar, met or not."""
    fh, fh_ci, sens = call.get("false_hidden"), call.get("false_hidden_ci"), call.get("sensitivity")
    return {
        "false_hidden": {
            "value": fh,
            "bar": settings.max_false_hidden,
            "met": fh is not None and fh <= settings.max_false_hidden,
        },
        "false_hidden_upper": {
            "value": fh_ci[1] if fh_ci else None,
            "bar": settings.max_false_hidden_upper,
            "met": bool(fh_ci) and fh_ci[1] <= settings.max_false_hidden_upper,
        },
        "sensitivity": {
            "value": sens,
            "bar": settings.min_sensitivity,
            "met": sens is not None and sens >= settings.min_sensitivity,
        },
    }


def quantized(model, bits: int):
    """``model`` with its linear weights rounded to ``bits`` bits in place (the quantization attack's RTN)."""
    with torch.no_grad():
        quantize_model_(model, bits)
    return model


def relearn_halves(items: Sequence[QAItem]) -> tuple[list[QAItem], list[QAItem]]:
    """The forget items split by author: the first half of the authors (relearned) and the rest (asked)."""
    authors = list(dict.fromkeys(str((it.meta or {}).get("author")) for it in items))
    first = set(authors[: len(authors) // 2])
    return [it for it in items if str(it.meta.get("author")) in first], [
        it for it in items if str(it.meta.get("author")) not in first
    ]


def robustness(
    load: Callable[[PoolMember], Any],
    members: Sequence[PoolMember],
    items: Sequence[QAItem],
    use: Sequence[str],
    settings: MetaSettings,
) -> dict[str, Any]:
    """The call on each held-out ``as_trained`` member after quantization (all facts) and, for the
    negatives, after relearning half of the forget authors (asked about the other half)."""
    out: dict[str, Any] = {}
    relearned, asked = relearn_halves(items)
    for m in members:
        if not m.held_out or m.recipe != "as_trained":
            continue
        q = measure_member(quantized(load(m), settings.quant_bits), items, settings)
        row = {"quantized": member_call(q, use)["counts"]}
        if not m.positive:
            base = load(m)
            row["before_relearning"] = member_call(measure_member(base, asked, settings), use)["counts"]
            model = retain_finetune_model(base, relearned, lr=settings.relearn_lr, steps=settings.relearn_steps)
            r = measure_member(model, asked, settings)
            row["relearned"] = member_call(r, use)["counts"]
            recalls = rouge_recalls(model, relearned, max_new_tokens=settings.max_new_tokens)
            row["relearned_plain_correct"] = sum(x >= settings.threshold for x in recalls) / len(relearned)
        out[m.name] = {"positive": m.positive, **row}
    return out


def meta_evaluate(
    pool_dir: str | os.PathLike,
    settings: MetaSettings | None = None,
    world_dir: str | os.PathLike | None = None,
    progress: ProgressFactory = null_progress,
) -> dict[str, Any]:
    """Measure every member of the pools in ``pool_dir`` and return :func:`summarise`'s table,
    the robustness rows and the per-member records. Members not built are listed in ``missing``
    (the calibration members must be there)."""
    settings = settings or MetaSettings()
    members, manifest = read_pools(pool_dir)
    items, _ = pool_items(PoolSettings(**_pool_settings(manifest)), world_dir)

    def load(m: PoolMember):
        return load_model(str(Path(pool_dir) / m.name))

    built = [m for m in members if (Path(pool_dir) / m.name / "config.json").is_file()]
    records = {}
    with progress(total=len(built), desc="pool members") as bar:
        for m in built:
            records[m.name] = measure_member(load(m), items, settings)
            bar.update(1)
    summary = summarise(members, records, settings, manifest["calibration"])
    summary["robustness"] = robustness(load, built, items, summary["probes_used"], settings)
    summary["missing"] = [m.name for m in members if m not in built]
    summary["settings"] = settings.to_dict()
    summary["n_items"] = len(items)
    summary["records"] = records
    return summary


def _pool_settings(manifest: Mapping[str, Any]) -> dict[str, Any]:
    s = dict(manifest["settings"])
    return {k: s[k] for k in ("forget_split", "retain_split")}


__all__ = [
    "CALL",
    "MetaSettings",
    "bars",
    "call_rates",
    "calibration_probes",
    "faithfulness_auc",
    "measure_member",
    "member_call",
    "meta_evaluate",
    "probe_rates",
    "quantized",
    "relearn_halves",
    "robustness",
    "summarise",
]
