"""Load any causal LM as a TransformerLens 4 :class:`TransformerBridge`, and save it back.

``load_model`` accepts three kinds of spec:

* a local HF checkpoint directory (``config.json``, weights, tokenizer files),
  loaded offline: no hub call is made;
* ``embedded:<name>``: a checkpoint shipped inside the package
  (see :func:`embedded_model_names`);
* anything else is treated as a hub id and goes through the normal
  ``TransformerBridge.boot_transformers`` path (this needs a network).

:func:`check_device` (the device exists on this machine) and :func:`check_checkpoint_dir`
(the directory is a complete checkpoint) are the checks the loader makes;
:mod:`unpact.validation` makes them before a run too.

``save_model`` writes a plain HF checkpoint directory (safetensors,
``config.json``, tokenizer files) from the bridge's *current* weights, so an
unlearned model can be read by any other tool.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> import unpact
    >>> model = unpact.load_model("embedded:gpt2")          # doctest: +SKIP
    >>> logits, cache = model.run_with_cache("Question: Where was Ana Lind born?")  # doctest: +SKIP
    >>> unpact.save_model(model, "out/gpt2-copy")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from unpact.bridge import (  # noqa: F401 (re-exported: callers import the HF twin from here)
    hf_config_copy,
    hf_model_of,
    hf_state_dict,
    plain_hf_model,
    rebuilt_hf_model,
    sync_fused_weights,
)

# where the embedded checkpoints live inside the installed package (one place for the folder)
from unpact.errors import ConfigError, ModelLoadError
from unpact.generation import prepare_generation
from unpact.gguf_checkpoint import load_gguf
from unpact.model_specs import (  # noqa: F401 (re-exported: the model spec helpers were always here)
    EMBEDDED_MODELS_DIR,
    EMBEDDED_PREFIX,
    GGUF_SUFFIX,
    check_checkpoint_dir,
    check_model_spec,
    embedded_model_names,
    gguf_file_in,
    resolve_model_spec,
)
from unpact.packaged_models import PACKAGED_MODELS

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

#: the precisions offered on the command line and in the run config
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``"float32"``/``"bf16"``/... or a ``torch.dtype`` into a ``torch.dtype`` (default float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(set(_DTYPES)))}")
    return _DTYPES[key]


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_hub_model(spec: str, target: str, timeout: float = 10.0) -> None:
    """Raise :class:`ModelLoadError` at once when hub id ``target`` cannot be loaded: it must
    be in the local Hugging Face cache or, unless ``HF_HUB_OFFLINE`` is set, the hub must
    answer for it within ``timeout`` seconds (one request, no retries). Without this a
    name that is neither a path nor a known name is retried against the hub for ~40 s.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(target, "config.json"), str):
            return
    except Exception:  # noqa: BLE001 - an invalid repo id is reported below
        pass
    known = f"; short names: {', '.join(PACKAGED_MODELS)}" if PACKAGED_MODELS else ""
    if hub_offline():
        raise ModelLoadError(
            f"model {spec!r} is not a local directory, a GGUF file or a known name, not in the Hugging Face "
            f"cache, and HF_HUB_OFFLINE is set; download it first (unset HF_HUB_OFFLINE) or give a "
            f"checkpoint directory{known}"
        )
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(target, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means the load could not work
        first = " ".join(str(exc).split())[:200]
        raise ModelLoadError(
            f"model {spec!r} is not a local directory, a GGUF file or a known name, and the hub did not "
            f"answer for it ({type(exc).__name__}: {first}); check the id and the network, or give a "
            f"checkpoint directory{known}"
        ) from None


def check_device(device: Any) -> None:
    """Raise :class:`ConfigError` unless ``device`` exists here (``cuda`` needs a visible GPU).

    Example:
        >>> check_device("tpu")
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown device 'tpu': use cpu, cuda, cuda:<index> or mps
    """
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:<index> or mps") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(
                f"device {device!r}: no CUDA GPU is visible to this process (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or run on a GPU machine"
            )
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device {device!r}: only {n} CUDA GPU(s) visible (cuda:0..cuda:{n - 1})")
        return
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {device!r}: Apple MPS is not available here; use --device cpu")
        return
    raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:<index> or mps")


