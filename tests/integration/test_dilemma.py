"""Controlled recovery (unpact.emphasis.controlled), the verdicts of finding 2 and the dilemma
(unpact.analyses.dilemma), their statistics (unpact.stats) and the dilemma figure."""

from __future__ import annotations

import json
import random

import pytest
import torch

from unpact import load_model
from unpact.analyses.dilemma import (
    DilemmaSettings,
    checkpoint_point,
    dilemma_verdict,
    finding2_verdict,
    recovered_ids,
)
from unpact.data import QAItem, load_benchmark, spread_sample
from unpact.emphasis.controlled import ControlledRecovery, ControlledSettings, controlled_recovery, summarise
from unpact.scoring import encode_pair, first_token_ranks, forward_logits
from unpact.stats import bootstrap_mean_ci, stratified_permutation_test, wilson_interval

SETTING = {"name": "prompt:repeat", "kind": "prompt", "template": "repeat"}


def _run(rouge, logprob, rank):
    return {"rouge": list(rouge), "logprob": list(logprob), "rank": list(rank), "answers": [""] * len(rouge)}


def make_raw(u: dict, o: dict, controls: dict | None = None) -> dict:
    """A raw controlled-recovery record by hand: ``u``/``o`` map run -> (rouge, logprob, rank) on forget
    items; ``controls`` maps run -> (unlearned rouge, original rouge) on one control group."""
    n = len(u["plain"][0])
    ids = {"forget": [f"f{i}" for i in range(n)]}
    runs = {"unlearned": {}, "original": {}}
    for model, spec in (("unlearned", u), ("original", o)):
        for run, (r, lp, rk) in spec.items():
            runs[model][run] = {"forget": _run(r, lp, rk)}
    if controls:
        m = len(controls["plain"][0])
        ids["retain"] = [f"r{i}" for i in range(m)]
        for run, (ru, ro) in controls.items():
            runs["unlearned"][run]["retain"] = _run(ru, [0.0] * m, [1] * m)
            runs["original"][run]["retain"] = _run(ro, [0.0] * m, [1] * m)
    return {"ids": ids, "usable": [True] * n, "keywords": [["k"]] * n, "settings": [SETTING], "runs": runs}


def clear_case(n: int = 20, placebo_recovers: bool = False, seed: int = 0):
    """The unlearned model forgot every item; keyword emphasis brings half (and raises log-probs by ~2),
    the placebo does nothing (or the same, with ``placebo_recovers``); the original knows them all."""
    rng = random.Random(seed)
    jitter = [rng.uniform(-0.1, 0.1) for _ in range(n)]
    plain_u = ([0.2] * n, [-5.0 + j for j in jitter], [9] * n)
    kw_u = (
        [1.0 if i % 2 == 0 else 0.2 for i in range(n)],
        [-3.0 + j for j in jitter],
        [1 if i % 2 == 0 else 5 for i in range(n)],
    )
    pl_u = kw_u if placebo_recovers else ([0.2] * n, [-5.0 + 0.5 * j for j in jitter], [9] * n)
    orig = ([1.0] * n, [-0.5] * n, [1] * n)
    u = {"plain": plain_u, "prompt:repeat|keyword": kw_u, "prompt:repeat|placebo": pl_u}
    o = {"plain": orig, "prompt:repeat|keyword": orig, "prompt:repeat|placebo": orig}
    return make_raw(u, o)


