"""Knowledge-presence probes (unpact.probes), control models and nulls (unpact.controls), and the
finding-1 verdict against a damage-matched null (unpact.analyses.keyword_focus_vs_null)."""

from __future__ import annotations

import json

import pytest
import torch

from unpact import load_model
from unpact.analyses import keyword_focus_vs_null
from unpact.data import QAItem, load_benchmark, spread_sample
from unpact.probes import PROBES, ProbeResult, classify, fact_token_index, logit_lens, probe, sensitivity_specificity
from unpact.scoring import encode_pair, forward_logits


def _need_embedded(*names: str) -> None:
    from unpact.models import embedded_model_names

    missing = [n for n in names if n not in embedded_model_names()]
    if missing:
        pytest.skip(f"embedded:{missing[0]} is not built (unpact build-embedded)")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_logit_lens_at_the_last_layer_is_the_models_own_prediction(tiny_dirs, arch):
    model = load_model(tiny_dirs[arch])
    p, a = encode_pair(model.tokenizer, "Question: Where was Ana Lind born?\nAnswer:", " Lima")
    lps, ranks = logit_lens(model, p, a[0])
    assert len(lps) == len(ranks) == model.cfg.n_layers
    with torch.no_grad():
        own = torch.log_softmax(forward_logits(model, torch.tensor([p]))[0, -1].float(), -1)
    assert abs(lps[-1] - float(own[a[0]])) < 1e-4
    assert ranks[-1] == int((own > own[a[0]]).sum()) + 1


def test_fact_token_is_where_the_answer_and_its_perturbations_differ(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    j = fact_token_index(
        tok, " Ana Lind was born in Lima.", [" Ana Lind was born in Oslo.", " Ana Lind was born in Perth."]
    )
    from unpact.scoring import tokenize

    a = tokenize(tok, " Ana Lind was born in Lima.")
    assert tok.decode(a[:j]) == " Ana Lind was born in" or tok.decode(a[:j]).startswith(" Ana Lind was born in")
    assert fact_token_index(tok, " Lima", []) == 0


def test_classify_and_sensitivity_specificity_on_hand_made_results():
    ids = ["a", "b", "c", "d"]
    probes = {
        "choice": ProbeResult("choice", ["a", "b", "c"], [True, False, True], [1.0, -1.0, 0.5]),
        "format": ProbeResult("format", ["b", "c"], [True, False], [0.0, 0.0]),
    }
    assert classify([True, False, False, False], probes, ids) == ["known", "hidden", "hidden", "unprobed"]
    probes["choice"].present[1] = False
    probes["format"].present[0] = False
    assert classify([False, False, True, False], probes, ids) == ["hidden", "erased", "known", "unprobed"]
    pos = ProbeResult("choice", list("abcd"), [True, True, True, False], [0] * 4)
    neg = ProbeResult("choice", list("abcd"), [False, False, False, True], [0] * 4)
    s = sensitivity_specificity(pos, neg)
    assert s["sensitivity"] == 0.75 and s["specificity"] == 0.75 and s["n_positive"] == 4
    assert s["sensitivity_ci"][0] < 0.75 < s["sensitivity_ci"][1]
    r = ProbeResult.from_dict(json.loads(json.dumps(pos.to_dict())))
    assert r == pos and pos.to_dict()["share_present"] == 0.75


def test_noise_model_is_a_consistent_copy(tiny_dirs):
    from unpact.controls import noise_model
    from unpact.models import plain_hf_model

    model = load_model(tiny_dirs["gpt_neox"])
    before = [p.detach().clone() for p in model.parameters()]
    noisy = noise_model(model, 0.5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    ids = torch.tensor([encode_pair(model.tokenizer, "Question: Who?\nAnswer:", " Ana")[0]])
    with torch.no_grad():
        a, b = forward_logits(noisy, ids), forward_logits(model, ids)
        assert (a - b).abs().max() > 1e-3
        assert (forward_logits(plain_hf_model(noisy), ids) - a).abs().max() < 1e-4
    zero = noise_model(model, 0.0, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(zero.parameters(), before))


def test_keyword_focus_vs_null_supports_only_a_keyword_specific_loss():
    def item(i, after):
        return {"id": str(i), "group": "forget", "before": [1.0, 1.0, 1.0], "after": after, "key": [False, True, False]}

    noise = [0.05 * ((i * 7) % 5 - 2) for i in range(12)]
    method = [item(i, [1.0, 0.1 + n, 1.0]) for i, n in enumerate(noise)]
    draws = [[item(i, [0.8 + n, 0.8 - 0.01 * k, 0.8]) for i, n in enumerate(noise)] for k in range(19)]
    r = keyword_focus_vs_null(method, draws)
    assert r["supported"] and r["p_value"] == 0.05 and r["n_null_draws"] == 19
    # one null draw compared with the others (the same damage) is not a finding
    r = keyword_focus_vs_null(draws[0], draws[1:])
    assert not r["supported"]
    # too few draws to reach alpha: never supported, and said so
    r = keyword_focus_vs_null(method, draws[:4])
    assert not r["supported"] and "cannot reach" in r["verdict"]
    assert keyword_focus_vs_null(method[:2], draws)["verdict"].startswith("not applicable")


# ------------------------------------------------------------------ embedded models


@pytest.mark.slow
def test_probes_find_what_the_model_knows_and_not_what_it_never_saw():
    _need_embedded("gpt2", "gpt2-retain")
    items = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 8)
    knows, never = load_model("embedded:gpt2"), load_model("embedded:gpt2-retain")
    for name, settings in [("choice", None), ("logit_lens", None), ("format", {"source": "paraphrased_question"})]:
        k = probe(knows, items, name, settings=settings)
        n = probe(never, items, name, settings=settings)
        assert k.share_present >= 0.85, (name, k.share_present)
        assert n.share_present <= 0.5, (name, n.share_present)


@pytest.mark.slow
def test_positive_control_is_detected_and_negative_control_is_not():
    _need_embedded("gpt2", "gpt2-retain")
    from unpact.controls import hide_facts, paraphrase_keep
    from unpact.metrics import rouge_recalls

    forget = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 12)
    retain = spread_sample(list(load_benchmark("embedded:tofu", "retain90")), 24)
    original = load_model("embedded:gpt2")
    hidden = hide_facts(original, forget, paraphrase_keep(forget) + retain, seed=0)
    plain = rouge_recalls(hidden, forget)
    assert sum(r >= 0.9 for r in plain) <= 2, plain  # hidden from the plain prompt
    fmt = {"source": "paraphrased_question"}
    pos = probe(hidden, forget, "format", settings=fmt)
    neg = probe(load_model("embedded:gpt2-retain"), forget, "format", settings=fmt)
    calib = sensitivity_specificity(pos, neg)
    assert calib["sensitivity"] >= 0.75 and calib["specificity"] >= 0.75, calib
    known = [r >= 0.9 for r in plain]
    kinds = classify(known, {"format": pos}, pos.ids)
    assert kinds.count("hidden") >= 0.75 * len(kinds)


