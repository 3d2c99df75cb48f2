"""Unlearning strength as a trajectory (unpact.trajectory): checkpoints in step order, each target
once, the model at a checkpoint equal to a run stopped at that step; the warm-up and the stop hook
of the training loop (unpact.unlearning.base)."""

from __future__ import annotations

import pytest
import torch

from unpact import load_model
from unpact.data import load_benchmark, spread_sample
from unpact.errors import ConfigError
from unpact.models import hf_model_of
from unpact.trajectory import TrajectoryResult, TrajectorySettings, gentle_config, run_trajectory, target_name
from unpact.unlearning import unlearn
from unpact.unlearning.base import warmup_factor


def _need_embedded(*names: str) -> None:
    from unpact.models import embedded_model_names

    missing = [n for n in names if n not in embedded_model_names()]
    if missing:
        pytest.skip(f"embedded:{missing[0]} is not built (unpact build-embedded)")


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in hf_model_of(model).parameters()]


@pytest.fixture(scope="module")
def world():
    _need_embedded("gpt2")
    forget = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), 8)
    retain = spread_sample(list(load_benchmark("embedded:tofu", "retain90")), 8)
    return load_model("embedded:gpt2"), forget, retain


def test_settings_validate_and_warmup_factor():
    assert [warmup_factor(s, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    s = TrajectorySettings(marks=(20, 10, 10), targets=(0.1, 0.5))
    assert s.marks == (10, 20) and s.targets == (0.5, 0.1)  # sorted, largest target first
    for bad in ({"lr_factor": 0}, {"marks": (0,)}, {"targets": (1.5,)}, {"check_every": 0}, {"threshold": 0}):
        with pytest.raises(ConfigError):
            TrajectorySettings(**bad)
    assert target_name(0.25) == "forget_below_0.25"


def test_gentle_config_scales_the_methods_own_default(world):
    model, _, _ = world
    from unpact.unlearning import get_method

    base = get_method("npo_gdr").config_class()
    cfg = gentle_config(model, "npo_gdr", TrajectorySettings())
    assert cfg["lr"] == pytest.approx(base.lr * 0.25)
    assert cfg["steps"] == 4 * base.steps and cfg["warmup_steps"] == 5
    cfg = gentle_config(model, "npo_gdr", TrajectorySettings(max_steps=7), {"beta": 0.2})
    assert cfg["steps"] == 7 and cfg["beta"] == 0.2


@pytest.mark.slow
def test_checkpoints_in_step_order_targets_once_and_equal_to_a_stopped_run(world):
    model, forget, retain = world
    # a run strong enough that some targets are crossed within 6 steps on 8 items
    settings = TrajectorySettings(
        lr_factor=4.0,
        max_steps=6,
        warmup_steps=2,
        marks=(2, 4),
        monitor_items=8,
        check_every=1,
        max_new_tokens=12,
        stop_when_done=False,
    )
    seen: list[tuple[str, int, float]] = []
    saved: dict[int, list[torch.Tensor]] = {}

    def on_checkpoint(name, step, m, acc):
        seen.append((name, step, acc))
        saved.setdefault(step, _params(m))

    before = _params(model)
    res = run_trajectory(model, "ga_gdr", forget, retain, on_checkpoint=on_checkpoint, settings=settings, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))  # the original is untouched
    steps = [s for _, s, _ in seen]
    assert steps == sorted(steps) and res.steps_run == 6
    assert [c.name for c in res.checkpoints] == [n for n, _, _ in seen]
    names = [n for n, _, _ in seen]
    assert {"step_2", "step_4", "final"} <= set(names) and names[-1] == "final"
    trace = {r["step"]: r["forget_accuracy"] for r in res.monitor}
    assert sorted(trace) == list(range(7))
    for t, step in res.targets.items():
        hits = [s for n, s, _ in seen if n == target_name(t)]
        if step is None:  # never reached: no checkpoint, and the monitor never went below it
            assert not hits and all(a >= t for a in trace.values())
        else:  # reached once, at the first step below it
            assert hits == [step] and trace[step] < t and all(trace[s] >= t for s in range(step))
    assert any(v is not None for v in res.targets.values()), res.monitor
    # the model handed over at a checkpoint is the model of a run stopped there (same seed)
    cfg = gentle_config(model, "ga_gdr", settings)
    for k in (2, 4):
        stopped = unlearn(model, "ga_gdr", forget, retain, {**cfg, "steps": k}, seed=3).model
        assert all(torch.equal(a, b) for a, b in zip(saved[k], _params(stopped))), k
    assert TrajectoryResult.from_dict(res.to_dict()).to_dict() == res.to_dict()


@pytest.mark.slow
def test_stop_when_done_and_targets_met_before_any_update(world):
    model, forget, retain = world
    # the model never saw the holdout authors: every target is met at step 0
    holdout = spread_sample(list(load_benchmark("embedded:tofu", "holdout10")), 6)
    seen = []
    settings = TrajectorySettings(max_steps=10, marks=(2,), check_every=1, targets=(0.75, 0.5))
    res = run_trajectory(
        model,
        "npo_gdr",
        forget,
        retain,
        monitor=holdout,
        settings=settings,
        on_checkpoint=lambda n, s, m, a: seen.append((n, s)),
    )
    assert all(step == 0 for step in res.targets.values())
    assert [n for n, s in seen if s == 0] == [target_name(t) for t in settings.targets]
    assert res.steps_run == 2 and seen[-1] == ("final", 2)  # stopped after the last mark


@pytest.mark.slow
def test_task_vector_checkpoints_are_the_negation_so_far(world):
    model, forget, _ = world
    settings = TrajectorySettings(max_steps=4, marks=(2,), monitor_items=4, check_every=2, stop_when_done=False)
    saved = {}
    run_trajectory(
        model,
        "task_vector",
        forget,
        None,
        settings=settings,
        on_checkpoint=lambda n, s, m, a: saved.setdefault(s, _params(m)),
    )
    cfg = gentle_config(model, "task_vector", settings)
    for k in (2, 4):
        ref = unlearn(model, "task_vector", forget, None, {**cfg, "steps": k}, seed=0).model
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(saved[k], _params(ref))), k
