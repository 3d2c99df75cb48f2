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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unpact.errors import ConfigError

PAPER_METHODS = ["ga_gdr", "ga_klr", "npo_gdr", "npo_klr", "task_vector", "rmu"]


@dataclass
class AttributionSettings:
    """Which attributions the main job computes (loo with KeyTokens always, on every item)."""

    methods: list[str] = field(default_factory=lambda: ["loo", "integrated_gradients", "heads"])
    #: how many forget/retain/general items get the costlier integrated gradients and heads
    subset: int = 4
    ig_steps: int = 32
    keytokens_alpha: float | None = None  # None: the library default
    keytokens_beta: int | None = None


@dataclass
class EmphasisSettings:
    """Emphasis recovery: prompt templates and the activation-scaling sweep."""

    #: prompt-rewrite templates (None: unpact.emphasis.DEFAULT_TEMPLATES); the default is the five
    #: single rewrites of the paper's kind plus one combination, to fit the 10-minute budget
    templates: list[str] | None = field(
        default_factory=lambda: ["repeat", "quote", "upper", "focus", "keywords_first", "repeat+focus"])
    #: at most this many retain and general items are the emphasis controls
    max_control_items: int = 16
    factors: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    layer_sets: list[str] = field(default_factory=lambda: ["all", "early", "middle", "late"])
    #: activation emphasis kinds (see unpact.emphasis.KINDS): "attention" scales the attention
    #: queries pay to keyword positions, "value" their value vectors, "residual" the residual stream
    kinds: list[str] = field(default_factory=lambda: ["attention"])
    #: ROUGE-L recall at or above which an answer counts as right. The embedded TOFU answers
    #: are sentences that repeat the question's subject ("X was born in Lima."), so a wrong
    #: value still scores ~0.8: 0.9 separates right from wrong there. The library's own
    #: default (unpact.emphasis.RecoveryConfig) is 0.5, as the paper's TOFU setting.
    threshold: float = 0.9
    collapse_margin: float = 0.1


@dataclass
class AttackSettings:
    """Recovery attacks beyond emphasis (:mod:`unpact.attacks`), run on every method's model.

    Each attack runs on the unlearned model, the original and the retain-only
    ``reference_model`` as the negative control (the controls' runs are computed
    once per study); only recovery beyond both controls counts. All four registered
    attacks run by default with their library defaults (unpact/attacks/*.py), which
    cost about half a minute per method on the embedded models (docs/performance.md).
    """

    #: registered attack names (see unpact.attacks.ATTACKS); [] turns the stage off
    names: list[str] = field(default_factory=lambda: ["quantization", "paraphrase", "in_context", "relearning"])
    #: per-attack overrides of the attack's config, e.g. {"relearning": {"steps": [5, 10]}}
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything ``unpact run`` needs; the defaults are the embedded study."""

    model: str = "embedded:gpt2"
    #: retain-only model for TOFU's forget quality (None: skip forget quality)
    reference_model: str | None = "embedded:gpt2-retain"
    benchmark: str = "embedded:tofu"
    benchmark_path: str | None = None
    forget_split: str = "forget10"
    retain_split: str = "retain90"
    holdout_split: str | None = "holdout"
    general: str | None = "embedded:general"
    general_split: str = "qa"
    general_path: str | None = None
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    #: per-method hyperparameter overrides, e.g. {"ga_gdr": {"steps": 20}}
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: at most this many items per group (forget, retain, general) are evaluated and attributed
    max_items: int = 24
    #: length of greedy answers (evaluation and emphasis); the embedded answers are <= 12 tokens
    max_new_tokens: int = 20
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    emphasis: EmphasisSettings = field(default_factory=EmphasisSettings)
    attacks: AttackSettings = field(default_factory=AttackSettings)
    out: str = "unpact-run"
    device: str = "cpu"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NESTED = {"attribution": AttributionSettings, "emphasis": EmphasisSettings, "attacks": AttackSettings}


def _check_keys(cls, data: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(known))}"
            )


def config_from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A :class:`RunConfig` from ``data`` layered over ``base`` (defaults); unknown keys are errors."""
    cfg = dataclasses.replace(base) if base is not None else RunConfig()
    _check_keys(RunConfig, data, "")
    updates: dict[str, Any] = {}
    for key, value in data.items():
        if key in _NESTED:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} must be a table of settings, got {value!r}")
            _check_keys(_NESTED[key], value, f"{key}.")
            updates[key] = dataclasses.replace(getattr(cfg, key), **value)
        else:
            updates[key] = value
    cfg = dataclasses.replace(cfg, **updates)
    if isinstance(cfg.methods, str):
        cfg.methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    if not cfg.methods:
        raise ConfigError("no unlearning methods given; name at least one (e.g. methods = ['ga_gdr'])")
    if cfg.max_items < 1:
        raise ConfigError(f"max_items must be at least 1, got {cfg.max_items}")
    from unpact.emphasis.activation import KINDS

    for k in cfg.emphasis.kinds:
        if k not in KINDS:
            raise ConfigError(f"unknown emphasis kind {k!r}; use {', '.join(KINDS[:-1])} or {KINDS[-1]}")
    from unpact.attacks import make_attack

    for name in cfg.attacks.options:
        if name not in cfg.attacks.names:
            raise ConfigError(f"attacks.options names {name!r}, which is not among the attacks {cfg.attacks.names}")
    for name in cfg.attacks.names:
        make_attack(name, cfg.attacks.options.get(name))  # unknown names and options fail here, before any work
    return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    elif p.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    else:
        raise ConfigError(f"config file {str(p)!r}: use a .toml or .json file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a table of settings")
    return data
