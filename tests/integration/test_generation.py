"""unpact.generation: the bridge's own generate is right, and cached hooked greedy generation equals uncached."""

from __future__ import annotations

import pytest
import torch

from unpact import load_model
from unpact.emphasis import ActivationEmphasis, batched_emphasis_hooks, emphasis_hooks
from unpact.generation import greedy_tokens, kv_cache_gap, prepare_generation
from unpact.scoring import bos_id, greedy_generate, tokenize

PROMPTS = [
    "Question: Where was the author Ana Lind born? Answer:",
    "Question: What genre does Bo Reyes write?",
    "The quick brown fox",
]
#: keyword positions (BOS at 0) per prompt: inside each prompt, different lengths
POSITIONS = [[5, 6, 7], [6, 7], [2, 3]]
LOGIT_TOL = 1e-5
_MODELS: dict[str, object] = {}


def _model(tiny_dirs, arch):
    """One bridge per architecture for the whole module (loading is the slow part)."""
    if arch not in _MODELS:
        _MODELS[arch] = load_model(tiny_dirs[arch])
    return _MODELS[arch]


def _ids(model, text: str) -> list[int]:
    b = bos_id(model.tokenizer)
    return ([int(b)] if b is not None else []) + tokenize(model.tokenizer, text)


def _hf(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()


def _reference(hf, ids: list[int], n: int, eos: int) -> list[int]:
    """Plain HF greedy generate: the new tokens, up to and including the first EOS."""
    x = torch.tensor([ids])
    out = hf.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, pad_token_id=1, eos_token_id=eos
    )[0, len(ids) :].tolist()
    return out[: out.index(eos) + 1] if eos in out else out


def _bridge_tokens(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False, return_type="tokens"
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox", "phi"])
def test_bridge_generate_equals_hf_generate(tiny_dirs, arch):
    """model.generate (use_past_kv_cache=True, its default) gives plain HF generate's greedy tokens."""
    model = _model(tiny_dirs, arch)
    assert model.unpact_kv_cache["ok"], model.unpact_kv_cache
    hf = _hf(tiny_dirs[arch])
    eos = int(model.tokenizer.eos_token_id)
    for text in PROMPTS:
        ids = _ids(model, text)
        ref = _reference(hf, ids, 12, eos)
        assert len(ref) >= 2
        assert _bridge_tokens(model, ids, 12)[: len(ref)] == ref


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_unfixed_cache_is_caught_and_generate_falls_back(tiny_dirs, arch):
    """Without unpact's fix the bridge ignores its cache; the load-time check sees it and generate runs uncached."""
    model = load_model(tiny_dirs[arch])
    for mod in model.modules():
        vars(mod).pop("_update_kv_cache", None)  # the bridge as TransformerLens ships it
    gap = kv_cache_gap(model)
    if gap < 1e-3:
        pytest.skip("this TransformerLens/transformers pair fills the bridge's cache without unpact's fix")
    info = prepare_generation(model, fix=False)
    assert not info["ok"] and info["gap"] == pytest.approx(gap)
    hf = _hf(tiny_dirs[arch])
    ids = _ids(model, PROMPTS[0])
    ref = _reference(hf, ids, 10, int(model.tokenizer.eos_token_id))
    assert _bridge_tokens(model, ids, 10)[: len(ref)] == ref
    # hooked greedy generation on such a model takes the uncached path: still the reference answer
    toks, _ = greedy_tokens(model, [ids], max_new_tokens=6, fwd_hooks=[], stop_at_newline=False)
    assert toks[0] == greedy_tokens(model, [ids], max_new_tokens=6, cache=False, stop_at_newline=False)[0][0]


def _compare(model, seqs, hooks, n=8, stop_at_newline=False):
    a, la = greedy_tokens(
        model, seqs, max_new_tokens=n, fwd_hooks=hooks, cache=True, keep_logits=True, stop_at_newline=stop_at_newline
    )
    b, lb = greedy_tokens(
        model, seqs, max_new_tokens=n, fwd_hooks=hooks, cache=False, keep_logits=True, stop_at_newline=stop_at_newline
    )
    assert a == b
    for x, y in zip(la, lb):
        assert x.shape == y.shape
        assert float((x - y).abs().max()) <= LOGIT_TOL
    return a, la


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
@pytest.mark.parametrize("kind", ["attention", "value", "residual"])
def test_cached_hooked_generation_equals_uncached(tiny_dirs, arch, kind):
    model = _model(tiny_dirs, arch)
    seqs = [_ids(model, p) for p in PROMPTS]
    assert all(max(pos) < len(s) for pos, s in zip(POSITIONS, seqs))
    emph = ActivationEmphasis(kind, factor=8.0, layers="all", site="attn_out")
    toks, logits = _compare(model, seqs, emphasis_hooks(model, emph, POSITIONS))
    # the hooks act at every decoding step (not only on the prompt): the logits move there too
    _plain, plain = _compare(model, seqs, None)
    moved = max(float((h[1:k] - p[1:k]).abs().max()) for h, p in zip(logits, plain) if (k := min(len(h), len(p))) > 1)
    assert moved > 1e-3
    # per-row settings in one batch (two kinds, and a plain row) behave the same way
    mixed = [emph, ActivationEmphasis("attention", factor=4.0, layers="early"), None]
    _compare(model, seqs, batched_emphasis_hooks(model, mixed, POSITIONS))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_cached_emphasis_on_embedded_models(name):
    """Real answers of different lengths (rows leave the batch at EOS/newline): same text, same logits."""
    from unpact.data import load_benchmark
    from unpact.emphasis.rewrites import keyword_positions

    model = load_model(f"embedded:{name}")
    items = load_benchmark("embedded:tofu", "forget10").items[:6]
    prompts = [f"Question: {it.question}\nAnswer:" for it in items]
    seqs = [_ids(model, p) for p in prompts]
    pos = [keyword_positions(model.tokenizer, it.question, it.question.split()[-2:]) for it in items]
    settings = [ActivationEmphasis("attention", 4.0, "all"), ActivationEmphasis("value", 4.0, "middle"), None] * 2
    hooks = batched_emphasis_hooks(model, settings, pos)
    toks, _ = _compare(model, seqs, hooks, n=20, stop_at_newline=True)
    assert len({len(t) for t in toks}) > 1  # rows finished at different steps


def test_hook_free_generation_uses_the_cache_and_equals_uncached(tiny_dirs):
    model = _model(tiny_dirs, "llama")
    seqs = [_ids(model, p) for p in PROMPTS]
    _compare(model, seqs, None, n=10)
    texts = greedy_generate(model, PROMPTS, max_new_tokens=10)
    assert texts == greedy_generate(model, PROMPTS, max_new_tokens=10, cache=False)
