"""Attribution: exactness against naive loops, the KeyTokens rule, IG completeness,
the head decomposition, tracking, JSON round trips and bad input (tiny real checkpoints)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unpact import load_model, scoring
from unpact.attribution import (
    ATTRIBUTION_METHODS,
    Attribution,
    attribute,
    compare,
    key_tokens,
    quadrature,
)
from unpact.attribution.loo import ablated_prompts
from unpact.attribution.prepare import prepare_items
from unpact.data import PromptFormat, QAItem, TextItem
from unpact.errors import ConfigError, InputError
from unpact.testing import TINY_ARCHITECTURES

ITEMS = [
    QAItem("Where was the author Ana Lind born?", "Lima", id="ana", meta={"group": "forget"}),
    QAItem("What genre does Bo Reyes write?", "crime fiction", id="bo", meta={"group": "retain"}),
    ("The quick brown fox jumps over the", " lazy dog."),
]


@pytest.fixture(scope="module")
def tiny_llama(tiny_dirs):
    return load_model(tiny_dirs["llama"])


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def _naive_lp(model, prompt_ids, answer_ids) -> float:
    """One forward for one sequence (the slow reference)."""
    packed = scoring.pack([(prompt_ids, answer_ids)], scoring.pad_id(model.tokenizer))
    with torch.no_grad():
        logits = scoring.forward_logits(model, packed.input_ids)
    tok = scoring.token_logprobs(logits, packed.input_ids, packed.target_mask)
    return float(scoring.reduce_logprobs(tok, packed.target_mask)[0])


# ---------------------------------------------------------------- loo


@pytest.mark.parametrize("mode", ["delete", "baseline"])
def test_loo_batched_equals_naive_loop(model, mode):
    results = attribute(model, ITEMS, method="loo", mode=mode, max_batch_tokens=200, skip_special=False)
    preps, _ = prepare_items(model, ITEMS)
    bid = scoring.pad_id(model.tokenizer)
    worst = 0.0
    for res, prep in zip(results, preps):
        full = _naive_lp(model, prep.prompt_ids, prep.answer_ids)
        assert abs(res.lp - full) <= 1e-5
        naive = [0.0] + [full - _naive_lp(model, q, prep.answer_ids) for q in ablated_prompts(prep, mode, bid)]
        worst = max(worst, float(np.max(np.abs(np.array(res.scores) - naive))))
        assert len(res.scores) == len(res.tokens) == len(prep.prompt_ids)
    assert worst <= 1e-5


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_loo_skips_special_tokens_and_keeps_the_others(model, prefix_cache):
    """By default the format's fixed text and BOS are not ablated: they score 0, the result says
    how many were skipped, and every other token's score is the one of ablating everything."""
    fmt = PromptFormat("chat", "<|sys|> You are a helpful assistant. <|user|> {question} <|bot|>")
    skip = attribute(model, ITEMS[:2], method="loo", fmt=fmt, prefix_cache=prefix_cache)
    full = attribute(model, ITEMS[:2], method="loo", fmt=fmt, prefix_cache=prefix_cache, skip_special=False)
    preps, _ = prepare_items(model, ITEMS[:2], fmt=fmt)
    for s, f, prep in zip(skip, full, preps):
        special = [i for i, flag in enumerate(s.special) if flag]
        assert len(special) > len(s.special) // 2  # the template is most of the prompt
        assert all(s.scores[i] == 0.0 for i in special)
        assert any(f.scores[i] != 0.0 for i in special)  # ablating them would have scored them
        assert s.options["skipped"] == sum(s.special[prep.first :]) >= 8
        assert f.options["skipped"] == 0
        content = [i for i, flag in enumerate(s.special) if not flag]
        assert np.max(np.abs(np.array(s.scores)[content] - np.array(f.scores)[content])) <= 1e-5
        assert key_tokens(s) == key_tokens(f)