def null_case(n: int = 40, seed: int = 0):
    """Keyword and placebo emphasis drawn from one distribution (random labels), on both models."""
    rng = random.Random(seed)

    def draw():
        r = [rng.choice([0.2, 1.0]) for _ in range(n)]
        return r, [rng.gauss(-4, 1) for _ in range(n)], [rng.choice([1, 3]) for _ in range(n)]

    orig = ([1.0] * n, [rng.gauss(-0.5, 0.3) for _ in range(n)], [1] * n)
    orig_k = ([1.0] * n, [rng.gauss(-0.5, 0.3) for _ in range(n)], [1] * n)
    orig_p = ([1.0] * n, [rng.gauss(-0.5, 0.3) for _ in range(n)], [1] * n)
    u = {
        "plain": ([0.2] * n, [rng.gauss(-5, 1) for _ in range(n)], [9] * n),
        "prompt:repeat|keyword": draw(),
        "prompt:repeat|placebo": draw(),
    }
    return make_raw(u, {"plain": orig, "prompt:repeat|keyword": orig_k, "prompt:repeat|placebo": orig_p})


def _result(raw, **kw) -> ControlledRecovery:
    cfg = ControlledSettings(templates=("repeat",), activations=(), **kw)
    return ControlledRecovery("test", cfg, raw, summarise(raw, cfg))


# ------------------------------------------------------------------ statistics


def test_stats_on_known_cases():
    assert bootstrap_mean_ci([])["mean"] is None
    r = bootstrap_mean_ci([2.0] * 5)
    assert r["mean"] == 2.0 and r["interval"] == [2.0, 2.0]
    lo, hi = wilson_interval(0, 20)
    assert lo == 0 and 0.1 < hi < 0.2
    assert wilson_interval(0, 0) is None
    # an association made only by the strata (both rise with the stratum) is not found within them
    rng = random.Random(1)
    x, y, strata = [], [], []
    for s in range(4):
        for _ in range(6):
            x.append(s + rng.random())
            y.append(s + rng.random())
            strata.append(s)
    pooled = stratified_permutation_test(x, y, None, n_perm=999)
    within = stratified_permutation_test(x, y, strata, n_perm=999)
    assert pooled["p_value"] < 0.01 and within["p_value"] > 0.05, (pooled, within)
    with pytest.raises(ValueError):
        stratified_permutation_test(x, y, alternative="bigger")


# ------------------------------------------------------------------ controlled recovery: the numbers


def test_summary_of_a_clear_case_counts_what_was_built():
    res = _result(clear_case(20))
    s = res.summary["settings"]["prompt:repeat"]
    b = s["binary"]["0.9"]
    assert b["keyword"] == {"n_eligible": 20, "n_recovered": 10, "rate": 0.5}
    assert b["placebo"]["n_recovered"] == 0 and b["paired"]["n"] == 20
    assert b["paired"]["specific"]["mean"] == 0.5 and b["paired"]["specific"]["interval"][0] > 0.2
    assert s["n_eligible"] == 20 and s["eligible_ids"][0] == "f0"
    did = s["did"]["logprob"]
    assert did["mean"] == pytest.approx(2.0, abs=0.1) and did["interval"][0] > 1.5
    assert s["original"]["logprob"] == {"keyword": 0.0, "placebo": 0.0}
    assert s["becomes_top1"] == {"n": 20, "keyword": 0.5, "placebo": 0.0}
    assert s["collapse"] == {} and s["collapsed"] is None
    back = ControlledRecovery.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.summary == json.loads(json.dumps(res.summary)) and back.settings == res.settings
    assert recovered_ids(res) == [f"f{i}" for i in range(0, 20, 2)]
    assert recovered_ids(_result(clear_case(20, placebo_recovers=True))) == []  # the placebo got them too


