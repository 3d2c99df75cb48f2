"""unpact.hooks on tiny real checkpoints: exactness, locality, renormalisation, cleanup."""

from __future__ import annotations

import pytest
import torch

from unpact import load_model
from unpact.hooks import (
    Capture,
    ablation_hooks,
    attention_scaling_hooks,
    position_mask,
    residual_scaling_hooks,
    scale_attention,
)
from unpact.scoring import answer_logprobs, greedy_generate

TOKENS = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 11], [0, 12, 13, 14, 15, 16, 17, 18]])


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tiny_dirs):
    return load_model(tiny_dirs[request.param])


def _logits(model, hooks=()):
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(TOKENS, return_type="logits")


def _capture(model, names, hooks=()):
    cap = Capture(names)
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks) + cap.fwd_hooks):
        model(TOKENS, return_type="logits")
    return cap.acts


def _no_hooks_left(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


def test_bridge_uses_the_hooked_pattern(model):
    """hook_z must be computed from the edited pattern: all attention on key 2 -> z = v at 2."""

    def onto_two(p, hook):
        q = torch.zeros_like(p)
        q[..., 2] = 1.0
        return q

    acts = _capture(model, ["blocks.0.attn.hook_z", "blocks.0.attn.hook_v"], [("blocks.0.attn.hook_pattern", onto_two)])
    z, v = acts["blocks.0.attn.hook_z"], acts["blocks.0.attn.hook_v"]
    assert torch.allclose(z[:, 2:], v[:, 2:3].expand_as(z[:, 2:]), atol=1e-6)
    assert not torch.allclose(_logits(model, [("blocks.0.attn.hook_pattern", onto_two)]), _logits(model))


def test_attention_rows_renormalised_and_ratio_scaled(model):
    name = "blocks.1.attn.hook_pattern"
    before = _capture(model, [name])[name]
    after = _capture(model, [name], attention_scaling_hooks([1], [2, 4], 4.0))[name]
    assert torch.allclose(after.sum(-1), torch.ones_like(after.sum(-1)), atol=1e-5)
    # ratio between a key and a non-key is multiplied by the factor (query 6 sees keys 0..6)
    r_before = before[..., 6, 2] / before[..., 6, 3]
    r_after = after[..., 6, 2] / after[..., 6, 3]
    assert torch.allclose(r_after, 4.0 * r_before, rtol=1e-4)
    assert (after[..., 6, [2, 4]].sum(-1) > before[..., 6, [2, 4]].sum(-1)).all()


@pytest.mark.parametrize("kind", ["attention", "residual"])
def test_factor_one_is_exact_noop(model, kind):
    base = _logits(model)
    make = attention_scaling_hooks if kind == "attention" else residual_scaling_hooks
    hooks = make([0, 1], [1, 2, 3], 1.0)
    assert torch.equal(_logits(model, hooks), base)
    # also the hook function itself called with factor 1, attached explicitly
    explicit = [
        (f"blocks.{l}.attn.hook_pattern", lambda p, hook: scale_attention(p, hook, positions=[1, 2], factor=1))
        for l in range(2)
    ]
    assert torch.equal(_logits(model, explicit), base)
    prompts, answers = ["Question: Who?\nAnswer:"], [" Ana"]
    assert torch.equal(
        answer_logprobs(model, prompts, answers, fwd_hooks=hooks), answer_logprobs(model, prompts, answers)
    )


def test_attention_only_named_layers_heads_and_rows_change(model):
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(2)]
    before = _capture(model, names)
    after = _capture(model, names, attention_scaling_hooks([1], [3], 8.0, heads=[2]))
    assert torch.equal(before[names[0]], after[names[0]])
    other = [h for h in range(after[names[1]].shape[1]) if h != 2]
    assert torch.equal(before[names[1]][:, other], after[names[1]][:, other])
    # queries 0..2 pay nothing to key 3 (causal): unchanged bit for bit
    assert torch.equal(before[names[1]][:, 2, :3], after[names[1]][:, 2, :3])
    assert not torch.allclose(before[names[1]][:, 2, 3:], after[names[1]][:, 2, 3:])
    # logits before position 3 are untouched
    assert torch.equal(_logits(model)[:, :3], _logits(model, attention_scaling_hooks([1], [3], 8.0, heads=[2]))[:, :3])


def test_residual_only_named_positions_and_layers_change(model):
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    before = _capture(model, names)
    after = _capture(model, names, residual_scaling_hooks([1], [3, 5], 2.0, site="resid_pre"))
    assert torch.equal(before[names[0]], after[names[0]])
    keep = [0, 1, 2, 4, 6, 7]
    assert torch.equal(before[names[1]][:, keep], after[names[1]][:, keep])
    assert torch.allclose(after[names[1]][:, [3, 5]], 2.0 * before[names[1]][:, [3, 5]])
    assert torch.equal(before[names[2]][:, :3], after[names[2]][:, :3])
    assert not torch.allclose(before[names[2]][:, 3], after[names[2]][:, 3])


def test_per_row_mask_equals_list_and_pads_to_width(model):
    as_list = _logits(model, attention_scaling_hooks([0, 1], [2], 4.0))
    mask = torch.zeros(2, 3, dtype=torch.bool)  # narrower than the sequence: padded with False
    mask[:, 2] = True
    assert torch.equal(_logits(model, attention_scaling_hooks([0, 1], mask, 4.0)), as_list)
    ragged = _logits(model, attention_scaling_hooks([0, 1], [[2], [4]], 4.0))
    assert torch.equal(ragged[0], as_list[0])
    assert not torch.allclose(ragged[1], as_list[1])
    assert position_mask([[1], [0, 2]], 2, 3).tolist() == [[False, True, False], [True, False, True]]


