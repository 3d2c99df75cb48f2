"""Checks of every option and file before any work starts (and before a run directory exists).

One place for the checks the command line and :func:`unpact.pipeline.run_study`
make up front, so a bad option never costs an unlearning run and never leaves a
half-made run directory behind:

* :func:`check_types` - every field of a config dataclass against its type hint
  (driven by the dataclass, so options added later are checked too);
* :func:`check_ranges` - the numeric ranges in :data:`RANGES` (plus the generic rule
  that an integer option named ``max_*`` or ``*_steps`` is at least 1);
* :func:`check_names` - every name against its registry: unlearning methods and their
  hyperparameters, attribution methods (:func:`resolve_attribution_methods`: ``ig`` is
  integrated gradients, ``bogus`` is an error), emphasis templates, kinds and layer sets,
  attacks and their options, the dtype and the prompt format;
* :func:`check_inputs` - the device, the output path, the models (and a chat template), the
  safetensors headers of local checkpoints (a truncated file fails here, not mid-run);
* :func:`check_checkpoints` - audited checkpoints against the original (tokenizer,
  architecture, NaN/inf weights, descent; :mod:`unpact.checkpoints`);
* :func:`check_device` - the device exists on this machine (``cuda`` without a GPU is an error;
  :mod:`unpact.models`'s, the check the loader makes);
* :func:`check_output_dir` - the output path is a directory or can be made one;
* :func:`check_model_available` - a local checkpoint is complete, a hub id is in the
  local cache or the hub answers (quickly, with no retries).

Every failure is a :class:`~unpact.errors.ConfigError` (exit status 2 on the command line).

Example:
    >>> check_device("cpu")
    >>> resolve_attribution_methods(["loo", "ig"])
    ['loo', 'integrated_gradients']
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unpact.attacks import ATTACKS, make_attack
from unpact.attribution import ATTRIBUTION_METHODS
from unpact.checkpoints import RESERVED_NAMES, check_audit_inputs, read_header
from unpact.data import resolve_format
from unpact.data.formatting import format_names
from unpact.emphasis.activation import LAYER_SETS, get_kind
from unpact.errors import ConfigError, ModelLoadError, UnpactError
from unpact.models import (
    DTYPE_CHOICES,
    check_checkpoint_dir,
    check_device,
    check_hub_model,
    load_tokenizer,
    resolve_model_spec,
)
from unpact.registry import Registry
from unpact.unlearning import METHODS, get_method, make_config

#: (lowest, highest) allowed for numeric options, by dotted config name (None: unbounded).
#: Options not listed get only their type checked (and the generic ``max_*``/``*_steps`` >= 1 rule).
RANGES: dict[str, tuple[float | None, float | None]] = {
    "max_items": (1, None),
    "max_new_tokens": (1, None),
    "seed": (0, None),
    "min_forget_accuracy": (0.0, 1.0),
    "attribution.subset": (0, None),
    "attribution.ig_steps": (1, None),
    "max_batch_tokens": (64, None),
    "attribution.keytokens.alpha": (0.0, None),
    "attribution.keytokens.beta": (0, None),
    "emphasis.max_control_items": (1, None),
    "emphasis.threshold": (0.0, 1.0),
    "emphasis.collapse_margin": (0.0, 1.0),
    "trajectory.warmup_steps": (0, None),  # 0: no warm-up (the generic *_steps rule would ask for 1)
}


# ------------------------------------------------------------------- types


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or none" if type(None) in args else "")
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        args = typing.get_args(tp)
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a hint this checker does not know: leave it to the code that uses it


def check_value(name: str, value: Any, tp: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` matches type hint ``tp`` (and is finite), naming key ``name``.

    Example:
        >>> check_value("emphasis.factors", [1, 2.5], list[float])
        >>> check_value("seed", 1.5, int)
        Traceback (most recent call last):
        unpact.errors.ConfigError: config key 'seed' must be an integer, got 1.5 (a number)
    """
    if not _matches(value, tp):
        raise ConfigError(f"config key {name!r} must be {_type_name(tp)}, got {value!r} ({_type_name(type(value))})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {name!r} must be a finite number, got {value!r}")