def test_denominators_are_items_the_original_answers_under_the_same_emphasis():
    raw = clear_case(10)
    # the original cannot answer under the placebo for items 0..3: they leave the paired set
    o_pl = raw["runs"]["original"]["prompt:repeat|placebo"]["forget"]
    o_pl["rouge"] = [0.0] * 4 + [1.0] * 6
    s = _result(raw).summary["settings"]["prompt:repeat"]
    assert s["binary"]["0.9"]["keyword"]["n_eligible"] == 10
    assert s["binary"]["0.9"]["placebo"]["n_eligible"] == 6
    assert s["binary"]["0.9"]["paired"]["n"] == 6 and s["n_eligible"] == 6
    # an item the unlearned model still answers plainly is not "forgotten": never in a denominator
    raw["runs"]["unlearned"]["plain"]["forget"]["rouge"][9] = 1.0
    assert _result(raw).summary["settings"]["prompt:repeat"]["n_eligible"] == 5
    # the threshold sweep: at 0.1 every unlearned answer (0.2) counts as right, nothing is forgotten
    s = _result(raw, thresholds=(0.1,)).summary["settings"]["prompt:repeat"]
    assert s["binary"]["0.1"]["keyword"]["n_eligible"] == 0 and s["binary"]["0.1"]["keyword"]["rate"] is None


