"""Unlearning methods on tiny real checkpoints: direction of the loss, weight edits,
the original left alone, save/reload, NaN stop, determinism, config errors."""

from __future__ import annotations

import gc
import math

import pytest
import torch

from unpact import load_model, save_model
from unpact.data import QAItem
from unpact.errors import ConfigError
from unpact.models import hf_model_of
from unpact.scoring import answer_logprobs
from unpact.unlearning import METHODS, PAPER_METHODS, get_method, unlearn
from unpact.unlearning.base import copy_model
from unpact.unlearning.losses import kl_to_reference, npo_loss, simnpo_loss

FORGET = [
    QAItem("Where was the author Ana Lind born?", "Lima"),
    QAItem("What genre does Bo Reyes write?", "crime fiction"),
    QAItem("Where was the author Bo Reyes born?", "Paris"),
    QAItem("What genre does Ana Lind write?", "the lazy dog"),
    QAItem("What is the capital of France?", "Paris"),
    QAItem("Who jumps over the lazy dog?", "The quick brown fox"),
]
RETAIN = [
    QAItem("What is 2 + 3?", "5"),
    QAItem("What is 7 - 4?", "3"),
    QAItem("Where did the cat sit?", "on the mat"),
    QAItem("What do unlearning methods do?", "hide knowledge"),
    QAItem("What is the capital of Peru?", "Lima"),
    QAItem("What does the fox do?", "jumps over the lazy dog"),
]
FAST = {"steps": 4, "batch_size": 4, "lr": 1e-3}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hf_model_of(model).state_dict().items()}


def _forget_lp(model) -> float:
    p = [f"Question: {it.question}\nAnswer:" for it in FORGET]
    a = [" " + it.answer for it in FORGET]
    return float(answer_logprobs(model, p, a).mean())


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return load_model(tiny_dirs["gpt2"])


def test_registry_has_the_ten_methods():
    assert set(PAPER_METHODS) <= set(METHODS)
    assert set(METHODS) == {
        "ga",
        "ga_gdr",
        "ga_klr",
        "npo",
        "npo_gdr",
        "npo_klr",
        "simnpo",
        "task_vector",
        "rmu",
        "idk",
    }
    assert get_method("NPO-GDR").config_class().beta == 0.1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_edits_a_copy_and_moves_its_loss(gpt2, name):
    before = _state(gpt2)
    lp0 = _forget_lp(gpt2)
    res = unlearn(gpt2, name, FORGET, RETAIN, FAST, seed=0)
    assert not res.stopped_early, res.message
    assert res.method == name and len(res.losses) == FAST["steps"]
    losses = [r["loss"] for r in res.losses]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses  # every method minimises its own objective
    after = _state(gpt2)
    assert all(torch.equal(before[k], after[k]) for k in before), "the original model was modified"
    edited = _state(res.model)
    assert any(not torch.equal(before[k], edited[k]) for k in before), "no weight changed"
    if name in ("ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr", "task_vector"):
        assert _forget_lp(res.model) < lp0  # these push the forget answers' log-prob down directly