#: tokenizer classes that mean "exactly the tokenizer.json in this directory"
_GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def load_tokenizer(directory: Path):
    """The checkpoint's tokenizer. A directory whose ``tokenizer_config.json`` names a
    generic class (a plain ``tokenizers`` tokenizer, as unpact and ``tokenizers``-built
    checkpoints save) is loaded as exactly its ``tokenizer.json``: ``AutoTokenizer``
    would pick the model type's own class instead (e.g. ``Qwen2Tokenizer``, whose
    pre-tokenizer splits digits) and tokenise differently from training."""

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg_file = directory / "tokenizer_config.json"
    if cfg_file.is_file() and (directory / "tokenizer.json").is_file():
        try:
            cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        except (OSError, ValueError):
            cls = None
        if cls in _GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def _load_hf(directory: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    try:
        tokenizer = load_tokenizer(directory)
    except Exception as exc:  # noqa: BLE001 - re-raised with the directory named
        raise ModelLoadError(f"could not read the tokenizer in {str(directory)!r}: {exc}") from exc
    use_safetensors = any(f.name.endswith(".safetensors") for f in directory.iterdir()) or None
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(directory),
            local_files_only=True,
            attn_implementation="eager",
            dtype=dtype,
            use_safetensors=use_safetensors,
        )
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load the model weights in {str(directory)!r}: {exc}") from exc
    return hf_model, tokenizer


def _finish_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token


def load_model(
    spec: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **boot_kwargs: Any,
):
    """Load ``spec`` as a TransformerLens 4 ``TransformerBridge`` in eval mode.

    Args:
        spec: a local checkpoint directory, a hub id, or ``embedded:<name>``.
        device: ``"cpu"``, ``"cuda"``, ... (default: the bridge's choice; CPU here).
        dtype: ``torch.float32`` (default), ``"bfloat16"``, ...
        boot_kwargs: passed on to ``TransformerBridge.boot_transformers`` (for
            example ``device_map="auto"`` to shard a big model over GPUs).

    Returns:
        The bridge. Its HF model is ``bridge.original_model``; its tokenizer
        ``bridge.tokenizer``. Hook names are TransformerLens's
        (``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_pattern``, ...).
        Its KV cache is made to work and checked on one short prompt
        (:func:`unpact.generation.prepare_generation`, result in
        ``bridge.unpact_kv_cache``); if the check fails, ``bridge.generate`` runs
        without the cache, so it is right either way.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> model = load_model("embedded:gpt2")                   # doctest: +SKIP
        >>> model.cfg.n_layers, model.cfg.n_heads                 # doctest: +SKIP
        (4, 4)
    """
    torch_dtype = resolve_dtype(dtype)
    kind, target = resolve_model_spec(spec)
    if device is not None:
        check_device(device)  # "cuda" without a GPU is an error, never a silent CPU load
    if device is not None and "device_map" in boot_kwargs:
        raise ModelLoadError("give either device or device_map, not both")
    if device is None and "device_map" not in boot_kwargs:
        device = "cpu"
    with warnings.catch_warnings(), _quiet_loggers():
        warnings.simplefilter("ignore")
        bridge, source = _boot(kind, target, str(spec), device, torch_dtype, boot_kwargs)
    bridge.eval()
    bridge.unpact_spec = str(spec)
    bridge.unpact_source = source
    prepare_generation(bridge)  # the bridge's KV cache fixed and checked; else generate() runs uncached
    return bridge