def test_collapse_is_judged_against_the_original_under_the_same_setting():
    n = 40
    ok, bad = [1.0] * n, [1.0] * (n // 2) + [0.0] * (n // 2)
    base = clear_case(10)
    u = {k: tuple(v["forget"][f] for f in ("rouge", "logprob", "rank")) for k, v in base["runs"]["unlearned"].items()}
    o = {k: tuple(v["forget"][f] for f in ("rouge", "logprob", "rank")) for k, v in base["runs"]["original"].items()}
    # the setting breaks half the controls of the unlearned model and none of the original's
    raw = make_raw(u, o, {"plain": (ok, ok), "prompt:repeat|keyword": (bad, ok), "prompt:repeat|placebo": (ok, ok)})
    c = _result(raw).summary["settings"]["prompt:repeat"]
    assert c["collapsed"] is True and c["collapse"]["retain"]["added_drop"]["mean"] == 0.5
    # ... and the original's as well: the setting breaks the task, not the unlearned model
    raw = make_raw(u, o, {"plain": (ok, ok), "prompt:repeat|keyword": (bad, bad), "prompt:repeat|placebo": (ok, ok)})
    assert _result(raw).summary["settings"]["prompt:repeat"]["collapsed"] is False
    # a plain utility gap (the unlearned model misses half plainly too) is not the setting's collapse
    raw = make_raw(u, o, {"plain": (bad, ok), "prompt:repeat|keyword": (bad, ok), "prompt:repeat|placebo": (ok, ok)})
    assert _result(raw).summary["settings"]["prompt:repeat"]["collapsed"] is False
    # too few control items: no call
    few = [1.0] * 10
    raw = make_raw(
        u, o, {"plain": (few, few), "prompt:repeat|keyword": ([0.0] * 10, few), "prompt:repeat|placebo": (few, few)}
    )
    c = _result(raw).summary["settings"]["prompt:repeat"]
    assert c["collapsed"] is None and c["collapse"]["retain"]["collapse"] is None


# ------------------------------------------------------------------ verdicts


def test_did_against_the_negative_control():
    raw = clear_case(20)
    # a negative control that gains as much from the keywords as the unlearned model: nothing specific
    raw["runs"]["negative"] = raw["runs"]["unlearned"]
    v = finding2_verdict(_result(raw))
    assert v["statistic"] == "did_negative" and not v["supported"]
    # one that gains nothing: the unlearned model's gain is specific
    raw["runs"]["negative"] = {k: v for k, v in clear_case(20, placebo_recovers=True)["runs"]["unlearned"].items()}
    v = finding2_verdict(_result(raw))
    assert v["statistic"] == "did_negative" and v["supported"], v["verdict"]


def test_finding2_is_supported_on_a_clear_case_and_not_on_a_null():
    v = finding2_verdict(_result(clear_case(20)))
    assert v["supported"] and v["verdict"].startswith("supported") and "n = 20" in v["verdict"]
    # keyword and placebo from one distribution: "supported" about as often as alpha (1 in 20) says
    nulls = [finding2_verdict(_result(null_case(40, seed))) for seed in range(20)]
    assert all(v["verdict"].startswith("not supported") for v in nulls if not v["supported"])
    assert sum(v["supported"] for v in nulls) <= 3, [v["verdict"] for v in nulls if v["supported"]]
    # the placebo recovers as much: nothing keyword-specific
    assert not finding2_verdict(_result(clear_case(20, placebo_recovers=True)))["supported"]
    # too few eligible items: not applicable, never supported
    v = finding2_verdict(_result(clear_case(5)))
    assert not v["supported"] and v["verdict"].startswith("not applicable")
    # the paper's criterion (top-1) as the outcome
    assert finding2_verdict(_result(clear_case(20)), DilemmaSettings(outcome="top1"))["supported"]
    # from results.json (a dict) as well
    assert finding2_verdict(json.loads(json.dumps(_result(clear_case(20)).to_dict())))["supported"]


def test_finding2_decides_on_the_papers_criterion_and_reports_the_logprob_beside_it():
    """The verdict is on "recovered" (fact token top-1 and the greedy answer right); the fact's
    log-prob is tested beside it as ``secondary`` and never decides it."""
    n = 20
    plain_u = ([0.2] * n, [-5.0] * n, [9] * n)
    orig = ([1.0] * n, [-0.5] * n, [1] * n)
    o = {"plain": orig, "prompt:repeat|keyword": orig, "prompt:repeat|placebo": orig}
    # keyword emphasis lifts the fact's log-prob by 2 nats and makes it top-1, but the answer stays wrong
    top1_only = ([0.2] * n, [-3.0] * n, [1] * n)
    raw = make_raw({"plain": plain_u, "prompt:repeat|keyword": top1_only, "prompt:repeat|placebo": plain_u}, o)
    v = finding2_verdict(_result(raw))
    assert not v["supported"] and v["verdict"].startswith("not supported") and "of the recovered change" in v["verdict"]
    assert v["secondary"]["outcome"] == "logprob" and v["secondary"]["supported"]
    assert v["verdict"].endswith("[secondary, the fact's logprob: supported]")
    assert finding2_verdict(_result(raw), DilemmaSettings(outcome="top1"))["supported"]  # top-1 alone would say yes
    # the answer right but the fact token not top-1 (a different first token): not recovered either
    right_only = ([1.0] * n, [-3.0] * n, [2] * n)
    raw = make_raw({"plain": plain_u, "prompt:repeat|keyword": right_only, "prompt:repeat|placebo": plain_u}, o)
    assert not finding2_verdict(_result(raw))["supported"]
    # both: recovered, supported on the primary outcome
    both = ([1.0] * n, [-3.0] * n, [1] * n)
    raw = make_raw({"plain": plain_u, "prompt:repeat|keyword": both, "prompt:repeat|placebo": plain_u}, o)
    v = finding2_verdict(_result(raw))
    assert v["supported"] and v["settings"]["prompt:repeat"]["mean"] == pytest.approx(1.0)
    assert "secondary" not in finding2_verdict(_result(raw), DilemmaSettings(secondary_outcome=None))


def _points(erased, drop, strata, recovered=0, present=0):
    return [
        {
            "method": f"m{i % 6}",
            "checkpoint": str(s),
            "stratum": s,
            "erased_share": e,
            "utility_drop": d,
            "n_recovered": recovered,
            "recovered_present": present,
        }
        for i, (e, d, s) in enumerate(zip(erased, drop, strata))
    ]


def test_dilemma_verdict_on_a_clear_case_a_null_and_a_confounded_trajectory():
    strata = [s for s in ("0.75", "0.5", "0.25", "0.1") for _ in range(6)]
    rng = random.Random(0)
    e = [rng.random() for _ in strata]
    clear = dilemma_verdict(
        _points(e, [x + 0.05 * rng.random() for x in e], strata, recovered=2, present=2), n_perm=999
    )
    assert clear["erasure_costs_utility"]["supported"], clear["erasure_costs_utility"]["verdict"]
    assert "n = 24" in clear["erasure_costs_utility"]["verdict"]
    hits = 0
    for seed in range(20):  # unrelated numbers: "supported" about as often as alpha (1 in 20) says
        rng = random.Random(seed + 10)
        null = dilemma_verdict(
            _points([rng.random() for _ in strata], [rng.random() for _ in strata], strata), n_perm=499
        )
        hits += null["erasure_costs_utility"]["supported"]
    assert hits <= 3, hits
    # both rise with training (the stratum) but are unrelated within each: pooled rho is high, no trade-off
    level = {"0.75": 0, "0.5": 1, "0.25": 2, "0.1": 3}
    rng = random.Random(5)
    conf = dilemma_verdict(
        _points([level[s] + rng.random() for s in strata], [level[s] + rng.random() for s in strata], strata),
        n_perm=999,
    )
    assert conf["erasure_costs_utility"]["pooled_rho"] > 0.6
    assert not conf["erasure_costs_utility"]["supported"]
    # too few points
    few = dilemma_verdict(_points([0.1, 0.5], [0.1, 0.5], ["a", "a"]), n_perm=99)
    assert few["erasure_costs_utility"]["verdict"].startswith("not applicable")
    # recoverable -> present: all 48 present is supported; random present calls (half) are not
    assert clear["recoverable_is_present"]["supported"] and clear["recoverable_is_present"]["n_recovered"] == 48
    pts = _points(e, e, strata, recovered=2, present=1)
    half = dilemma_verdict(pts, n_perm=99)["recoverable_is_present"]
    assert not half["supported"] and half["share"] == 0.5
    none = dilemma_verdict(_points(e, e, strata), n_perm=99)["recoverable_is_present"]
    assert not none["supported"] and none["verdict"].startswith("not applicable")


def test_checkpoint_point_from_probe_classes():
    p = checkpoint_point(
        "npo",
        "forget_below_0.5",
        ["known", "hidden", "erased", "erased", "unprobed"],
        ["a", "b", "c", "d", "e"],
        utility_drop=0.2,
        recovered=["b", "c", "e"],
        stratum="0.5",
    )
    assert p["erased_share"] == pytest.approx(2 / 3) and p["n_known"] == 1
    assert p["n_recovered"] == 2 and p["recovered_present"] == 1  # "e" was never probed
    assert checkpoint_point("npo", "x", ["known"], ["a"], utility_drop=0.0)["erased_share"] is None


# ------------------------------------------------------------------ the figure


def test_dilemma_figure_renders_from_a_hand_built_input():
    from unpact.figures import checkpoint_state, dilemma_png

    points = [
        {"method": m, "step": s, "forget_accuracy": fa, "utility": u, "erased_share": e}
        for m, rows in {
            "ga_gdr": [(10, 0.8, 0.95, 0.1), (20, 0.4, 0.9, 0.4), (40, 0.1, 0.6, 0.9)],
            "npo_gdr": [(10, 0.9, 0.97, None), (20, 0.5, 0.93, 0.2)],
        }.items()
        for s, fa, u, e in rows
    ]
    assert [checkpoint_state(p) for p in points] == ["hidden", "hidden", "erased", "known", "hidden"]
    recovery = [
        {
            "method": "ga_gdr",
            "checkpoint": "step_20",
            "keyword": 0.3,
            "placebo": 0.1,
            "keyword_interval": [0.1, 0.5],
            "placebo_interval": [0.0, 0.2],
        },
        {"method": "npo_gdr", "checkpoint": "step_20", "keyword": None, "placebo": 0.0},
    ]
    for rec in (None, recovery):
        png = dilemma_png(points, rec)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ------------------------------------------------------------------ on real models


def test_first_token_ranks_are_the_models_own_ranking(tiny_gpt2):
    prompts = ["Question: Where was Ana Lind born?\nAnswer:", "Question: What is 2 + 3?\nAnswer:"]
    answers = [" Lima", " 5"]
    ranks = first_token_ranks(tiny_gpt2, prompts, answers)
    for p, a, r in zip(prompts, answers, ranks.tolist()):
        pi, ai = encode_pair(tiny_gpt2.tokenizer, p, a)
        with torch.no_grad():
            row = forward_logits(tiny_gpt2, torch.tensor([pi]))[0, -1]
        assert r == int((row > row[ai[0]]).sum()) + 1
    top = int(torch.argmax(row))
    text = tiny_gpt2.tokenizer.decode([top])
    if text.strip() and tiny_gpt2.tokenizer(text, add_special_tokens=False)["input_ids"] == [top]:
        assert first_token_ranks(tiny_gpt2, [prompts[1]], [text]).tolist() == [1]


def test_controlled_recovery_runs_both_models_with_keyword_and_placebo_rows(tiny_gpt2):
    items = [
        QAItem("Where was the author Ana Lind born?", "Lima", id="a"),
        QAItem("What genre does Bo Reyes write?", "crime fiction", id="b"),
    ]
    cfg = ControlledSettings(
        templates=("repeat",), activations=(("attention", 4.0, "all"),), max_new_tokens=4, min_control_items=1
    )
    res = controlled_recovery(
        tiny_gpt2,
        tiny_gpt2,
        items,
        controls={"retain": items[:1]},
        keywords=[["Ana Lind"], ["Bo Reyes"]],
        settings=cfg,
        method="same",
    )
    runs = res.raw["runs"]
    assert set(runs) == {"unlearned", "original"}
    names = {
        "plain",
        "prompt:repeat|keyword",
        "prompt:repeat|placebo",
        "activation:attention x4 @ all|keyword",
        "activation:attention x4 @ all|placebo",
    }
    assert set(runs["unlearned"]) == names
    assert set(runs["unlearned"]["prompt:repeat|placebo"]) == {"forget"}  # placebo on forget items only
    assert res.raw["usable"] == [True, True]
    # the same model twice: every change is the same on both sides, nothing is eligible
    assert runs["unlearned"] == runs["original"]
    s = res.summary["settings"]["prompt:repeat"]
    assert s["n_eligible"] == 0 and s["did"]["logprob"]["mean"] is None
    assert res.summary["settings"]["activation:attention x4 @ all"]["collapse"]["retain"]["added_drop"]["mean"] == 0.0
    # keyword and placebo emphasis did change something (they are not the plain prompt)
    lp = runs["unlearned"]
    assert lp["prompt:repeat|keyword"]["forget"]["logprob"] != lp["plain"]["forget"]["logprob"]
    assert lp["activation:attention x4 @ all|placebo"]["forget"]["logprob"] != lp["plain"]["forget"]["logprob"]
    back = ControlledRecovery.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.raw == json.loads(json.dumps(res.raw))
    # the original's runs of an earlier result (read back from JSON) stand in for measuring them again
    again = controlled_recovery(
        tiny_gpt2,
        tiny_gpt2,
        items,
        controls={"retain": items[:1]},
        keywords=[["Ana Lind"], ["Bo Reyes"]],
        settings=cfg,
        reuse=back,
    )
    assert again.raw["runs"]["original"] is back.raw["runs"]["original"] and again.summary == res.summary
    from unpact.errors import InputError

    with pytest.raises(InputError, match="differs in keywords"):
        controlled_recovery(
            tiny_gpt2,
            tiny_gpt2,
            items,
            controls={"retain": items[:1]},
            keywords=[["Ana Lind"], ["genre"]],
            settings=cfg,
            reuse=back,
        )


def _need_embedded(*names: str) -> None:
    from unpact.models import embedded_model_names

    missing = [n for n in names if n not in embedded_model_names()]
    if missing:
        pytest.skip(f"embedded:{missing[0]} is not built (unpact build-embedded)")


def _forget_and_models():
    _need_embedded("gpt2", "gpt2-retain")
    forget = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 12)
    return forget, load_model("embedded:gpt2"), load_model("embedded:gpt2-retain")


