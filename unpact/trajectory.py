"""Unlearning strength as a trajectory: one gentle run per method, checkpoints along the way.

The paper's question (is the forgotten knowledge hidden or erased, and at what
cost in utility?) has a different answer at each strength of unlearning, and
today's defaults sit in one corner (the forget set gone within a few steps).
:func:`run_trajectory` runs a method **once** on a gentle schedule (a linear
warm-up, then a learning rate :attr:`TrajectorySettings.lr_factor` times the
method's own default) and hands the model to a callback at

* fixed **step marks** (``"step_10"``, ...), and
* the first checked step at which the forget accuracy on a small **monitor
  subset** falls below each **target** (``"forget_below_0.5"``, ...), and
* the last step trained (``"final"``).

Every downstream measurement (probes, attribution, recovery, utility) is then
made per checkpoint by the caller, so each method becomes a curve and methods
compare at matched forgetting or matched utility. Saving a checkpoint is the
caller's business (the pipeline's stage files): the callback gets the live model.

Steps count optimizer updates: ``step`` = k means the weights after k updates
(step 0 = before any update). Forget accuracy = share of the monitor items whose
greedy answer reaches ROUGE-L recall >= ``threshold`` (:func:`unpact.metrics.answer_accuracy`).
Task vector is a fine-tune followed by a negation; its checkpoints (and the
monitor) see the negation of the fine-tune so far, ``θ − alpha (θ_k − θ)``.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> seen = []
    >>> res = run_trajectory(model, "npo_gdr", forget, retain,
    ...                      on_checkpoint=lambda name, step, m, acc: seen.append((name, step, acc)))  # doctest: +SKIP
    >>> res.targets                       # target -> first checked step below it (None: never)  # doctest: +SKIP
    {0.75: 6, 0.5: 8, 0.25: 12, 0.1: None}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from unpact.data import spread_sample
from unpact.errors import ConfigError, InputError
from unpact.metrics import answer_accuracy, greedy_answers, rouge_l_recall
from unpact.progress import ProgressFactory, null_progress
from unpact.unlearning import get_method, make_method, unlearn
from unpact.unlearning.base import make_config, resolve_preset

#: on_checkpoint(name, step, model, monitor_forget_accuracy)
CheckpointFn = Callable[[str, int, Any, float], None]


@dataclass
class TrajectorySettings:
    """The gentle schedule, where to take checkpoints, and how forgetting is monitored.

    Attributes:
        lr_factor: each method's learning rate is its resolved default (``"embedded"`` or
            ``"reference"`` preset) times this. 0.25, because at today's embedded defaults
            ``npo_gdr`` on llama forgets all 24 items by step 5 (issue 11): a quarter of the
            rate spreads that over about 20 steps, so the targets fall at separate checkpoints.
            One factor for every method (not a value per method tuned to an outcome).
        max_steps_factor: the run is at most this many times the method's default ``steps``
            long. 4 = 1 / ``lr_factor``: the trajectory reaches the same total learning rate
            (lr x steps) as today's default run, so it spans from mild to at least today's strength.
        max_steps: an explicit length that replaces ``max_steps_factor`` (None: use the factor).
        warmup_steps: linear warm-up (:attr:`unpact.unlearning.UnlearnConfig.warmup_steps`). 5:
            AdamW's first updates move each weight by about lr whatever the gradient, and the
            embedded models did not train at all without a warm-up (../shared/design.md);
            5 steps is short next to a trajectory of 80-120 steps.
        marks: steps (number of updates) at which a checkpoint is always taken. 10, 20, 40:
            a geometric ladder that gives every method a few points even when its forget
            accuracy never reaches a target (RMU and task vector can stall).
        targets: forget accuracies; a checkpoint is taken at the first checked step whose
            monitored forget accuracy is strictly below each. (0.75, 0.5, 0.25, 0.1): four
            levels, evenly placed over the range that separates "mostly known" from "gone",
            at which methods are compared at matched forgetting.
        monitor_items: size of the forget subset monitored (evenly spaced over the forget
            set, :func:`unpact.data.spread_sample`). 16: a resolution of 1/16 = 0.0625, finer
            than the smallest gap between targets (0.1), so each target can be crossed on
            its own; the checkpoint's full evaluation is the caller's.
        check_every: the monitor runs after every this many steps (and at step 0, at each mark
            and at the end). 2: halves the monitor's cost; a target crossing is then known to
            within 2 steps.
        threshold: ROUGE-L recall at which a monitored answer counts as right. 0.9, the
            study's threshold (``EmphasisSettings.threshold``): embedded answers are sentences
            whose wrong variants still score about 0.8.
        max_new_tokens: greedy answer length of the monitor.
        stop_when_done: stop training once every target is reached and the last mark passed
            (a checkpoint past them would not be used); the ``"final"`` checkpoint is then there.
    """

    lr_factor: float = 0.25
    max_steps_factor: float = 4.0
    max_steps: int | None = None
    warmup_steps: int = 5
    marks: tuple[int, ...] = (10, 20, 40)
    targets: tuple[float, ...] = (0.75, 0.5, 0.25, 0.1)
    monitor_items: int = 16
    check_every: int = 2
    threshold: float = 0.9
    max_new_tokens: int = 32
    stop_when_done: bool = True

    def __post_init__(self) -> None:
        self.marks = tuple(sorted({int(m) for m in self.marks}))
        self.targets = tuple(sorted({float(t) for t in self.targets}, reverse=True))
        if not (self.lr_factor > 0 and math.isfinite(self.lr_factor)):
            raise ConfigError(f"trajectory lr_factor must be a positive number, got {self.lr_factor}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"trajectory max_steps must be >= 1 or None, got {self.max_steps}")
        if not self.max_steps_factor > 0:
            raise ConfigError(f"trajectory max_steps_factor must be > 0, got {self.max_steps_factor}")
        if self.warmup_steps < 0:
            raise ConfigError(f"trajectory warmup_steps must be >= 0, got {self.warmup_steps}")
        if any(m < 1 for m in self.marks):
            raise ConfigError(f"trajectory marks are numbers of updates (>= 1), got {list(self.marks)}")
        if any(not 0 < t <= 1 for t in self.targets):
            raise ConfigError(f"trajectory targets are forget accuracies in (0, 1], got {list(self.targets)}")
        if self.monitor_items < 1 or self.check_every < 1:
            raise ConfigError("trajectory monitor_items and check_every must be >= 1")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"trajectory threshold must be in (0, 1], got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["marks"], d["targets"] = list(self.marks), list(self.targets)
        return d


def target_name(target: float) -> str:
    """The checkpoint name of a forget-accuracy target.

    Example:
        >>> target_name(0.5), mark_name(10)
        ('forget_below_0.5', 'step_10')
    """
    return f"forget_below_{target:g}"


def mark_name(step: int) -> str:
    return f"step_{int(step)}"


@dataclass
class Checkpoint:
    """One checkpoint taken: its name, step (updates done) and the monitored forget accuracy then."""

    name: str
    step: int
    monitor_forget_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrajectoryResult:
    """What :func:`run_trajectory` returns (no model: the callback saw them).

    Attributes:
        method: the registry name.
        config: the method's config as run (learning rate already scaled, ``steps`` = the cap).
        settings: the :class:`TrajectorySettings` as used.
        checkpoints: every callback made, in order (step order; names at one step in the
            order marks, targets, final).
        targets: target -> the step it was first seen below (None: never reached).
        monitor: ``[{"step", "forget_accuracy"}]`` at every check (step 0 included).
        losses: the training loop's per-step losses.
        steps_run: updates done; ``stopped_early``/``message``: a NaN/inf loss stopped it.
    """

    method: str
    config: dict[str, Any]
    settings: dict[str, Any]
    checkpoints: list[Checkpoint]
    targets: dict[float, int | None]
    monitor: list[dict[str, Any]]
    losses: list[dict[str, float]]
    steps_run: int
    stopped_early: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "settings": self.settings,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "targets": [{"target": t, "step": s, "reached": s is not None} for t, s in self.targets.items()],
            "monitor": self.monitor,
            "losses": self.losses,
            "steps_run": self.steps_run,
            "stopped_early": self.stopped_early,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrajectoryResult:
        return cls(
            d["method"],
            dict(d["config"]),
            dict(d["settings"]),
            [Checkpoint(**c) for c in d["checkpoints"]],
            {float(t["target"]): t["step"] for t in d["targets"]},
            list(d["monitor"]),
            list(d["losses"]),
            int(d["steps_run"]),
            bool(d.get("stopped_early", False)),
            str(d.get("message", "")),
        )


def gentle_config(
    model, method: str, settings: TrajectorySettings | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The method's config for the trajectory, as a dict of options for :func:`unpact.unlearning.unlearn`.

    The method's defaults are resolved for ``model`` (its preset) with ``overrides`` applied;
    then ``lr`` is multiplied by ``settings.lr_factor``, ``steps`` becomes the cap
    (``max_steps``, or ``max_steps_factor`` x the default steps) and ``warmup_steps`` is set.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> cfg = gentle_config(model, "npo_gdr")                  # doctest: +SKIP
        >>> cfg["lr"], cfg["steps"], cfg["warmup_steps"]           # doctest: +SKIP
        (0.00025, 120, 5)
    """
    s = settings or TrajectorySettings()
    cls = get_method(method)
    cfg = resolve_preset(make_config(cls.config_class, dict(overrides or {})), model)
    out = cfg.to_dict()
    out["lr"] = cfg.lr * s.lr_factor
    out["steps"] = int(s.max_steps) if s.max_steps is not None else max(1, int(round(cfg.steps * s.max_steps_factor)))
    out["warmup_steps"] = s.warmup_steps
    return out


