"""The combined hidden / erased call, calibrated as a whole (unpact.analyses.presence_call)."""

import pytest

from unpact.analyses.assemble import presence_analysis
from unpact.analyses.presence_call import (
    MAX_FALSE_HIDDEN_UPPER,
    calibrated_call,
    call_sensitivity,
    decides,
    false_hidden_rate,
    net_hidden,
)


def probe(ids, present):
    return {"ids": list(ids), "present": list(present), "score": [0.0] * len(ids)}


IDS = [f"i{k}" for k in range(24)]


def test_the_union_raises_more_false_alarms_than_any_probe_alone():
    negative = {"format": probe(IDS, [k == 0 for k in range(24)]), "choice": probe(IDS, [k == 1 for k in range(24)])}
    alone = [false_hidden_rate(negative, [p])["rate"] for p in negative]
    union = false_hidden_rate(negative, ["format", "choice"])
    assert alone == [1 / 24, 1 / 24] and union["rate"] == 2 / 24 and union["n_false"] == 2
    assert union["interval"][0] < union["rate"] < union["interval"][1]


def test_a_probe_outside_the_call_does_not_count():
    negative = {"format": probe(IDS, [False] * 24), "choice": probe(IDS, [True] * 24)}
    assert false_hidden_rate(negative, ["format"])["rate"] == 0.0


def test_sensitivity_counts_only_the_really_hidden_items():
    positive = {"format": probe(IDS, [k < 12 for k in range(24)])}
    sens = call_sensitivity(positive, IDS[:12], ["format"])
    assert sens["rate"] == 1.0 and sens["n"] == 12
    assert call_sensitivity(positive, IDS[12:], ["format"])["rate"] == 0.0


def test_net_hidden_subtracts_the_expected_false_alarms_and_never_goes_below_zero():
    assert net_hidden(6, 20, {"rate": 0.1, "interval": [0.05, 0.2]}) == {
        "net": 4.0,
        "interval": [2.0, 5.0],
        "expected_false": 2.0,
    }
    assert net_hidden(1, 20, {"rate": 0.5, "interval": [0.3, 0.7]})["net"] == 0.0
    assert net_hidden(1, 20, {"rate": None, "interval": None}) is None


@pytest.mark.parametrize("n_false, ok", [(0, True), (1, False), (3, False)])
def test_the_call_decides_only_when_its_rate_clears_the_bar(n_false, ok):
    fhr = false_hidden_rate({"format": probe(IDS, [k < n_false for k in range(24)])}, ["format"])
    decided, why = decides(fhr, 0.10, MAX_FALSE_HIDDEN_UPPER)
    assert decided is ok
    assert ("does not decide" in why) is (not ok)
    assert decides(None, 0.10, 0.15)[0] is False


def test_presence_analysis_reports_the_call_and_the_net_count():
    negative = {"format": probe(IDS, [k < 3 for k in range(24)])}
    positive = {"format": probe(IDS, [True] * 24)}
    controls = {
        "negative": negative,
        "positive": positive,
        "positive_hidden_ids": IDS[:20],
        "positive_plain_recall": [0.0] * 24,
        "calibration": {},
    }
    methods = {
        "ga": {
            "presence": {
                "counts": {"known": 0, "hidden": 8, "erased": 16, "unprobed": 0},
                "probes_used": ["format"],
                "share_present": {"format": 8 / 24},
            }
        }
    }
    out = presence_analysis(methods, controls)
    call = out["calls"][0]
    assert call["false_hidden"]["rate"] == 3 / 24 and call["sensitivity"]["rate"] == 1.0
    assert out["methods"]["ga"]["net_hidden"]["net"] == pytest.approx(8 - 3 / 24 * 24)
    assert out["methods"]["ga"]["call_decides"] is False and "does not decide" in out["verdict"]
    assert calibrated_call({}, ["format"])["decides"] is False


def test_chance_levels_come_from_the_attribute_answer_space_of_the_benchmark():
    """Each embedded forget item's chance level is 1 / the distinct answers its attribute takes
    over forget, retain and holdout; a record that declares no attribute has none."""
    from unpact.data import QAItem, load_benchmark
    from unpact.presence import answer_space, chance_hits, chance_levels

    splits = [list(load_benchmark("embedded:tofu", s)) for s in ("forget10", "retain90", "holdout10")]
    space = answer_space(*splits, None)
    for attribute in ("birthplace", "birth_year", "genre", "father_job", "award"):
        values = {it.meta["value"].strip().lower() for sp in splits for it in sp if it.meta["attribute"] == attribute}
        assert space[attribute] == len(values) > 4
    chance = chance_levels(splits[0], space)
    assert all(c == 1 / space[it.meta["attribute"]] for c, it in zip(chance, splits[0]))
    assert chance_levels([QAItem("What is the capital of France?", "Paris")], space) == [None]
    calls = ["hidden", "erased", "known"] + ["known"] * (len(chance) - 3)
    assert chance_hits(chance, calls) == {"expected": pytest.approx(chance[0] + chance[1]), "n": 2, "n_forgotten": 2}


def test_presence_analysis_reports_the_answer_space_chance():
    negative = {"format": probe(IDS, [False] * 24)}
    methods = {
        "ga": {
            "presence": {
                "counts": {"known": 0, "hidden": 2, "erased": 2, "unprobed": 0},
                "probes_used": ["format"],
                "share_present": {"format": 2 / 24},
                "chance_hidden": {"expected": 0.75, "n": 4, "n_forgotten": 4},
            }
        },
        "npo": {  # a run from before the chance level: reported without it
            "presence": {
                "counts": {"known": 0, "hidden": 1, "erased": 3, "unprobed": 0},
                "probes_used": ["format"],
                "share_present": {"format": 1 / 24},
            }
        },
    }
    out = presence_analysis(methods, {"negative": negative, "calibration": {}})
    assert out["methods"]["ga"]["chance_hidden"]["expected"] == 0.75
    assert "ga: 2 hidden; net of false alarms 2.0 [1.4, 2.0]; 0.8 by answer-space chance over 4" in out["verdict"]
    assert out["methods"]["npo"]["chance_hidden"] is None and "npo: 1 hidden; net" in out["verdict"]
