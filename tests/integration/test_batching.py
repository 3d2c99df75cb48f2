"""Memory-bounded batching: a token budget splits every stage's batches without changing
the numbers (evaluation, attribution, unlearning micro-batches), and gradient
checkpointing gives the same unlearning update."""

from __future__ import annotations

import pytest
import torch

from unpact import load_model
from unpact.data import QAItem
from unpact.errors import ConfigError
from unpact.models import hf_model_of
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