def test_the_attributed_quantity_is_chosen_by_name(tiny_gpt2):
    """loo and integrated gradients take the quantity by name (unpact.scoring.QUANTITIES); the
    default is LP, the mean answer log-prob; a registered quantity is accepted at once."""
    item = QAItem("What genre does Bo Reyes write?", "crime fiction noir", id="bo")
    n_answer = len(prepare_items(tiny_gpt2, [item])[0][0].answer_ids)
    assert n_answer > 1
    mean = attribute(tiny_gpt2, item, method="loo")
    assert mean.options["quantity"] == "mean" and attribute(tiny_gpt2, item, method="loo", quantity="mean") == mean
    total = attribute(tiny_gpt2, item, method="loo", quantity="sum")
    # the answer tokens are the same in every ablation: the summed log-prob is n x the mean one
    assert total.lp == pytest.approx(n_answer * mean.lp, rel=1e-5)
    assert total.scores == pytest.approx([n_answer * s for s in mean.scores], abs=1e-4)
    ig = attribute(tiny_gpt2, item, method="ig", quantity="sum", steps=16)
    assert ig.lp == pytest.approx(total.lp, rel=1e-5) and ig.extras["relative_gap"] < 0.05  # completeness holds

    @scoring.register_quantity("first_token")
    def _first(tok_lp, mask):
        return (tok_lp * (mask & (mask.cumsum(-1) == 1))).sum(-1)

    try:
        first = attribute(tiny_gpt2, item, method="loo", quantity="first_token")
        assert first.lp == pytest.approx(
            float(
                scoring.score_sequences(
                    tiny_gpt2, [prepare_items(tiny_gpt2, [item])[0][0].seq], reduction="first_token"
                )[0]
            ),
            abs=1e-6,
        )
        assert first.scores != mean.scores
    finally:
        del scoring.QUANTITIES["first_token"]
    with pytest.raises(ConfigError, match="unknown quantity 'first_token'; known: mean, sum"):
        attribute(tiny_gpt2, item, method="loo", quantity="first_token")


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_loo_prefix_cache_equals_whole_rows(tiny_dirs, arch):
    """The shared-prefix KV cache (plain HF twin, left-padded rows, logits only at the
    answer) gives the scores of scoring every ablated row whole through the bridge."""
    model = load_model(tiny_dirs[arch])
    for mode in ("delete", "baseline"):
        for budget in (150, 100_000):  # many small chunks (mixed items) and one chunk
            a = attribute(model, ITEMS, method="loo", mode=mode, max_batch_tokens=budget)
            b = attribute(model, ITEMS, method="loo", mode=mode, prefix_cache=False)
            for x, y in zip(a, b):
                assert abs(x.lp - y.lp) <= 1e-5
                assert np.max(np.abs(np.array(x.scores) - np.array(y.scores))) <= 1e-5, (arch, mode, budget)


def test_loo_prefix_cache_without_bos(tiny_dirs):
    """Without BOS the first ablation shares no prefix (a row with an empty cache)."""
    model = load_model(tiny_dirs["gpt2"])
    model.tokenizer.bos_token = None
    assert scoring.bos_id(model.tokenizer) is None
    a = attribute(model, ITEMS, method="loo", max_batch_tokens=150, skip_special=False)
    b = attribute(model, ITEMS, method="loo", prefix_cache=False, skip_special=False)
    assert a[0].scores[0] != 0.0  # the first token is ablated too
    for x, y in zip(a, b):
        assert np.max(np.abs(np.array(x.scores) - np.array(y.scores))) <= 1e-5


def test_score_variants_checks_the_shared_prefix(tiny_gpt2):
    base = [0, 11, 12, 13]
    with pytest.raises(ValueError, match="does not start with"):
        scoring.score_variants(tiny_gpt2, [base], [([0, 12, 13], [20])], [0], [2])