def check_types(obj: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` for a field of dataclass ``obj`` (recursively) whose value
    does not match its type hint, naming the key, the expected type and the value.

    Example:
        >>> from unpact.config import RunConfig
        >>> check_types(RunConfig(max_items="four"))
        Traceback (most recent call last):
        unpact.errors.ConfigError: config key 'max_items' must be an integer, got 'four' (a string)
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{where}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_types(value, f"{name}.")
            continue
        check_value(name, value, hints.get(f.name, Any))


def check_ranges(obj: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` for a numeric field of ``obj`` outside :data:`RANGES`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{where}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{name}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        lo, hi = RANGES.get(name, (None, None))
        if name not in RANGES and isinstance(value, int) and (f.name.startswith("max_") or f.name.endswith("_steps")):
            lo = 1
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise ConfigError(f"config key {name!r} must be {span}, got {value!r}")


# ---------------------------------------------------------------- registries


def canonical_names(registry: Registry, names: Sequence[str]) -> list[str]:
    """``names`` as the names ``registry`` registered them under (aliases and spellings such as
    ``ig`` or ``NPO-GDR`` resolve), in order, once each; an unknown name raises the registry's
    error listing the known ones."""
    out: list[str] = []
    for n in names:
        key = registry.resolve(n)
        if key not in out:
            out.append(key)
    return out


def resolve_attribution_methods(names: Sequence[str]) -> list[str]:
    """Canonical names of attribution methods through the registry (aliases resolve: ``ig``)."""
    return canonical_names(ATTRIBUTION_METHODS, names)


def check_names(cfg: Any) -> None:
    """Raise :class:`ConfigError` for a name of run config ``cfg`` that its registry does not know.

    Attribution method names are replaced in ``cfg`` by their canonical names (``ig`` ->
    ``integrated_gradients``), so a registered alias never silently turns a method off.
    """
    cfg.methods = canonical_names(METHODS, cfg.methods)
    for name, spec in cfg.checkpoints.items():
        if name in cfg.methods or name in RESERVED_NAMES or not name or "/" in name or name.startswith("."):
            why = (
                "is also a method of the run"
                if name in cfg.methods
                else "is a name the study uses for its own stages"
                if name in RESERVED_NAMES
                else "is not a plain name (no '/', no leading '.')"
            )
            raise ConfigError(f"checkpoints names {name!r} ({spec!r}), which {why}; give it another name")
    cfg.method_config = {METHODS.resolve(m) if m in METHODS else m: v for m, v in cfg.method_config.items()}
    for m in cfg.method_config:
        if m not in cfg.methods:
            raise ConfigError(f"method_config names {m!r}, which is not among the methods {cfg.methods}")
        make_config(get_method(m).config_class, cfg.method_config[m])  # unknown or bad hyperparameters
    cfg.attribution = dataclasses.replace(cfg.attribution, methods=resolve_attribution_methods(cfg.attribution.methods))
    if cfg.dtype not in DTYPE_CHOICES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; use {', '.join(DTYPE_CHOICES)}")
    if cfg.prompt_format not in format_names():
        raise ConfigError(f"unknown prompt_format {cfg.prompt_format!r}; use {' or '.join(format_names())}")
    if cfg.system_prompt and cfg.prompt_format != "chat":
        raise ConfigError("system_prompt needs prompt_format = 'chat' (the plain format has no system message)")
    for k in cfg.emphasis.kinds:
        get_kind(k)  # unknown kinds name the registered ones (unpact.emphasis.KINDS)
    cfg.recovery_config().settings()  # templates, factors, threshold, margin
    for name in cfg.emphasis.layer_sets:
        if name not in LAYER_SETS and not all(x.strip().isdigit() for x in str(name).split(",")):
            raise ConfigError(f"unknown layer set {name!r}; use one of {', '.join(LAYER_SETS)} or indices like '0,2'")
    options = {ATTACKS.resolve(k) if k in ATTACKS else k: v for k, v in cfg.attacks.options.items()}
    cfg.attacks = dataclasses.replace(cfg.attacks, names=canonical_names(ATTACKS, cfg.attacks.names), options=options)
    for name in cfg.attacks.options:
        if name not in cfg.attacks.names:
            raise ConfigError(f"attacks.options names {name!r}, which is not among the attacks {cfg.attacks.names}")
    for name in cfg.attacks.names:
        make_attack(name, cfg.attacks.options.get(name))  # unknown names and options fail here, before any work
    cfg.presence.validate()  # probe names, the format probe's source, counts
    cfg.trajectory.validate()  # the schedule, marks, targets, controlled-recovery templates and activations


def check_inputs(cfg: Any) -> None:
    """Raise :class:`ConfigError` unless run config ``cfg``'s device exists, its output path can be
    a directory and its models can be loaded (a checkpoint used with the chat format has a chat template)."""
    check_device(cfg.device)
    check_output_dir(cfg.out)
    for spec in (cfg.model, cfg.reference_model, *cfg.checkpoints.values()):
        if spec is None:
            continue
        check_model_available(spec)
        kind, target = resolve_model_spec(spec)
        if kind == "path":
            for f in sorted(Path(target).glob("*.safetensors")):
                read_header(f)  # a truncated or corrupt file: here, not after an hour of work
        if kind == "path" and cfg.prompt_format == "chat" and spec == cfg.model:  # no chat template: say so now
            resolve_format("chat", load_tokenizer(Path(target)), cfg.system_prompt, cfg.chat_template_args)


def check_checkpoints(cfg: Any) -> dict[str, dict[str, Any]]:
    """Every audited checkpoint of run config ``cfg`` against its original (``cfg.model``) and the
    negative control (``cfg.reference_model``): :func:`unpact.checkpoints.check_audit_inputs`.
    Returns each checkpoint's lineage (relative weight distance, identical weights, warnings);
    {} when the run audits none."""
    if not cfg.checkpoints:
        return {}
    try:
        return check_audit_inputs(
            cfg.model, dict(cfg.checkpoints), cfg.reference_model, cfg.audit.max_relative_distance
        )
    except UnpactError as exc:
        raise ConfigError(str(exc)) from None


# -------------------------------------------------------------- the machine


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> None:
    """Raise :class:`ConfigError` when ``path`` is an existing file or cannot be created as a directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is an existing file, not a directory; give a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {str(p)!r}: {str(parent)!r} is a file, so the directory cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(p)!r}: no permission to write in {str(parent)!r}")


def check_model_available(spec: str, timeout: float = 10.0) -> None:
    """Raise :class:`ConfigError` (fast) when model ``spec`` cannot be loaded.

    A local or embedded checkpoint must be complete; a GGUF file or a packaged model's
    short name must exist (its package installed); a hub id must be in the local
    Hugging Face cache, or (when the hub is not switched off with ``HF_HUB_OFFLINE``)
    the hub must answer within ``timeout`` seconds - one request, no retries.
    """
    try:
        kind, target = resolve_model_spec(spec)
        if kind == "path":
            check_checkpoint_dir(Path(target))
        elif kind == "hub":
            check_hub_model(spec, target, timeout)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
