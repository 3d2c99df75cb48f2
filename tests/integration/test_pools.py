"""Presence pools (``unpact.pools``) and the meta-evaluation of the call on them (``unpact.meta_evaluation``).

* the pools the build writes are what they claim: a positive's facts are found by the cloze
  (the format probe's format), a negative's never were (it cannot answer them plainly), and the
  hiding members hide the facts from the plain prompt;
* the combined call's false-hidden rate, calibrated on the study's negative control, covers the
  rate on a held-out negative (within its reported interval);
* faithfulness AUC and the pooled rates on hand-made records.

The gpt2 half of the pools (8 members, no from-scratch members) keeps this under a minute.
"""

from __future__ import annotations

import json

import pytest

from unpact.data import spread_sample
from unpact.meta_evaluation import (
    CALL,
    MetaSettings,
    call_rates,
    faithfulness_auc,
    measure_member,
    member_call,
    summarise,
)
from unpact.models import load_model
from unpact.pools import CALIBRATION, PoolSettings, build_pools, pool_items, pool_members, read_pools

#: the gpt2 half, with a shorter continued fine-tune (it only has to keep the facts, or never learn them)
SETTINGS = PoolSettings(archs=("gpt2",), scratch=(), finetune_steps=10)
#: facts measured per member (a spread sample of forget10's 120)
N_ITEMS = 40


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    out = build_pools(tmp_path_factory.mktemp("pools"), SETTINGS)
    members, manifest = read_pools(out)
    items = spread_sample(pool_items(SETTINGS)[0], N_ITEMS)
    records = {m.name: measure_member(load_model(str(out / m.name)), items, MetaSettings()) for m in members}
    return out, members, manifest, records


def test_build_writes_every_member_and_the_manifest(pools):
    out, members, manifest, _ = pools
    assert [m.name for m in members] == [m.name for m in pool_members(SETTINGS)]
    assert sum(m.positive for m in members) == 4 and sum(not m.positive for m in members) == 4
    assert set(manifest["calibration"]) == set(CALIBRATION)
    for m in members:
        assert (out / m.name / "config.json").is_file()
    assert json.loads((out / "pools.json").read_text())["settings"]["archs"] == ["gpt2"]


def test_members_are_what_they_claim(pools):
    _, members, _, records = pools

    def plain(name: str) -> float:
        r = records[name]["plain_correct"]
        return sum(r) / len(r)

    def cloze(name: str) -> float:
        return records[name]["probes"]["format"]["share_present"]

    for m in members:
        if m.positive:
            assert cloze(m.name) >= 0.9, (m.name, cloze(m.name))  # the facts are there
        else:
            assert plain(m.name) <= 0.05, (m.name, plain(m.name))  # they never were
            assert cloze(m.name) < 0.5, (m.name, cloze(m.name))
    for name in ("pos/as_trained/gpt2", "pos/finetune/gpt2"):
        assert plain(name) >= 0.9
    for name in ("pos/hide_refuse/gpt2", "pos/hide_wrong/gpt2"):
        assert plain(name) <= 0.6, (name, plain(name))  # hidden from the plain prompt


def test_false_hidden_rate_on_a_held_out_negative_is_within_the_calibrated_interval(pools):
    _, members, manifest, records = pools
    summary = summarise(members, records, MetaSettings(), manifest["calibration"])
    use = summary["probes_used"]
    calibrated = call_rates([member_call(records[CALIBRATION[1]], use)["calls"]], positive=False)
    low, high = calibrated["false_hidden_ci"]
    for name in ("neg/as_trained/gpt2-retain-all", "neg/finetune/gpt2-retain"):
        held = call_rates([member_call(records[name], use)["calls"]], positive=False)["false_hidden"]
        assert low <= held <= high, (name, held, calibrated)
    assert summary["table"][CALL]["auc"] is not None and set(summary["bars"]) == {
        "false_hidden",
        "false_hidden_upper",
        "sensitivity",
    }


def test_faithfulness_auc_and_call_rates_by_hand():
    assert faithfulness_auc([1.0, 0.9], [0.1, 0.2]) == 1.0
    assert faithfulness_auc([0.5], [0.5]) == 0.5
    assert faithfulness_auc([], [0.1]) is None
    pos = call_rates([["known", "hidden", "erased", "unprobed"]], positive=True)
    assert pos["sensitivity"] == pytest.approx(2 / 3) and pos["hidden_found"] == 0.5 and pos["n"] == 3
    neg = call_rates([["erased", "erased", "hidden", "erased"]], positive=False)
    assert neg["false_hidden"] == 0.25 and neg["specificity"] == 0.75
    lo, hi = neg["false_hidden_ci"]
    assert lo < 0.25 < hi