def test_logits_window_equals_full_logits(tiny_gpt2):
    """score_sequences unembeds only the answer window; the log-probs are the full-logit ones."""
    seqs = [([0, 11, 12, 13, 14, 15], [20, 21]), ([0, 11], [22, 23, 24]), ([0, 5, 6, 7], [8])]
    packed = scoring.pack(seqs, scoring.pad_id(tiny_gpt2.tokenizer))
    keep = scoring.answer_window(packed.target_mask)
    assert keep == packed.input_ids.shape[1] - 1  # the second row's answer starts at position 2
    with torch.no_grad():
        full = scoring.token_logprobs(
            scoring.forward_logits(tiny_gpt2, packed.input_ids), packed.input_ids, packed.target_mask
        )
        part = scoring.token_logprobs(
            scoring.forward_logits(tiny_gpt2, packed.input_ids, keep=keep), packed.input_ids, packed.target_mask
        )
    assert torch.allclose(full, part, atol=1e-6)
    with pytest.raises(ValueError, match="logits cover"):
        scoring.token_logprobs(full[:, -2:], packed.input_ids, packed.target_mask)


def test_loo_delete_and_baseline_differ(tiny_gpt2):
    a = attribute(tiny_gpt2, ITEMS[0], mode="delete")
    b = attribute(tiny_gpt2, ITEMS[0], mode="baseline")
    assert a.scores[0] == b.scores[0] == 0.0  # BOS is never ablated
    assert not np.allclose(a.scores, b.scores)
    assert b.options["baseline_id"] == scoring.pad_id(tiny_gpt2.tokenizer)


# ---------------------------------------------------------------- special tokens


def test_special_mask_marks_bos_and_template_words(tiny_gpt2):
    a = attribute(tiny_gpt2, ITEMS[0])
    special = {t.strip() for t, s in zip(a.tokens, a.special) if s}
    content = "".join(t for t, s in zip(a.tokens, a.special) if not s)
    assert a.special[0] and a.tokens[0] == tiny_gpt2.tokenizer.bos_token
    assert content.strip() == "Where was the author Ana Lind born?"
    assert "Question" in special
    # a custom format: its fixed words are special too
    fmt = PromptFormat("qa", template="Q: {question} A:", answer_prefix=" ")
    b = attribute(tiny_gpt2, ITEMS[0], fmt=fmt)
    assert "".join(t for t, s in zip(b.tokens, b.special) if not s).strip() == ITEMS[0].question
    assert b.prompt == "Q: Where was the author Ana Lind born? A:"
    # a bare pair has no template: only BOS is special
    c = attribute(tiny_gpt2, ITEMS[2])
    assert c.special == [True] + [False] * (len(c.tokens) - 1)


# ---------------------------------------------------------------- KeyTokens


def test_key_tokens_positive_set_smaller_than_beta():
    # P = {2}: |P| = 1 < beta = 3 -> all of P, however small
    assert key_tokens([0.0, -1.0, 0.001, -0.5], special=[True, False, False, False]) == [2]
    assert key_tokens([0.0, -1.0, -0.5], special=[True, False, False]) == []  # P empty


def test_key_tokens_threshold_branch_share_and_max():
    c = [0.0, 0.5, -0.2, 0.3, 0.01, 0.2]
    sp = [True, False, False, False, False, False]
    # P = {1, 3, 4, 5}, sum 1.01: shares 0.495, 0.297, 0.0099, 0.198
    assert key_tokens(c, sp) == [1, 3, 5]
    assert key_tokens(c, sp, alpha=0.25) == [1, 3]
    assert key_tokens(c, sp, alpha=0.5) == []  # nothing above alpha: empty, as the rule says
    # N = C / max: 1.0, 0.6, 0.02, 0.4
    assert key_tokens(c, sp, normalize="max", alpha=0.5) == [1, 3]
    # beta larger than |P| switches back to the first branch
    assert key_tokens(c, sp, beta=5) == [1, 3, 4, 5]


def test_key_tokens_never_special():
    c = [5.0, 0.5, 4.0, 0.3]
    assert key_tokens(c, [True, False, True, False], beta=1) == [1, 3]
    a = Attribution("x", ["<b>", "a", "Q", "b"], [0, 1, 2, 3], c, -1.0, "loo", [True, False, True, False])
    assert a.key_tokens(beta=1) == key_tokens(a, beta=1) == [1, 3]
    with pytest.raises(ConfigError):
        key_tokens(c, normalize="softmax")