def run_trajectory(
    original,
    method: str,
    forget: Sequence,
    retain: Sequence | None = None,
    *,
    on_checkpoint: CheckpointFn,
    settings: TrajectorySettings | None = None,
    config: Mapping[str, Any] | None = None,
    monitor: Sequence | None = None,
    seed: int = 0,
    fmt=None,
    progress: ProgressFactory = null_progress,
) -> TrajectoryResult:
    """Run ``method`` once on the gentle schedule, calling ``on_checkpoint`` along the way.

    Args:
        original: the model before unlearning (left untouched; the run edits a copy).
        method: a registry name (:data:`unpact.unlearning.METHODS`).
        forget, retain: the items, as for :func:`unpact.unlearning.unlearn`.
        on_checkpoint: called as ``on_checkpoint(name, step, model, monitor_forget_accuracy)``
            at each mark, at each target's first crossing and at the end (``"final"``), in
            step order. ``model`` is the method's ``checkpoint_model`` of the live training model
            (the live model itself; for task vector, a negated copy):
            save or copy it inside the callback, never change it. A step that is both a mark
            and a target crossing gets one call per name with the same model.
        settings: :class:`TrajectorySettings` (schedule, marks, targets, monitor).
        config: overrides of the method's options (before the schedule is applied).
        monitor: the items whose forget accuracy is monitored (default: ``settings.monitor_items``
            forget items, evenly spaced; must be question-answer items).
        seed: the run's seed (:func:`unpact.unlearning.unlearn`): the same seed gives the same
            weights at every step as a run stopped at that step.

    Returns:
        :class:`TrajectoryResult`: checkpoints taken, the step each target was first seen
        below (None: never reached), the monitor's trace and the losses.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> res = run_trajectory(original, "ga_gdr", forget, retain,
        ...                      on_checkpoint=lambda n, s, m, a: save_model(m, f"ckpt/{s}"))   # doctest: +SKIP
    """
    s = settings or TrajectorySettings()
    if not callable(on_checkpoint):
        raise InputError("run_trajectory needs on_checkpoint=callable(name, step, model, accuracy)")
    if config and "on_step" in config:
        raise ConfigError("run_trajectory sets on_step itself; take checkpoints with on_checkpoint")
    cfg = gentle_config(original, method, s, config)
    mon = list(monitor) if monitor is not None else spread_sample(list(forget), s.monitor_items)
    if not mon or not all(hasattr(it, "answer") and hasattr(it, "question") for it in mon):
        raise InputError(
            "the trajectory monitors forget accuracy on question-answer items; the monitor set "
            "is empty or holds other items (pass monitor=[QAItem, ...])"
        )
    impl = make_method(method, {k: v for k, v in cfg.items() if k != "on_step"})
    tracker = _Tracker(original, impl, s, mon, fmt, on_checkpoint, total=cfg["steps"])
    tracker.start()

    def on_step(i: int, model) -> bool:  # a function, not the bound method: the config is deep-copied
        return tracker.on_step(i, model)

    res = unlearn(original, method, forget, retain, {**cfg, "on_step": on_step}, seed=seed, fmt=fmt, progress=progress)
    # the weights the run ends with: after every logged update, or (a NaN/inf loss stopped it)
    # restored to before the last logged one
    steps_run = len(res.losses) - (1 if res.stopped_early and res.losses else 0)
    if steps_run:
        tracker.final(steps_run, res.model, res.stopped_early)
    cfg_out = {k: v for k, v in res.config.to_dict().items()}
    return TrajectoryResult(
        method,
        cfg_out,
        s.to_dict(),
        tracker.checkpoints,
        tracker.reached,
        tracker.trace,
        res.losses,
        steps_run,
        res.stopped_early,
        res.message,
    )