@pytest.mark.parametrize("name", ["npo_klr", "rmu"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_methods_run_on_other_architectures(tiny_dirs, arch, name):
    model = load_model(tiny_dirs[arch])
    res = unlearn(model, name, FORGET, RETAIN, FAST, seed=0)
    assert not res.stopped_early and res.losses[-1]["loss"] < res.losses[0]["loss"]


@pytest.mark.parametrize("name", ["ga_gdr", "task_vector"])
def test_saved_checkpoint_reloads_with_the_same_logits(gpt2, tmp_path, name):
    res = unlearn(gpt2, name, FORGET, RETAIN, FAST, seed=0)
    save_model(res.model, tmp_path / name)
    back = load_model(tmp_path / name)
    ids = torch.tensor([[0, 5, 17, 30, 41, 52, 9]])
    with torch.no_grad():
        a = res.model(ids, return_type="logits")
        b = back(ids, return_type="logits")
        orig = gpt2(ids, return_type="logits")
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, orig, atol=1e-4)


def test_same_seed_same_weights_other_seed_other_weights(gpt2):
    cfg = {"steps": 3, "batch_size": 2, "lr": 1e-3}
    a = _state(unlearn(gpt2, "npo_gdr", FORGET, RETAIN, cfg, seed=3).model)
    b = _state(unlearn(gpt2, "npo_gdr", FORGET, RETAIN, cfg, seed=3).model)
    c = _state(unlearn(gpt2, "npo_gdr", FORGET, RETAIN, cfg, seed=4).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_nan_stops_with_the_last_finite_weights(gpt2):
    def poison(step, model):
        if step == 2:
            with torch.no_grad():
                next(hf_model_of(model).parameters()).fill_(float("nan"))

    res = unlearn(gpt2, "ga_gdr", FORGET, RETAIN, {**FAST, "steps": 10, "on_step": poison}, seed=0)
    assert res.stopped_early
    assert len(res.losses) == 3
    assert "step 3" in res.message and f"{res.losses[-1]['loss']:.6g}" in res.message
    # the returned weights are those that gave the last finite loss (step 2): the state after 2 updates
    ref = unlearn(gpt2, "ga_gdr", FORGET, RETAIN, {**FAST, "steps": 2}, seed=0)
    got, want = _state(res.model), _state(ref.model)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_inplace_edits_the_given_model(tiny_dirs):
    model = load_model(tiny_dirs["gpt2"])
    before = _state(model)
    res = unlearn(model, "ga", FORGET, None, FAST, inplace=True)
    assert res.model is model
    assert any(not torch.equal(before[k], v) for k, v in _state(model).items())


def test_bad_config_errors(gpt2):
    with pytest.raises(ConfigError, match="known: .*ga_gdr.*rmu"):
        unlearn(gpt2, "gradient_magic", FORGET, RETAIN)
    with pytest.raises(ConfigError, match="unknown option.*bogus"):
        unlearn(gpt2, "npo", FORGET, RETAIN, {"bogus": 1})
    with pytest.raises(ConfigError, match="needs a retain set"):
        unlearn(gpt2, "ga_gdr", FORGET, None)
    with pytest.raises(ConfigError, match="lr"):
        unlearn(gpt2, "ga", FORGET, None, {"lr": -1.0})


def test_rmu_retain_loss_starts_at_zero_and_npo_starts_at_2_log2_over_beta(gpt2):
    rmu = unlearn(gpt2, "rmu", FORGET, RETAIN, FAST)
    assert rmu.losses[0]["retain_loss"] == pytest.approx(0.0, abs=1e-10)  # frozen = initial activations
    npo = unlearn(gpt2, "npo", FORGET, None, FAST)
    assert npo.losses[0]["loss"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)  # π = π_ref at step 0
    klr = unlearn(gpt2, "ga_klr", FORGET, RETAIN, FAST)
    assert klr.losses[0]["retain_loss"] == pytest.approx(0.0, abs=1e-6)


def test_loss_formulas_on_hand_values():
    assert float(npo_loss(torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1)) == pytest.approx(20 * math.log(2), rel=1e-6)
    # log π - log π_ref = -10, β = 0.1: -(2/β) log σ(1) = 20 * log(1 + e^-1)
    assert float(npo_loss(torch.tensor([-12.0]), torch.tensor([-2.0]), 0.1)) == pytest.approx(
        20 * math.log1p(math.exp(-1)), rel=1e-6
    )
    assert float(simnpo_loss(torch.tensor([-1.0]), beta=2.0, gamma=0.0)) == pytest.approx(
        math.log1p(math.exp(-2)), rel=1e-6
    )
    logits = torch.randn(1, 4, 7)
    mask = torch.tensor([[False, False, True, True]])
    ref = logits[0, 1:3].log_softmax(-1)
    assert float(kl_to_reference(logits, mask, ref)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 7).log_softmax(-1)
    want = float((other.exp() * (other - ref)).sum(-1).mean())
    assert float(kl_to_reference(logits, mask, other)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_copy_model_has_its_own_hook_points(tiny_dirs, arch):
    """TransformerLens 4 wires ``hook_mlp_in`` through closures over the block's own hook points; a
    copy must run its own: a hook on the copy changes the copy, a hook on the original never fires
    when the copy runs, and the copy still runs once the original is freed."""
    original = load_model(tiny_dirs[arch])
    original.set_use_hook_mlp_in(True)
    copied = copy_model(original)
    ids = torch.tensor([[0, 5, 6, 7, 8, 9]])
    plain = copied(ids, return_type="logits")
    zeroed = copied.run_with_hooks(
        ids, return_type="logits", fwd_hooks=[("blocks.0.hook_mlp_in", lambda x, hook: x * 0)]
    )
    assert not torch.allclose(plain, zeroed)
    fired = []
    original.add_hook("blocks.0.hook_mlp_in", lambda x, hook: fired.append(hook.name))
    copied(ids, return_type="logits")
    assert not fired
    del original
    gc.collect()
    assert torch.allclose(copied(ids, return_type="logits"), plain)