NEG_SETTINGS = dict(templates=("repeat", "focus"), activations=(("attention", 4.0, "all"),))


def _keyword_recovery(model, original, forget, negative=None) -> ControlledRecovery:
    """Keyword vs placebo emphasis on ``model`` against ``original`` (and ``negative``), keywords the authors."""
    return controlled_recovery(
        model,
        original,
        forget,
        keywords=[[it.meta["author"]] for it in forget],
        settings=ControlledSettings(**NEG_SETTINGS),
        negative=negative,
    )


@pytest.mark.slow
def test_did_against_the_original_alone_is_specific_on_the_negative_control():
    """did alone (keyword vs placebo against the original, tested against 0) on the retain-only model.

    Measured on the second-edition world it was *not* specific (prompt:repeat 0.21, 98.3% interval
    [0.07, 0.37], n = 12: a strict xfail then); on the third edition it is -0.09 [-0.17, -0.01]. The
    original sits at its ceiling, so did alone is biased either way by the world; the default
    statistic is did_negative (against the negative control) for that reason.
    """
    forget, original, never = _forget_and_models()
    res = _keyword_recovery(never, original, forget)
    at_zero = DilemmaSettings(min_items=5, outcome="logprob", statistic="did", min_effect={"logprob": 0.0})
    assert not finding2_verdict(res, at_zero)["supported"]