# ---------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("baseline", ["pad", "zero"])
def test_ig_completeness_at_64_steps(model, baseline):
    results = attribute(
        model, ITEMS, method="integrated_gradients", steps=64, max_passes=64, baseline=baseline, skip_special=False
    )
    for r in results:
        diff = r.lp - r.extras["lp_baseline"]
        assert abs(diff) > 1e-4  # the test means something
        assert r.extras["completeness_gap"] <= 0.05 * abs(diff)
        assert r.scores[0] == 0.0
        assert abs(r.extras["completeness_gap"] - abs(sum(r.scores) - diff)) < 1e-9


def test_ig_batching_does_not_change_scores(tiny_gpt2):
    a = attribute(tiny_gpt2, ITEMS, method="ig", steps=16, max_batch_tokens=64)
    b = attribute(tiny_gpt2, ITEMS, method="ig", steps=16, max_batch_tokens=100000)
    for x, y in zip(a, b):
        assert np.allclose(x.scores, y.scores, atol=1e-6)


CHAT = PromptFormat("chat", "<|sys|> You are a helpful assistant. <|user|> {question} <|bot|>")


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_ig_prefix_cache_equals_whole_rows(tiny_dirs, arch):
    """Points run after the item's cached prefix (plain HF twin, inputs_embeds) give the scores,
    gaps and costs of running every point whole through the bridge at hook_embed."""
    model = load_model(tiny_dirs[arch])
    for skip in (True, False):
        for baseline in ("pad", "zero"):
            kw = dict(method="ig", fmt=CHAT, steps=15, max_passes=15, baseline=baseline, skip_special=skip)
            a = attribute(model, ITEMS, prefix_cache=True, max_batch_tokens=300, **kw)
            b = attribute(model, ITEMS, prefix_cache=False, **kw)
            for x, y in zip(a, b):
                assert np.max(np.abs(np.array(x.scores) - np.array(y.scores))) <= 1e-6, (arch, skip, baseline)
                assert max(abs(v) for v in y.scores) > 1e-4  # not trivially zero
                assert x.extras["lp_baseline"] == pytest.approx(y.extras["lp_baseline"], abs=1e-6)
                assert (x.extras["steps"], x.extras["passes"]) == (y.extras["steps"], y.extras["passes"])


def test_ig_skips_special_tokens_against_the_formatted_baseline(model):
    """By default the format's special tokens keep their embeddings: they score 0, the baseline
    replaces only the question's tokens, and completeness holds against that baseline."""
    skip = attribute(model, ITEMS[:2], method="ig", fmt=CHAT, steps=64, max_passes=64)
    full = attribute(model, ITEMS[:2], method="ig", fmt=CHAT, steps=64, max_passes=64, skip_special=False)
    preps, _ = prepare_items(model, ITEMS[:2], fmt=CHAT)
    bid = scoring.pad_id(model.tokenizer)
    for s, f, prep in zip(skip, full, preps):
        special = [i for i, flag in enumerate(s.special) if flag]
        assert all(s.scores[i] == 0.0 for i in special) and any(f.scores[i] != 0.0 for i in special)
        assert s.extras["skipped"] == sum(prep.special[prep.first :]) > 0 and f.extras["skipped"] == 0
        base = [bid if (i >= prep.first and not prep.special[i]) else t for i, t in enumerate(prep.prompt_ids)]
        assert s.extras["lp_baseline"] == pytest.approx(_naive_lp(model, base, prep.answer_ids), abs=1e-5)
        assert s.extras["lp_baseline"] != pytest.approx(f.extras["lp_baseline"], abs=1e-4)
        diff = s.lp - s.extras["lp_baseline"]
        assert abs(diff) > 1e-4 and s.extras["completeness_gap"] <= 0.05 * abs(diff)


def test_quadratures():
    for m in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        a, w = quadrature(32, m)
        assert abs(sum(w) - 1) < 1e-12
        assert abs(sum(wi * ai**2 for ai, wi in zip(a, w)) - 1 / 3) < 1e-3  # integral of a^2
    with pytest.raises(ConfigError):
        quadrature(8, "simpson")


# ---------------------------------------------------------------- heads