def _boot(
    kind: str, target: str, spec: str, device, torch_dtype: torch.dtype, boot_kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Boot the bridge of a resolved spec (``kind`` from :func:`resolve_model_spec`) and say where
    its weights came from (``{"format": "hf"}``, or the GGUF file's format and quantization)."""
    from transformer_lens.model_bridge import TransformerBridge

    if kind in ("path", "gguf"):
        source: dict[str, Any] = {"format": "hf"}
        if kind == "gguf":
            hf_model, tokenizer, gguf_source = load_gguf(Path(target), torch_dtype)
            source = gguf_source.to_dict()
        else:
            check_checkpoint_dir(Path(target))
            hf_model, tokenizer = _load_hf(Path(target), torch_dtype)
        _finish_tokenizer(tokenizer)
        return _boot_loaded(target, hf_model, tokenizer, device, torch_dtype, boot_kwargs), source
    check_hub_model(spec, target)  # fails at once where the hub is off or unreachable
    try:
        bridge = TransformerBridge.boot_transformers(target, device=device, dtype=torch_dtype, **boot_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"could not load {target!r} as a local directory (none exists) or from the hub: {type(exc).__name__}: {exc}"
        ) from exc
    if bridge.tokenizer is not None:
        _finish_tokenizer(bridge.tokenizer)
    return bridge, {"format": "hf"}


def _boot_loaded(name: str, hf_model, tokenizer, device, dtype: torch.dtype, boot_kwargs: dict):
    """Wrap an HF model read from disk (a checkpoint directory or a GGUF file) in a bridge
    that keeps the checkpoint's own tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    try:
        bridge = TransformerBridge.boot_transformers(
            str(name), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype, **boot_kwargs
        )
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"TransformerLens could not wrap the model in {str(name)!r} "
            f"(architecture {getattr(hf_model.config, 'architectures', None)}): {exc}"
        ) from exc
    probe = "Question: a b\nAnswer:"
    if type(bridge.tokenizer) is not type(tokenizer) or bridge.tokenizer(probe).input_ids != tokenizer(probe).input_ids:
        # the bridge re-reads the tokenizer by model type to add BOS handling (a Llama's then
        # prepends BOS where the checkpoint's, e.g. a GGUF's, does not); keep the checkpoint's
        # own (see load_tokenizer), with the bridge's padding side (the property setter would
        # re-read it by model type again, hence _tokenizer)
        tokenizer.padding_side = bridge.tokenizer.padding_side
        bridge._tokenizer = tokenizer
        try:
            from transformer_lens.model_bridge.sources._bridge_builder import detect_tokenizer_bos_eos

            bridge.cfg.tokenizer_prepends_bos, bridge.cfg.tokenizer_appends_eos = detect_tokenizer_bos_eos(tokenizer)
        except ImportError:  # pragma: no cover - older TransformerLens
            pass
        driver = getattr(bridge, "_driver", None)
        if driver is not None and hasattr(driver, "tokenizer"):
            driver.tokenizer = tokenizer
    return bridge


class _quiet_loggers:
    """Silence transformers/TransformerLens progress and warning logs while loading."""

    _names = ("transformers", "transformer_lens", "accelerate")

    def __enter__(self):
        self._old = [(n, logging.getLogger(n).level) for n in self._names]
        for n in self._names:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            self._bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001
            self._bars = None
        return self

    def __exit__(self, *exc):
        for n, level in self._old:
            logging.getLogger(n).setLevel(level)
        if self._bars:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()
        return False


def save_model(model, directory: str | os.PathLike) -> Path:
    """Write ``model`` (a bridge from :func:`load_model`) as a normal HF checkpoint.

    The directory gets ``model.safetensors`` (each tensor once, HF key names),
    ``config.json``, ``generation_config.json`` when there is one, and the
    tokenizer files. ``load_model(directory)`` gives back the same logits.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> save_model(model, "runs/ga_gdr/model")                # doctest: +SKIP
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config_copy(model)
    for attr in ("output_attentions",):
        if getattr(config, attr, None):
            setattr(config, attr, False)
    fresh = rebuilt_hf_model(model, config, device="cpu")
    with warnings.catch_warnings(), _quiet_loggers():
        warnings.simplefilter("ignore")
        fresh.save_pretrained(str(directory), safe_serialization=True)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
    follow_umask(directory)
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(directory: str | os.PathLike) -> None:
    """Give ``directory`` and the files in it the modes a plain ``open``/``mkdir`` would
    (``0o777``/``0o666`` less the umask): temporary-file writers (``tempfile.mkdtemp``,
    the safetensors writer) leave them owner-only (0700/0600)."""
    mask = _umask()
    directory = Path(directory)
    os.chmod(directory, 0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file() and not f.is_symlink():
            os.chmod(f, 0o666 & ~mask)


def model_info(model) -> dict[str, Any]:
    """Architecture, sizes and parameter count of a loaded bridge (what ``unpact info`` prints)."""
    hf = hf_model_of(model)
    cfg = model.cfg
    state = hf_state_dict(model)
    seen: set[int] = set()
    n_params = 0
    for t in state.values():  # tied tensors (embedding = unembedding) count once
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            n_params += t.numel()
    archs = getattr(hf.config, "architectures", None) or [type(hf).__name__]
    source = getattr(model, "unpact_source", None) or {}
    return {
        "spec": getattr(model, "unpact_spec", None),
        "architecture": archs[0],
        "model_type": getattr(hf.config, "model_type", None),
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "d_head": getattr(cfg, "d_head", None),
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "n_params": n_params,
        "dtype": str(next(hf.parameters()).dtype).removeprefix("torch."),
        "source_format": source.get("format", "hf"),
        "quantization": source.get("file_type"),
    }
