"""The main job's settings: one dataclass, filled from defaults, a TOML/JSON file and the command line.

Every option of ``unpact run`` lives here with its default. A config file holds
the same keys (TOML tables ``[emphasis]``, ``[attribution]``, ``[method_config.<name>]``);
an unknown key is an error that names it. The resolved config is written to the
run directory as ``config.json``.

Example config (``study.toml``)::

    model = "path/to/checkpoint"
    benchmark = "tofu"
    benchmark_path = "data/tofu"
    forget_split = "forget10"
    retain_split = "retain90"
    methods = ["ga_gdr", "npo_gdr"]

    [emphasis]
    factors = [1, 2, 4]
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unpact.attacks import ATTACKS
from unpact.attribution.gradients import IGConfig
from unpact.attribution.keytokens import KeyTokensConfig
from unpact.checkpoints import MAX_RELATIVE_DISTANCE
from unpact.data.loaders import read_text_utf8
from unpact.emphasis.controlled import ControlledSettings
from unpact.emphasis.recovery import RecoveryConfig
from unpact.errors import ConfigError
from unpact.presence import PresenceSettings
from unpact.scoring import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_NEW_TOKENS
from unpact.trajectory import TrajectorySettings
from unpact.unlearning.registry import PAPER_METHODS
from unpact.validation import check_names, check_ranges, check_types, check_value


@dataclass
class AttributionSettings:
    """Which attributions the main job computes (loo with KeyTokens always, on every item)."""

    #: names in unpact.attribution.ATTRIBUTION_METHODS; aliases (``ig``) become canonical names at config time
    methods: list[str] = field(default_factory=lambda: ["loo", "integrated_gradients", "heads"])
    #: how many forget/retain/general items get the costlier integrated gradients and heads
    #: (ig_steps: the first pass; items are refined until completeness holds within 5% or
    #: their ig_max_passes forward+backward passes are spent; a budget below ig_steps turns
    #: refinement off)
    subset: int = 4
    ig_steps: int = IGConfig.steps
    ig_max_passes: int = IGConfig.max_passes
    #: the KeyTokens rule (alpha, beta, normalize): the one setting behind tracking, the
    #: emphasis keywords and the report's keyword marks
    keytokens: KeyTokensConfig = field(default_factory=KeyTokensConfig)


@dataclass
class EmphasisSettings:
    """Emphasis recovery: prompt templates and the activation-scaling sweep.

    Every default is :class:`unpact.emphasis.RecoveryConfig`'s (the reasons are written
    there); :meth:`recovery_config` composes the run's :class:`RecoveryConfig`.
    """

    #: prompt-rewrite templates (None: unpact.emphasis.DEFAULT_TEMPLATES)
    templates: list[str] | None = field(default_factory=lambda: list(RecoveryConfig.templates))
    #: at most this many retain and general items are the emphasis controls
    max_control_items: int = RecoveryConfig.max_control_items
    factors: list[float] = field(default_factory=lambda: list(RecoveryConfig.factors))
    layer_sets: list[str] = field(default_factory=lambda: list(RecoveryConfig.layer_sets))
    #: activation emphasis kinds (registered in unpact.emphasis.KINDS): "attention" scales the attention
    #: queries pay to keyword positions, "value" their value vectors, "residual" the residual stream
    kinds: list[str] = field(default_factory=lambda: list(RecoveryConfig.kinds))
    #: ROUGE-L recall at or above which an answer counts as right (emphasis and evaluation accuracy)
    threshold: float = RecoveryConfig.threshold
    #: a control's accuracy drop above this flags the setting as collapse
    collapse_margin: float = RecoveryConfig.collapse_margin

    def recovery_config(
        self,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        keytokens: KeyTokensConfig | None = None,
    ) -> RecoveryConfig:
        """The :class:`~unpact.emphasis.RecoveryConfig` of these settings.

        Example:
            >>> EmphasisSettings(threshold=0.5).recovery_config(max_new_tokens=8).threshold
            0.5
        """
        kwargs: dict[str, Any] = dict(
            threshold=self.threshold,
            collapse_margin=self.collapse_margin,
            factors=tuple(self.factors),
            layer_sets=tuple(self.layer_sets),
            kinds=tuple(self.kinds),
            max_control_items=self.max_control_items,
            max_new_tokens=max_new_tokens,
            max_batch_tokens=max_batch_tokens,
            keytokens=keytokens if keytokens is not None else KeyTokensConfig(),
        )
        if self.templates is not None:
            kwargs["templates"] = tuple(self.templates)
        return RecoveryConfig(**kwargs)


@dataclass
class AttackSettings:
    """Recovery attacks beyond emphasis (:mod:`unpact.attacks`), run on every method's model.

    Each attack runs on the unlearned model, the original and the retain-only
    ``reference_model`` as the negative control (the controls' runs are computed
    once per study); only recovery beyond both controls counts. Every registered attack
    runs by default with its library defaults (unpact/attacks/*.py); the four built-in ones
    cost about half a minute per method on the embedded models (docs/performance.md).
    """

    #: registered attack names (see unpact.attacks.ATTACKS; default: every registered attack, in
    #: registration order); [] turns the stage off
    names: list[str] = field(default_factory=lambda: list(ATTACKS))
    #: per-attack overrides of the attack's config, e.g. {"relearning": {"steps": [5, 10]}}
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrajectoryRunSettings:
    """Unlearning strength as a trajectory (:mod:`unpact.trajectory`), measured at every checkpoint.

    On by default: the paper's question (hidden or erased, and at what cost) needs each
    method at more than one strength. It runs each method a second time (the gentle schedule,
    up to ``max_steps_factor`` x the method's steps) and measures every checkpoint
    (evaluation, presence probes, controlled recovery on the unlearned, the original and the
    negative control): on the embedded study about as long again as the rest of the run
    (docs/performance.md). ``enabled = false`` turns it off (e.g. a large model on a short budget).

    The schedule and checkpoint keys are :class:`~unpact.trajectory.TrajectorySettings`'s, with
    its defaults and reasons; :meth:`schedule` composes it. Its answer threshold and answer length
    are the run's (``emphasis.threshold``, ``max_new_tokens``): one place per concept.
    ``templates`` and ``activations`` are :class:`~unpact.emphasis.controlled.ControlledSettings`'
    settings (``[kind, factor, layers]`` each); :meth:`controlled_settings` composes it.
    """

    #: run the trajectory stage (``{method}/trajectory``, one stage file per checkpoint step)
    enabled: bool = True
    #: controlled recovery (keyword minus placebo, against the original) at every checkpoint;
    #: without it finding 2 per checkpoint and the dilemma's part (b) have nothing to judge
    controlled: bool = True
    lr_factor: float = TrajectorySettings.lr_factor
    max_steps_factor: float = TrajectorySettings.max_steps_factor
    max_steps: int | None = TrajectorySettings.max_steps
    warmup_steps: int = TrajectorySettings.warmup_steps
    marks: list[int] = field(default_factory=lambda: list(TrajectorySettings.marks))
    targets: list[float] = field(default_factory=lambda: list(TrajectorySettings.targets))
    monitor_items: int = TrajectorySettings.monitor_items
    check_every: int = TrajectorySettings.check_every
    stop_when_done: bool = TrajectorySettings.stop_when_done
    templates: list[str] = field(default_factory=lambda: list(ControlledSettings.templates))
    activations: list[list[str | float]] = field(
        default_factory=lambda: [list(a) for a in ControlledSettings.activations]
    )

    def schedule(
        self,
        *,
        threshold: float = TrajectorySettings.threshold,
        max_new_tokens: int = TrajectorySettings.max_new_tokens,
    ) -> TrajectorySettings:
        """The :class:`~unpact.trajectory.TrajectorySettings` of these settings.

        Example:
            >>> TrajectoryRunSettings(marks=[20, 5]).schedule(threshold=0.7).marks
            (5, 20)
        """
        return TrajectorySettings(
            lr_factor=self.lr_factor,
            max_steps_factor=self.max_steps_factor,
            max_steps=self.max_steps,
            warmup_steps=self.warmup_steps,
            marks=tuple(self.marks),
            targets=tuple(self.targets),
            monitor_items=self.monitor_items,
            check_every=self.check_every,
            threshold=threshold,
            max_new_tokens=max_new_tokens,
            stop_when_done=self.stop_when_done,
        )

    def controlled_settings(self, **kwargs: Any) -> ControlledSettings:
        """The :class:`~unpact.emphasis.controlled.ControlledSettings` of these settings (``kwargs``:
        its other fields, e.g. the run's threshold and answer length).

        Example:
            >>> TrajectoryRunSettings(templates=["repeat"], activations=[]).controlled_settings().setting_list()
            [{'name': 'prompt:repeat', 'kind': 'prompt', 'template': 'repeat'}]
        """
        acts = []
        for a in self.activations:
            if len(a) != 3 or not isinstance(a[1], (int, float)) or isinstance(a[1], bool):
                raise ConfigError(
                    f"trajectory.activations entries are [kind, factor, layers], got {a!r} "
                    '(e.g. ["attention", 2.0, "all"])'
                )
            acts.append((str(a[0]), float(a[1]), str(a[2])))
        return ControlledSettings(templates=tuple(self.templates), activations=tuple(acts), **kwargs)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a schedule or a controlled-recovery setting that cannot run."""
        self.schedule()
        self.controlled_settings()


@dataclass
class AuditSettings:
    """The input checks of audited checkpoints (``checkpoints``, ``unpact audit``; :mod:`unpact.checkpoints`)."""

    #: largest relative weight distance ||U - O|| / ||O|| at which an audited checkpoint still
    #: counts as unlearned from the original (unpact.checkpoints.MAX_RELATIVE_DISTANCE, with its
    #: measured basis); None: no check (e.g. to audit a retain-only model trained from scratch)
    max_relative_distance: float | None = MAX_RELATIVE_DISTANCE


@dataclass
class RunConfig:
    """Everything ``unpact run`` needs; the defaults are the embedded study."""

    model: str = "embedded:gpt2"
    #: retain-only model for TOFU's forget quality and MUSE's privleak (None: skip both)
    reference_model: str | None = "embedded:gpt2-retain"
    benchmark: str = "embedded:tofu"
    benchmark_path: str | None = None
    forget_split: str = "forget10"
    retain_split: str = "retain90"
    #: items never trained on: a control of emphasis recovery, and the non-members of the
    #: membership-inference attacks (forget vs holdout AUC, privleak); None: neither
    holdout_split: str | None = "holdout"
    general: str | None = "embedded:general"
    general_split: str = "qa"
    general_path: str | None = None
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    #: unlearned checkpoints to audit (``unpact audit``), name -> checkpoint directory, hub id or
    #: embedded:<name>: each gets every stage after unlearning, where a method would, after the methods
    #: (no trajectory: it needs the unlearning run). Checked before any work (unpact.checkpoints).
    checkpoints: dict[str, str] = field(default_factory=dict)
    #: per-method hyperparameter overrides, e.g. {"ga_gdr": {"steps": 20}}
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: at most this many items per group (forget, retain, general) are evaluated and attributed
    max_items: int = 24
    #: length of greedy answers (evaluation, emphasis, attacks): unpact.scoring.DEFAULT_MAX_NEW_TOKENS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    #: how a question becomes a prompt: "plain" ("Question: ...\nAnswer:", the embedded models'
    #: format) or "chat" (the tokenizer's chat template, as open-unlearning formats TOFU for
    #: instruct models such as open-unlearning/tofu_Llama-3.2-1B-Instruct_full)
    prompt_format: str = "plain"
    #: system message of the "chat" format (None: none; open-unlearning's TOFU models were
    #: fine-tuned with "You are a helpful assistant.")
    system_prompt: str | None = None
    #: extra variables of the chat template (open-unlearning renders its Llama-3.2-3B TOFU
    #: examples with {date_string = "10 Apr 2025"}); "chat" format only
    chat_template_args: dict[str, Any] = field(default_factory=dict)
    #: token budget of one forward batch (rows x padded length) in every stage; passes that keep
    #: activations for a backward pass use a share of it (see unpact.stages.stage_budgets)
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    #: recompute activations in unlearning's backward pass (less memory for large models, ~1/3
    #: more compute, the same weights); a method_config entry overrides it per method
    gradient_checkpointing: bool = False
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    emphasis: EmphasisSettings = field(default_factory=EmphasisSettings)
    attacks: AttackSettings = field(default_factory=AttackSettings)
    #: knowledge-presence probes, their positive/negative controls, finding 1's nulls (unpact.presence)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    #: unlearning strength as a trajectory, measured per checkpoint (on; enabled = false turns it off)
    trajectory: TrajectoryRunSettings = field(default_factory=TrajectoryRunSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    out: str = "unpact-run"
    device: str = "cpu"
    #: precision the models are loaded, unlearned, attributed and run in: float32, bfloat16 or float16
    dtype: str = "float32"
    seed: int = 0
    #: precondition of every verdict: the original model must answer at least this share of the
    #: forget items right (ROUGE-L recall >= emphasis.threshold). Unlearning can only hide or erase
    #: what the model knew; below it "forgotten" and "recovered" measure what it never knew, so
    #: every verdict is "not applicable". Half the items: a model that misses most of them does
    #: not know the forget set.
    min_forget_accuracy: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def subjects(self) -> dict[str, str | None]:
        """The measured models by name: each method (None: unpact unlearns it), then each audited checkpoint (its spec).

        Example:
            >>> RunConfig(methods=["ga"], checkpoints={"mine": "runs/mine"}).subjects()
            {'ga': None, 'mine': 'runs/mine'}
        """
        return {**{m: None for m in self.methods}, **self.checkpoints}

    def recovery_config(self, max_batch_tokens: int | None = None) -> RecoveryConfig:
        """The run's :class:`~unpact.emphasis.RecoveryConfig`: its emphasis settings, answer length and KeyTokens."""
        return self.emphasis.recovery_config(
            max_new_tokens=self.max_new_tokens,
            keytokens=self.attribution.keytokens,
            max_batch_tokens=self.max_batch_tokens if max_batch_tokens is None else max_batch_tokens,
        )


def config_keys(cls: type = RunConfig, where: str = "") -> dict[str, Any]:
    """Every settable key of ``cls`` (nested settings dotted: ``emphasis.threshold``) -> its type hint.

    The command line's ``--set KEY=VALUE`` and the config file accept exactly these keys.

    Example:
        >>> keys = config_keys()
        >>> "attribution.keytokens.alpha" in keys and "emphasis.threshold" in keys and "attribution" not in keys
        True
    """
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(config_keys(tp, f"{where}{f.name}."))
        else:
            out[f"{where}{f.name}"] = tp
    return out


def _check_keys(cls, data: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(known))}")


def _merge(obj: Any, data: dict[str, Any], where: str = "") -> Any:
    """A copy of dataclass ``obj`` with ``data``'s keys set; nested settings merge table by table."""
    _check_keys(type(obj), data, where)
    hints = typing.get_type_hints(type(obj))
    updates: dict[str, Any] = {}
    for key, value in data.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if dataclasses.is_dataclass(value) and type(value) is type(current):  # settings given whole
                updates[key] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where + key!r} must be a table of settings, got {value!r}")
            updates[key] = _merge(current, value, f"{where}{key}.")
        else:
            if not (key == "methods" and where == "" and isinstance(value, str)):
                check_value(f"{where}{key}", value, hints.get(key, Any))
            updates[key] = value
    return dataclasses.replace(obj, **updates)


#: the settings a file or flag switches off with the string "none" (TOML has no null)
NONE_KEYS = ("reference_model", "general", "holdout_split")


def config_from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A :class:`RunConfig` from ``data`` layered over ``base`` (defaults); unknown keys and names are errors.

    Every name is checked against its registry here (see :func:`unpact.validation.check_names`):
    attribution methods resolve to their canonical names (``ig`` -> ``integrated_gradients``).

    Example:
        >>> config_from_dict({"attribution": {"methods": ["loo", "ig"]}}).attribution.methods
        ['loo', 'integrated_gradients']
        >>> config_from_dict({"attribution": {"methods": ["ig", "nonsense"]}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown attribution method 'nonsense'; known: ...
    """
    cfg = _merge(base if base is not None else RunConfig(), data)
    for key in NONE_KEYS:  # "none" switches these off in a file as it does on the command line
        if isinstance(getattr(cfg, key), str) and getattr(cfg, key).lower() == "none":
            setattr(cfg, key, None)
    if isinstance(cfg.methods, str):
        cfg.methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    if not cfg.methods and not cfg.checkpoints:
        raise ConfigError(
            "no unlearning methods given; name at least one (e.g. methods = ['ga_gdr']), "
            "or checkpoints to audit (checkpoints = {name = 'path'}, `unpact audit`)"
        )

    check_types(cfg)  # driven by the dataclasses' type hints, so every option is checked
    check_ranges(cfg)
    check_names(cfg)
    return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = read_text_utf8(p, "config file", ConfigError)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    elif p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    else:
        raise ConfigError(f"config file {str(p)!r}: use a .toml or .json file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a table of settings")
    return data