def _u_and_logit(model, prep):
    """Reference: d(mean answer logit)/d(final resid) with frozen LN scale, from run_with_cache."""
    ids = torch.tensor([prep.prompt_ids + prep.answer_ids])
    logits, cache = model.run_with_cache(ids)
    n, a = len(prep.prompt_ids), len(prep.answer_ids)
    ln = model.ln_final.original_component
    pos = list(range(n - 1, n + a - 1))
    tgt = ids[0, n:]
    vec = ln.weight.detach()[:, None] * model.W_U.detach()[:, tgt]  # [d, a]
    if model.cfg.normalization_type == "LN":
        vec = vec - vec.mean(0, keepdim=True)
    scale = cache["ln_final.hook_scale"][0, pos, 0]
    u = torch.zeros(ids.shape[1], model.cfg.d_model)
    u[pos] = (vec / scale[None, :]).T / a
    mean_logit = logits[0, pos].gather(-1, tgt[:, None]).mean()
    return u, float(mean_logit.detach()), cache


def test_heads_decomposition_adds_up(model):
    results = attribute(model, ITEMS, method="heads")
    preps, _ = prepare_items(model, ITEMS)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for r, prep in zip(results, preps):
        e = r.extras
        u, mean_logit, cache = _u_and_logit(model, prep)
        hd, ht = np.array(e["head_direct"]), np.array(e["head_total"])
        assert hd.shape == (L, H, len(prep.prompt_ids) + len(prep.answer_ids))
        # per-source direct contributions sum to the head's direct contribution (from hook_z)
        for l in range(L):
            z = cache[f"blocks.{l}.attn.hook_z"][0]  # [pos head d_head]
            head_out = torch.einsum("phd,hdm->phm", z, model.W_O[l].detach())
            ref = torch.einsum("phm,pm->h", head_out, u).detach().numpy()
            assert np.abs(hd[l].sum(-1) - ref).max() <= 1e-4
        # the per-layer terms are decompose_resid read through the frozen final norm
        comps, labels = cache.decompose_resid(return_labels=True)
        ref_layer = {lab: float((comps[i, 0] * u).sum()) for i, lab in enumerate(labels)}
        for l in range(L):
            assert abs(e["attn_direct"][l] - ref_layer[f"{l}_attn_out"]) <= 1e-4
            assert abs(e["mlp_direct"][l] - ref_layer[f"{l}_mlp_out"]) <= 1e-4
            assert abs(hd[l].sum() + e["attn_bias_direct"][l] - e["attn_direct"][l]) <= 1e-4
            assert abs(ht[l].sum() + e["attn_bias_total"][l] - e["attn_total"][l]) <= 1e-4
        assert abs(e["embed_direct"] - ref_layer["embed"]) <= 1e-4
        # every component plus the constant gives the mean answer logit
        total = e["embed_direct"] + e["pos_embed_direct"] + sum(e["attn_direct"]) + sum(e["mlp_direct"]) + e["constant"]
        assert abs(total - mean_logit) <= 1e-4
        assert abs(e["answer_logit"] - mean_logit) <= 1e-4
        assert np.allclose(r.scores[prep.first :], ht[:, :, prep.first : len(prep.prompt_ids)].sum((0, 1)))


def test_heads_total_is_the_derivative_of_lp(tiny_gpt2):
    """attn_total[l] = d/d eps LP with layer l's attention output scaled by (1 + eps) at eps = 0."""
    r = attribute(tiny_gpt2, ITEMS[0], method="heads")
    prep = prepare_items(tiny_gpt2, ITEMS[0])[0][0]
    eps = 1e-3
    for l in range(tiny_gpt2.cfg.n_layers):
        vals = []
        for s in (eps, -eps):
            hook = (f"blocks.{l}.hook_attn_out", lambda act, hook=None, s=s: act * (1 + s))
            vals.append(float(scoring.score_sequences(tiny_gpt2, [prep.seq], fwd_hooks=[hook])[0]))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(fd - r.extras["attn_total"][l]) <= 1e-3 * max(1.0, abs(fd))


# ---------------------------------------------------------------- result, tracking