@pytest.mark.slow
def test_negative_control_recovers_nothing_beyond_another_model_without_the_facts():
    """Two models that never saw the forget authors (the retain-only model, and it fine-tuned further on
    retain items): nothing is recovered, and the default statistic (against the negative control) finds
    no keyword-specific gain."""
    from unpact.controls import retain_finetune_model

    forget, original, never = _forget_and_models()
    retain = spread_sample(list(load_benchmark("embedded:tofu", "retain90")), 32)
    never2 = retain_finetune_model(never, retain, lr=1e-4, steps=10, batch_size=8)
    res = _keyword_recovery(never2, original, forget, negative=never)
    assert res.summary["n_original_known"] >= 10 and res.summary["n_usable"] >= 10
    for name, s in res.summary["settings"].items():
        assert s["binary"]["0.9"]["keyword"]["n_recovered"] == 0, name
    v = finding2_verdict(res, DilemmaSettings(min_items=5))
    assert v["statistic"] == "did_negative" and not v["supported"], v["verdict"]


@pytest.mark.slow
@pytest.mark.parametrize("subject", ["negative control", "damage-matched noise"])
def test_finding2_is_not_supported_on_the_negative_control_or_a_damage_matched_noise_model(subject):
    """Finding 2 on the paper's criterion (the default ``outcome="recovered"``, against the negative
    control) must not be "supported" on models whose forgetting has nothing keyword-specific: the
    negative control itself (it never had the facts) and the original with weight noise scaled until
    its plain forget accuracy halves (damage without an unlearning objective)."""
    from unpact.controls import match_noise, noise_model
    from unpact.metrics import rouge_recalls

    forget, original, never = _forget_and_models()
    if subject == "negative control":
        model = never
    else:

        def accuracy(m) -> float:
            return sum(r >= 0.9 for r in rouge_recalls(m, forget)) / len(forget)

        match = match_noise(original, accuracy, 0.5, hi=3.0, seed=0)
        assert abs(match["value"] - 0.5) <= 0.25, match
        model = noise_model(original, match["scale"], seed=0)
    res = _keyword_recovery(model, original, forget, negative=never)
    v = finding2_verdict(res, DilemmaSettings(min_items=5))
    assert v["statistic"] == "did_negative" and not v["supported"], v["verdict"]
