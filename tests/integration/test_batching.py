"""Memory-bounded batching: a token budget splits every stage's batches without changing
the numbers (evaluation, attribution, unlearning micro-batches), and gradient
checkpointing gives the same unlearning update."""

from __future__ import annotations

import pytest
import torch

from types import SimpleNamespace

from unpact import load_model
from unpact.attacks import make_attack
from unpact.config import RunConfig
from unpact.controls import HideConfig, hide_facts
from unpact.data import PLAIN, QAItem
from unpact.errors import ConfigError
from unpact.models import hf_model_of
from unpact.stages import attack_config, method_overrides, stage_budgets, training_options
from unpact.unlearning import unlearn
from unpact.unlearning.base import _checkpointing_on, micro_batches

FORGET = [
    QAItem("Where was the author Ana Lind born?", "Lima"),
    QAItem("What genre does Bo Reyes write?", "crime fiction"),
    QAItem("Where was the author Bo Reyes born?", "Paris"),
    QAItem("What genre does Ana Lind write?", "the lazy dog"),
]
RETAIN = [
    QAItem("What is 2 + 3?", "5"),
    QAItem("What is 7 - 4?", "3"),
    QAItem("Where did the cat sit?", "on the mat"),
    QAItem("What does the fox do?", "jumps over the lazy dog"),
]


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return load_model(tiny_dirs["gpt2"])


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hf_model_of(model).state_dict().items()}


def _max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_micro_batches_fit_the_budget_and_keep_every_index():
    seqs = [([0] * n, [1, 2]) for n in (3, 5, 2, 8, 4)]
    idx = [4, 0, 3, 1, 2]
    assert micro_batches(idx, seqs, None) == [idx]
    parts = micro_batches(idx, seqs, 20)
    assert [i for p in parts for i in p] == idx
    assert len(parts) > 1
    assert all(len(p) * max(sum(map(len, seqs[i])) for i in p) <= 20 for p in parts)
    assert len(micro_batches(idx, seqs, 10_000, parts=3)) == 3


@pytest.mark.parametrize("method", ["ga_gdr", "npo_gdr"])
def test_micro_batched_unlearning_equals_one_pass(gpt2, method):
    """GA and NPO (+ GD retain) are means over items: micro-batches with accumulated
    gradients give the one-pass update."""
    cfg = {"steps": 3, "batch_size": 4, "lr": 1e-3}
    one = unlearn(gpt2, method, FORGET, RETAIN, cfg, seed=1)
    split = unlearn(gpt2, method, FORGET, RETAIN, {**cfg, "max_batch_tokens": 24}, seed=1)
    assert _max_diff(_state(one.model), _state(split.model)) < 1e-5
    for a, b in zip(one.losses, split.losses):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    # and the split did happen: a budget below one row is an error-free 1-row split
    assert len(micro_batches(list(range(4)), [([0] * 12, [1] * 4)] * 4, 24)) > 1


@pytest.mark.parametrize("method", ["ga_gdr", "npo_gdr", "idk"])
def test_micro_batches_with_fewer_forget_than_retain_rows_equal_one_pass(gpt2, method):
    """2 forget rows beside 4 retain rows: the retain split is not the forget split's (and once
    needed more passes than there are forget rows, whose retain parts were dropped). Each term is
    weighted by its own share of rows, so the step is the one-pass step."""
    cfg = {"steps": 2, "batch_size": 4, "lr": 1e-3}
    one = unlearn(gpt2, method, FORGET[:2], RETAIN, cfg, seed=1)
    for budget in (24, 8):  # 8: below one row, so 2 forget passes beside 4 retain rows
        split = unlearn(gpt2, method, FORGET[:2], RETAIN, {**cfg, "max_batch_tokens": budget}, seed=1)
        assert _max_diff(_state(one.model), _state(split.model)) < 1e-5
        for a, b in zip(one.losses, split.losses):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_gradient_checkpointing_gives_the_same_weights(gpt2):
    cfg = {"steps": 2, "batch_size": 4, "lr": 1e-3}
    plain = unlearn(gpt2, "ga_gdr", FORGET, RETAIN, cfg, seed=2)
    seen = []
    ckpt = unlearn(
        gpt2,
        "ga_gdr",
        FORGET,
        RETAIN,
        {
            **cfg,
            "gradient_checkpointing": True,
            "on_step": lambda step, m: seen.append(_checkpointing_on(hf_model_of(m))),
        },
        seed=2,
    )
    assert seen == [True, True]  # on while training
    assert _max_diff(_state(plain.model), _state(ckpt.model)) < 1e-5
    assert not _checkpointing_on(hf_model_of(ckpt.model))  # switched off after