def test_hooks_removed_after_call_and_after_exception(model):
    hooks = attention_scaling_hooks([0, 1], [1], 2.0) + residual_scaling_hooks([0], [1], 2.0)
    _logits(model, hooks)
    assert _no_hooks_left(model)

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _logits(model, hooks + [("blocks.1.hook_resid_post", boom)])
    assert _no_hooks_left(model)
    with pytest.raises(RuntimeError, match="boom"):
        greedy_generate(
            model,
            ["Question: Who?\nAnswer:"],
            max_new_tokens=2,
            fwd_hooks=lambda idx: [("blocks.0.hook_mlp_out", boom)],
        )
    assert _no_hooks_left(model)


def test_generation_hooks_callable_per_item(model):
    prompts = ["Question: Who?\nAnswer:", "Question: Where was Ana Lind born?\nAnswer:"]
    base = greedy_generate(model, prompts, max_new_tokens=3)
    seen = []

    def per_item(idx):
        seen.append(list(idx))
        return attention_scaling_hooks([0, 1], [[2] for _ in idx], 1.0)

    assert greedy_generate(model, prompts, max_new_tokens=3, fwd_hooks=per_item) == base
    # first with every row of the batch; again (with the rows still running, in order) when answers end
    assert sorted(i for i in seen[0]) == [0, 1]
    for before, after in zip(seen, seen[1:]):
        assert set(after) < set(before) and after == sorted(after, key=before.index)


def test_zero_and_mean_ablation(model):
    name = "blocks.0.hook_resid_post"
    before = _capture(model, [name])[name]
    zero = _capture(model, [name], ablation_hooks([name], [2], "zero"))[name]
    assert torch.equal(zero[:, 2], torch.zeros_like(zero[:, 2]))
    assert torch.equal(zero[:, [0, 1, 3]], before[:, [0, 1, 3]])
    value = torch.arange(before.shape[-1], dtype=before.dtype)
    mean = _capture(model, [name], ablation_hooks([name], [2], "mean", value=value))[name]
    assert torch.equal(mean[:, 2], value.expand_as(mean[:, 2]))
    batch_mean = _capture(model, [name], ablation_hooks([name], [2], "mean"))[name]
    rest = before[:, [0, 1, 3, 4, 5, 6, 7]].reshape(-1, before.shape[-1]).mean(0)
    assert torch.allclose(batch_mean[0, 2], rest, atol=1e-6)


def test_capture_gradient_matches_autograd(model):
    name = "blocks.1.hook_resid_pre"
    cap = Capture([name])
    keep = {}

    def hold(act, hook):
        keep["a"] = act
        return act

    with model.hooks(fwd_hooks=[(name, hold)] + cap.fwd_hooks, bwd_hooks=cap.bwd_hooks):
        out = model(TOKENS, return_type="logits")[0, -1, 3]
        (expected,) = torch.autograd.grad(out, keep["a"], retain_graph=True)
        out.backward()
    model.zero_grad(set_to_none=True)
    assert torch.equal(cap.acts[name], keep["a"].detach())
    assert torch.allclose(cap.grads[name], expected, atol=1e-6)
    assert cap.grads[name][0, :-1].abs().sum() > 0 and torch.equal(
        cap.grads[name][1], torch.zeros_like(cap.grads[name][1])
    )
    assert _no_hooks_left(model)


@pytest.mark.parametrize("kind", ["attention", "residual", "value"])
def test_per_row_factors_equal_separate_runs(model, kind):
    """One batch with a factor per row gives each row what a run with that factor alone gives it."""

    def make(factor):
        if kind == "attention":
            return attention_scaling_hooks([0, 1], [[2, 3], [4]], factor)
        return residual_scaling_hooks([0, 1], [[2, 3], [4]], factor, site="v" if kind == "value" else "resid_pre")

    base = _logits(model)
    two, eight = _logits(model, make(2.0)), _logits(model, make(8.0))
    mixed = _logits(model, make(torch.tensor([2.0, 8.0])))
    assert torch.allclose(mixed[0], two[0], atol=1e-6) and torch.allclose(mixed[1], eight[1], atol=1e-6)
    assert not torch.allclose(mixed[0], base[0])
    # a row with factor 1 is the unhooked row bit for bit, whatever the other rows get
    half = _logits(model, make(torch.tensor([1.0, 8.0])))
    assert torch.equal(half[0], base[0]) and torch.allclose(half[1], eight[1], atol=1e-6)
    assert make(torch.tensor([1.0, 1.0])) == []
    with pytest.raises(ValueError, match=">= 0"):
        make(torch.tensor([2.0, -1.0]))


def test_per_row_factors_in_scale_attention_directly():
    torch.manual_seed(0)
    pattern = torch.rand(3, 2, 5, 5).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    rows = scale_attention(pattern, positions=[[1], [1, 2], [3]], factor=torch.tensor([4.0, 1.0, 0.5]), heads=[1])
    for r, f in enumerate([4.0, 1.0, 0.5]):
        alone = scale_attention(pattern[r : r + 1], positions=[[[1], [1, 2], [3]][r]], factor=f, heads=[1])
        assert torch.equal(rows[r : r + 1], alone)
    assert torch.equal(rows[1], pattern[1]) and torch.equal(rows[:, 0], pattern[:, 0])
    with pytest.raises(ValueError, match="3 rows"):
        scale_attention(pattern, positions=[1], factor=torch.tensor([2.0, 2.0]))
