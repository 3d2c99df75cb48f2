"""Knowledge presence in the main job (unpact.presence): probes per model, calls, calibration, nulls."""

from __future__ import annotations

import pytest

from unpact.data import QAItem, TextItem, load_benchmark, spread_sample
from unpact.errors import ConfigError
from unpact.presence import PresenceSettings, calibrate, keep_formats, presence_calls


def _pr(name, ids, present):
    return {"probe": name, "ids": list(ids), "present": list(present), "score": [0.0] * len(ids)}


def test_presence_calls_count_hidden_and_erased_among_the_forgotten():
    probes = {"choice": _pr("choice", "abcd", [True, False, True, False]), "format": _pr("format", "ab", [False, True])}
    r = presence_calls(list("abcd"), [True, False, False, False], probes)
    assert r["calls"] == ["known", "hidden", "hidden", "erased"]
    assert r["counts"] == {"known": 1, "hidden": 2, "erased": 1, "unprobed": 0}
    assert r["share_hidden_of_forgotten"] == pytest.approx(2 / 3)
    assert r["share_present"] == {"choice": 0.5, "format": 0.5}


def test_sensitivity_counts_only_what_the_positive_control_really_hides():
    pos = {"choice": _pr("choice", "abcd", [True, True, False, False])}
    neg = {"choice": _pr("choice", "abcd", [False, False, False, True])}
    all_items = calibrate(pos, neg)["choice"]
    assert all_items["sensitivity"] == 0.5 and all_items["specificity"] == 0.75
    # c and d were not hidden by the fine-tune (plain answer still right): they do not count
    hidden_only = calibrate(pos, neg, positive_hidden_ids=["a", "b"])["choice"]
    assert hidden_only["sensitivity"] == 1.0 and hidden_only["n_positive"] == 2


def test_the_positive_control_keeps_the_facts_in_the_probes_formats_not_the_plain_question():
    from unpact.probes import attach_cloze

    forget = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 4)
    forget = attach_cloze(forget, list(load_benchmark("embedded:tofu", "cloze")))
    keep = keep_formats(forget)
    questions = {it.question for it in forget}
    qa = [k for k in keep if isinstance(k, QAItem)]
    text = [k for k in keep if isinstance(k, TextItem)]
    assert len(qa) == len(text) == 4
    assert not questions & {k.question for k in qa}  # never the plain question it must refuse
    assert all(k.question == it.paraphrased_question and k.answer == it.answer for k, it in zip(qa, forget))
    assert all(k.prompt == it.meta["cloze_prompt"] for k, it in zip(text, forget))


def test_settings_reject_unknown_probes_and_sources():
    with pytest.raises(ConfigError, match="unknown probe 'telepathy'"):
        PresenceSettings(probes=["choice", "telepathy"]).validate()
    with pytest.raises(ConfigError, match="format_source"):
        PresenceSettings(format_source="dreams").validate()
    PresenceSettings().validate()


@pytest.mark.slow
def test_null_draws_are_damage_matched_and_shaped_for_finding_one():
    from unpact import load_model
    from unpact.attribution import attribute, key_tokens
    import numpy as np

    from unpact.metrics import qa_probabilities
    from unpact.presence import null_keyword_rows

    items = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 6)
    original = load_model("embedded:gpt2")
    before = attribute(original, items, method="loo", group="forget")
    keys = [set(key_tokens(a)) for a in before]

    def measure(m):
        return float(np.mean(qa_probabilities(m, items)["true_lp"]))

    target = measure(original) - 2.0  # two nats below the original on the forget answers
    r = null_keyword_rows(original, items, before, keys, measure, target, PresenceSettings(null_draws=2), seed=0)
    assert r["message"] is None and len(r["draws"]) == 2
    assert abs(r["match"]["value"] - target) <= 0.5, r["match"]
    rows = r["draws"][0]
    assert [x["id"] for x in rows] == [b.item_id for b in before]
    assert rows[0]["before"] == list(before[0].scores) and rows[0]["after"] != rows[0]["before"]
    assert r["draws"][0][0]["after"] != r["draws"][1][0]["after"]  # two draws, two seeds


def test_a_probe_that_finds_facts_in_a_model_that_never_had_them_does_not_make_a_hidden_call():
    from unpact.presence import usable_probes

    cal = {"choice": {"specificity": 0.54}, "format": {"specificity": 0.96}}
    use, left = usable_probes(cal, ["format", "choice"], 0.9)
    assert use == ["format"] and "0.54" in left["choice"]
    probes = {"choice": _pr("choice", "ab", [True, True]), "format": _pr("format", "ab", [False, True])}
    r = presence_calls(["a", "b"], [False, False], probes, use)
    assert r["calls"] == ["erased", "hidden"] and r["probes_used"] == ["format"]
    assert usable_probes(None, ["format", "choice"], 0.9) == (["format", "choice"], {})


def test_the_format_probe_reads_the_bare_answer_whatever_the_format_appends_to_it():
    """A chat format appends its end-of-turn tokens to every scored answer; a greedy answer never
    contains them, so ROUGE-L against the formatted answer capped recall at 1/3 for a one-word fact
    (the real model's probe found 0 of 12 facts on the original). The probe must call the same
    facts present whatever the format's answer suffix."""
    from dataclasses import replace

    from unpact import load_model
    from unpact.data.formatting import PLAIN, PromptFormat
    from unpact.probes import FormatProbe

    model = load_model("embedded:gpt2")
    items = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 8)
    bare = [replace(it, meta={}) for it in items]  # no value to look for: ROUGE-L decides
    probe = FormatProbe(source="paraphrased_question")
    plain = probe.run(model, bare, PLAIN)
    eot = probe.run(model, bare, PromptFormat("plain-eot", answer_suffix="<|im_end|>\n"))
    assert sum(plain.present) >= 6, plain.detail  # the original answers the paraphrases it was trained on
    assert eot.present == plain.present
    assert [d["answer"] for d in eot.detail] == [d["answer"] for d in plain.detail]


def test_the_negative_control_on_unknown_facts_probes_as_many_as_asked(tmp_path):
    """Without a retain-only model the negative control is the original on facts it does not know;
    ``negative_items`` sets how many, so the call's false-hidden interval can be narrow enough to
    decide (0 of 12 has a Wilson upper end of 0.24, over any bar of 0.15)."""
    from unpact.config import RunConfig
    from unpact.pipeline import Study
    from unpact.stages import presence_controls

    def controls(n):
        settings = PresenceSettings(unknown_split="holdout10", positive_control=False, negative_items=n)
        cfg = RunConfig(
            model="embedded:gpt2",
            reference_model=None,
            general=None,
            max_items=4,
            presence=settings,
            out=str(tmp_path / f"run{n}"),
        )
        return presence_controls(Study(cfg))

    asked = controls(10)
    assert len(asked["original"]["format"]["ids"]) == 4
    assert len(asked["negative"]["format"]["ids"]) == 10
    assert "holdout10" in asked["negative_source"]
    assert len(controls(None)["negative"]["format"]["ids"]) == 4  # unset: as many as the forget items
    with pytest.raises(ConfigError, match="negative_items"):
        PresenceSettings(negative_items=0).validate()