def _saved_bytes(gpt2, checkpointing: bool) -> int:
    """Bytes autograd keeps for the backward pass over one unlearning step of 4 forget + 4 retain rows."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    cfg = {"steps": 1, "batch_size": 4, "lr": 1e-3, "gradient_checkpointing": checkpointing}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unlearn(gpt2, "ga_gdr", FORGET, RETAIN, cfg, seed=2)
    return saved[0]


def test_gradient_checkpointing_keeps_fewer_activations_and_no_dropout_on(gpt2):
    """HF checkpoints a layer only in training mode, and unlearning runs in eval mode (no dropout):
    the flag alone kept every activation (SmolLM2-135M's unlearning peaked at 6.5 GB either way).
    Checkpointed, the layers' activations are recomputed in the backward pass instead of kept
    (on embedded:gpt2 about 8x fewer bytes), and no module is left in training mode."""
    plain = _saved_bytes(gpt2, False)
    assert _saved_bytes(gpt2, True) < plain / 3
    assert not any(m.training for m in hf_model_of(gpt2).modules())


def test_bad_budget_is_an_error(gpt2):
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        unlearn(gpt2, "ga", FORGET, None, {"max_batch_tokens": 0})


def _kept_bytes(fn) -> tuple[int, object]:
    """Bytes autograd keeps for the backward passes of ``fn()``, and what it returns."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return saved[0], out


def test_the_positive_control_and_relearning_take_the_study_s_training_options(gpt2):
    """The study trains in four places; the positive control's hiding fine-tune and the relearning
    attack took neither the token budget nor gradient checkpointing (the real model's study peaked
    at 7.0 GB with only its unlearning bounded). Now they do: the same weights, fewer bytes kept."""
    on = {"gradient_checkpointing": True, "max_batch_tokens": 24}

    def hide(training):
        return hide_facts(gpt2, FORGET[:2], RETAIN, HideConfig(steps=1, lr=1e-3), seed=0, training=training)

    plain_bytes, plain = _kept_bytes(lambda: hide(None))
    on_bytes, bounded = _kept_bytes(lambda: hide(on))
    assert on_bytes < plain_bytes / 2
    assert _max_diff(_state(plain), _state(bounded)) < 1e-5

    def relearn(options):
        attack = make_attack("relearning", {"steps": (1,), "lrs": (1e-3,), "batch_size": 2, **options})
        return attack.apply(gpt2, FORGET, attack.settings()[0], fmt=PLAIN, pool={}, seed=0).model

    plain_bytes, plain = _kept_bytes(lambda: relearn({}))
    on_bytes, bounded = _kept_bytes(lambda: relearn(on))
    assert on_bytes < plain_bytes / 2
    assert _max_diff(_state(plain), _state(bounded)) < 1e-5


def test_a_study_gives_its_training_options_to_every_fine_tune_and_a_setting_of_its_own_wins():
    cfg = RunConfig(gradient_checkpointing=True, max_batch_tokens=4000)
    cfg.method_config = {"npo_gdr": {"max_batch_tokens": 320}}
    cfg.attacks.options = {"relearning": {"gradient_checkpointing": False}}
    study = SimpleNamespace(cfg=cfg, budgets=stage_budgets(cfg.max_batch_tokens))
    assert training_options(study) == {"max_batch_tokens": 1000, "gradient_checkpointing": True}
    assert method_overrides(study, "ga_gdr") == {"max_batch_tokens": 1000, "gradient_checkpointing": True}
    assert method_overrides(study, "npo_gdr")["max_batch_tokens"] == 320
    assert attack_config(study, "relearning") == {"max_batch_tokens": 1000, "gradient_checkpointing": False}
    assert attack_config(study, "in_context") == {}  # attacks that do not train take none