@pytest.mark.slow
def test_finding1_verdict_is_not_supported_on_the_damage_matched_null_itself():
    """A noise model is a 'method' with no unlearning objective: ranked among 19 other draws of the
    same damage, finding 1 must not be supported (the old per-item sign test said 'supported' here,
    and so did a per-item bootstrap against a single null draw: items share one draw)."""
    _need_embedded("gpt2")
    from unpact.attribution import attribute, key_tokens
    from unpact.controls import noise_model

    items = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 8)
    original = load_model("embedded:gpt2")
    before = attribute(original, items, method="loo", group="forget")
    keys = [set(key_tokens(a)) for a in before]

    def rows(model):
        after = attribute(model, items, method="loo", group="forget")
        return [
            {
                "id": b.item_id,
                "group": "forget",
                "before": list(b.scores),
                "after": list(a.scores),
                "special": list(b.special),
                "key": [i in k for i in range(len(b.scores))],
            }
            for b, a, k in zip(before, after, keys)
        ]

    draws = [rows(noise_model(original, 1.2, seed=s)) for s in range(20)]
    r = keyword_focus_vs_null(draws[0], draws[1:])
    assert r["n_items"] >= 6 and r["n_null_draws"] == 19 and not r["supported"], r["verdict"]


def test_probe_registry_and_errors():
    from unpact.errors import ConfigError, InputError

    assert set(PROBES) == {"choice", "format", "logit_lens"}
    with pytest.raises(ConfigError, match="unknown probe"):
        probe(None, [], "telepathy")
    with pytest.raises(ConfigError, match="probe 'choice'"):
        probe(None, [], "choice", settings={"max_rank": 3})
    with pytest.raises(InputError):
        probe(None, [("q", "a")], "choice")
    assert probe(None, [QAItem("q", "a")], "format").n_skipped == 1  # no cloze: not asked


@pytest.mark.slow
def test_cloze_probe_on_the_embedded_world():
    """The world's biography cloze (trained, never unlearned) is found by the format probe on the
    original and not on the model that never saw the forget authors."""
    _need_embedded("gpt2", "gpt2-retain")
    from unpact.probes import attach_cloze, cloze_of

    items = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 8)
    items = attach_cloze(items, list(load_benchmark("embedded:tofu", "cloze")))
    assert all(cloze_of(it) for it in items)
    k = probe(load_model("embedded:gpt2"), items, "format")
    n = probe(load_model("embedded:gpt2-retain"), items, "format")
    assert k.n_skipped == 0 and k.share_present >= 0.85, k.detail
    assert n.share_present <= 0.5, n.detail
