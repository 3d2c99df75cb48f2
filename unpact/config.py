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
from unpact.presence import PresenceSettings

PAPER_METHODS = ["ga_gdr", "ga_klr", "npo_gdr", "npo_klr", "task_vector", "rmu"]


@dataclass
class AttributionSettings:
    """Which attributions the main job computes (loo with KeyTokens always, on every item)."""

    methods: list[str] = field(default_factory=lambda: ["loo", "integrated_gradients", "heads"])
    #: how many forget/retain/general items get the costlier integrated gradients and heads
    #: (ig_steps: the first pass; items are refined until completeness holds within 5%)
    subset: int = 4
    ig_steps: int = 64
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
    #: activations for a backward pass use a share of it (see unpact.pipeline.stage_budgets)
    max_batch_tokens: int = 16384
    #: recompute activations in unlearning's backward pass (less memory for large models, ~1/3
    #: more compute, the same weights); a method_config entry overrides it per method
    gradient_checkpointing: bool = False
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    emphasis: EmphasisSettings = field(default_factory=EmphasisSettings)
    attacks: AttackSettings = field(default_factory=AttackSettings)
    #: knowledge-presence probes, their positive/negative controls, finding 1's nulls (unpact.presence)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
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


_NESTED = {"attribution": AttributionSettings, "emphasis": EmphasisSettings, "attacks": AttackSettings,
           "presence": PresenceSettings}


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
    from unpact.validation import check_ranges, check_types

    check_types(cfg)  # driven by the dataclasses' type hints, so every option is checked
    check_ranges(cfg)
    from unpact.models import DTYPE_CHOICES

    if cfg.dtype not in DTYPE_CHOICES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; use {', '.join(DTYPE_CHOICES)}")
    from unpact.data.formatting import FORMAT_NAMES

    if cfg.prompt_format not in FORMAT_NAMES:
        raise ConfigError(f"unknown prompt_format {cfg.prompt_format!r}; use {' or '.join(FORMAT_NAMES)}")
    if cfg.system_prompt and cfg.prompt_format != "chat":
        raise ConfigError("system_prompt needs prompt_format = 'chat' (the plain format has no system message)")
    if cfg.max_batch_tokens < 64:
        raise ConfigError(f"max_batch_tokens must be at least 64, got {cfg.max_batch_tokens}")
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
    cfg.presence.validate()
    return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    from unpact.data.loaders import read_text_utf8

    text = read_text_utf8(p, "config file", ConfigError)
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