def test_json_round_trip_every_method(tiny_gpt2):
    for method in ("loo", "integrated_gradients", "heads"):
        a = attribute(tiny_gpt2, ITEMS[0], method=method, **({"steps": 8} if method == "integrated_gradients" else {}))
        d = json.loads(json.dumps(a.to_dict()))
        b = Attribution.from_dict(d)
        assert b == a
        assert d["item_id"] == "ana" and d["method"] == method and d["group"] == "forget"
        assert len(d["special"]) == len(d["tokens"]) == len(d["token_ids"]) == len(d["scores"])


def test_compare_deltas_and_summaries(tiny_gpt2, tiny_dirs, tmp_path):
    from unpact.testing import make_tiny_checkpoint

    other = load_model(make_tiny_checkpoint("gpt2", tmp_path / "other", seed=1))
    items = [ITEMS[0], ITEMS[1], TextItem("The cat sat on", " the mat.", id="cat", meta={"group": "general"})]
    before = attribute(tiny_gpt2, items, method="heads")
    after = attribute(other, items, method="heads")
    cmp = compare(before, after, beta=1, alpha=0.0)
    assert [d.item_id for d in cmp.items] == ["ana", "bo", "cat"]
    keys_all, other_all = [], []
    for d, b, a in zip(cmp.items, before, after):
        assert np.allclose(d.delta, np.array(a.scores) - np.array(b.scores))
        assert d.key_tokens == key_tokens(b, beta=1, alpha=0.0)
        keys_all += [d.delta[i] for i in d.key_tokens]
        other_all += [d.delta[i] for i in range(len(d.delta)) if i not in d.key_tokens and not d.special[i]]
    assert cmp.summary["key_mean_delta"] == pytest.approx(np.mean(keys_all))
    assert cmp.summary["other_mean_delta"] == pytest.approx(np.mean(other_all))
    assert set(cmp.summary["by_group"]) == {"forget", "retain", "general"}
    assert cmp.summary["by_group"]["forget"]["n_items"] == 1
    L, H = tiny_gpt2.cfg.n_layers, tiny_gpt2.cfg.n_heads
    assert np.array(cmp.summary["per_head_head_total_delta"]).shape == (L, H)
    assert len(cmp.summary["per_layer_attn_total_delta"]) == L
    json.dumps(cmp.to_dict())
    same = compare(before, before)
    assert all(d.spearman == pytest.approx(1.0) for d in same.items)
    assert same.summary["all_mean_delta"] == 0.0
    with pytest.raises(InputError, match="not in 'after'"):
        compare(before, after[:2])


# ---------------------------------------------------------------- bad input


def test_bad_input_names_the_item(tiny_gpt2):
    with pytest.raises(InputError, match="'empty'.*prompt is empty"):
        attribute(tiny_gpt2, [TextItem("", " x", id="empty")])
    with pytest.raises(InputError, match="'noans'.*answer is empty"):
        attribute(tiny_gpt2, [QAItem("Who?", "  ", id="noans")])
    long = QAItem("word " * 200, "Lima", id="long")
    with pytest.raises(InputError, match=r"'long'.*\d+ more than the model's context of 128"):
        attribute(tiny_gpt2, [long])
    a = attribute(tiny_gpt2, [long], truncate=True)[0]
    assert len(a.token_ids) + len(a.answer_ids) == 128 and a.special[0] and a.special[-1]
    with pytest.raises(ConfigError, match="unknown attribution method 'shap'"):
        attribute(tiny_gpt2, ITEMS, method="shap")
    with pytest.raises(ConfigError, match="unknown option.*'stepz'"):
        attribute(tiny_gpt2, ITEMS, method="ig", stepz=3)
    with pytest.raises(ConfigError, match="mode"):
        attribute(tiny_gpt2, ITEMS, method="loo", mode="drop")
    with pytest.raises(InputError, match="item 0"):
        attribute(tiny_gpt2, [42])
    with pytest.raises(InputError, match="no items"):
        attribute(tiny_gpt2, [])
    assert set(ATTRIBUTION_METHODS) >= {"loo", "integrated_gradients", "heads"}