class _Tracker:
    """What :func:`run_trajectory` follows along one run: the monitored forget accuracy, the step
    each target is first crossed, and the checkpoints it hands to ``on_checkpoint``."""

    def __init__(
        self, original, impl, settings: TrajectorySettings, monitor: list, fmt, on_checkpoint: CheckpointFn, total: int
    ) -> None:
        self.original, self.impl, self.settings, self.monitor, self.fmt = original, impl, settings, monitor, fmt
        self.on_checkpoint, self.total = on_checkpoint, total
        self.checkpoints: list[Checkpoint] = []
        self.reached: dict[float, int | None] = {t: None for t in settings.targets}
        self.trace: list[dict[str, Any]] = []

    def accuracy(self, model) -> float:
        s = self.settings
        answers = greedy_answers(model, self.monitor, max_new_tokens=s.max_new_tokens, fmt=self.fmt)
        return float(
            answer_accuracy([rouge_l_recall(a, it.answer) for a, it in zip(answers, self.monitor)], s.threshold)
        )

    def emit(self, names: list[str], step: int, shown, acc: float | None) -> None:
        for name in names:
            self.checkpoints.append(Checkpoint(name, step, acc))
            self.on_checkpoint(name, step, shown, acc)

    def crossed(self, step: int, acc: float) -> list[str]:
        out = []
        for t in self.settings.targets:
            if self.reached[t] is None and acc < t:
                self.reached[t] = step
                out.append(target_name(t))
        return out

    def start(self) -> None:
        """The original's accuracy; a target it already meets is crossed at step 0 (the original)."""
        acc0 = self.accuracy(self.original)
        self.trace.append({"step": 0, "forget_accuracy": acc0})
        self.emit(self.crossed(0, acc0), 0, self.original, acc0)

    def on_step(self, i: int, model) -> bool:
        """unlearn's ``on_step``: measure, take the checkpoints due, and say whether to stop."""
        s, step = self.settings, i + 1
        shown = None  # the checkpoint's model (the method's checkpoint_model of the live one)
        acc = None
        if step % s.check_every == 0 or step == self.total or step in s.marks:
            shown = self.impl.checkpoint_model(model, self.original)
            acc = self.accuracy(shown)
            self.trace.append({"step": step, "forget_accuracy": acc})
        names = [mark_name(step)] if step in s.marks else []
        if acc is not None:
            names += self.crossed(step, acc)
        if names:
            self.emit(names, step, shown, acc)
        done = all(v is not None for v in self.reached.values()) and step >= (s.marks[-1] if s.marks else 0)
        return bool(s.stop_when_done and done and step < self.total)

    def final(self, steps_run: int, model, stopped_early: bool) -> None:
        """The checkpoint of the weights the run ends with."""
        if self.trace[-1]["step"] == steps_run and not stopped_early:
            acc = self.trace[-1]["forget_accuracy"]
        else:
            acc = self.accuracy(model)  # task vector: unlearn's own finish has negated it
            self.trace.append({"step": steps_run, "forget_accuracy": acc})
        self.checkpoints.append(Checkpoint("final", steps_run, acc))
        self.on_checkpoint("final", steps_run, model, acc)


__all__ = [
    "Checkpoint",
    "CheckpointFn",
    "TrajectoryResult",
    "TrajectorySettings",
    "gentle_config",
    "mark_name",
    "run_trajectory",
    "target_name",
]
