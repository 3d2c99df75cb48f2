"""The hidden / erased call as a whole, calibrated: its false-hidden rate, its sensitivity, and the
hidden count net of the false alarms to expect.

Each probe is calibrated on its own (:func:`unpact.probes.sensitivity_specificity`), but the call
that counts an item *hidden* is the union of the probes that take part: an item is hidden when
*any* of them finds it. The union raises more false alarms than any one probe, so the call itself
is measured on the same controls:

* **false-hidden rate**: the share of the negative control's items (facts it never had) that the
  union of the probes in the call finds, with a Wilson 95% interval;
* **sensitivity**: the share of the items the positive control really hides (its plain answer is
  wrong) that the union finds;
* **net hidden**: a method's hidden count minus the false alarms expected among its forgotten
  items, ``hidden - rate * forgotten``, with the interval from the rate's interval (clipped at 0).
  It counts every forgotten item as able to raise a false alarm, so it subtracts at most what
  chance could have added;
* **decides**: the call decides only when its false-hidden rate is at most :data:`MAX_FALSE_HIDDEN`
  and the rate's upper bound at most :data:`MAX_FALSE_HIDDEN_UPPER`; otherwise the counts are
  reported and the summary says the call does not decide.

Example:
    >>> neg = {"format": {"ids": ["a", "b", "c", "d"], "present": [False, True, False, False]},
    ...        "choice": {"ids": ["a", "b", "c", "d"], "present": [True, True, False, False]}}
    >>> false_hidden_rate(neg, ["format", "choice"])["rate"]
    0.5
    >>> net_hidden(6, 20, {"rate": 0.1, "interval": [0.05, 0.2]})
    {'net': 4.0, 'interval': [2.0, 5.0], 'expected_false': 2.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unpact.stats import wilson_interval

#: The largest false-hidden rate of the combined call on the negative control at which its
#: hidden / erased counts decide: one false alarm in ten forgotten items (the bar each probe
#: already meets alone, ``presence.min_specificity`` = 0.9, now asked of the union).
MAX_FALSE_HIDDEN = 0.10
#: The largest upper end of that rate's Wilson 95% interval: a rate measured on too few items
#: to rule out more than 15% false alarms does not decide either: at the default 24 negative
#: items the call decides with no false alarm (upper end 0.14) and not with one (0.20); 100
#: items allow about 5 (0.11).
MAX_FALSE_HIDDEN_UPPER = 0.15


def union_present(probes: Mapping[str, Mapping[str, Any]], use: Sequence[str]) -> dict[str, bool]:
    """Per item id: whether any probe of ``use`` finds it (an item no such probe asked is left out)."""
    out: dict[str, bool] = {}
    for name in use:
        result = probes.get(name)
        if not result:
            continue
        for item_id, present in zip(result["ids"], result["present"]):
            if present is None:
                continue
            out[str(item_id)] = out.get(str(item_id), False) or bool(present)
    return out


def false_hidden_rate(negative: Mapping[str, Mapping[str, Any]], use: Sequence[str]) -> dict[str, Any]:
    """The union call on the negative control: the share of its items called present, with a Wilson interval."""
    calls = union_present(negative, use)
    n, k = len(calls), sum(calls.values())
    return {"rate": k / n if n else None, "interval": wilson_interval(k, n), "n": n, "n_false": k, "probes": list(use)}


def call_sensitivity(
    positive: Mapping[str, Mapping[str, Any]], hidden_ids: Sequence[str], use: Sequence[str]
) -> dict[str, Any]:
    """The union call on the positive control's really hidden items: the share it finds, with a Wilson interval."""
    keep = set(map(str, hidden_ids))
    calls = {i: v for i, v in union_present(positive, use).items() if i in keep}
    n, k = len(calls), sum(calls.values())
    return {"rate": k / n if n else None, "interval": wilson_interval(k, n), "n": n, "n_found": k}


def net_hidden(hidden: int, forgotten: int, fhr: Mapping[str, Any]) -> dict[str, Any] | None:
    """The hidden count net of the false alarms expected among ``forgotten`` items at the false-hidden rate."""
    if fhr.get("rate") is None or fhr.get("interval") is None:
        return None
    low, high = fhr["interval"]
    expected = fhr["rate"] * forgotten
    return {
        "net": max(0.0, hidden - expected),
        "interval": [max(0.0, hidden - high * forgotten), max(0.0, hidden - low * forgotten)],
        "expected_false": expected,
    }


def decides(fhr: Mapping[str, Any] | None, max_rate: float, max_upper: float) -> tuple[bool, str]:
    """Whether the call's false-hidden rate clears its bar, and the sentence that says why."""
    if not fhr or fhr.get("rate") is None:
        return False, "no negative control: the call's false-hidden rate is unmeasured, so the call does not decide"
    rate, upper = fhr["rate"], fhr["interval"][1]
    if rate <= max_rate and upper <= max_upper:
        return True, (
            f"the call's false-hidden rate {rate:.2f} [{fhr['interval'][0]:.2f}, {upper:.2f}] "
            f"(n = {fhr['n']}) clears its bar ({max_rate:g}, upper end {max_upper:g})"
        )
    return False, (
        f"the call does not decide: its false-hidden rate on the negative control is {rate:.2f} "
        f"[{fhr['interval'][0]:.2f}, {upper:.2f}] (n = {fhr['n']}); it needs <= {max_rate:g} with the "
        f"upper end <= {max_upper:g}"
    )


def calibrated_call(
    controls: Mapping[str, Any],
    use: Sequence[str],
    max_rate: float = MAX_FALSE_HIDDEN,
    max_upper: float = MAX_FALSE_HIDDEN_UPPER,
) -> dict[str, Any]:
    """The combined call's false-hidden rate, sensitivity and whether it decides, for the probes ``use``."""
    fhr = false_hidden_rate(controls["negative"], use) if controls.get("negative") else None
    sens = (
        call_sensitivity(controls["positive"], controls.get("positive_hidden_ids") or [], use)
        if controls.get("positive")
        else None
    )
    ok, why = decides(fhr, max_rate, max_upper)
    return {"probes": list(use), "false_hidden": fhr, "sensitivity": sens, "decides": ok, "why": why}


__all__ = [
    "MAX_FALSE_HIDDEN",
    "MAX_FALSE_HIDDEN_UPPER",
    "calibrated_call",
    "call_sensitivity",
    "decides",
    "false_hidden_rate",
    "net_hidden",
    "union_present",
]
