"""What a model spec names, decided from the file system alone (no torch, no transformers).

A model spec (``--model``, ``load_model``'s argument) is ``embedded:<name>``, a
checkpoint directory, a ``.gguf`` file or a directory holding one, a short name of
a packaged model, or a hub id. :func:`resolve_model_spec` says which, and
:func:`check_model_spec` raises at once on a local checkpoint that cannot load, so
the command line can refuse bad input before it imports the heavy libraries.

Example:
    >>> resolve_model_spec("EleutherAI/pythia-70m")
    ('hub', 'EleutherAI/pythia-70m')
"""

from __future__ import annotations

import os
from pathlib import Path

from unpact.data.shipped import MODELS_DIR as EMBEDDED_MODELS_DIR
from unpact.errors import ModelLoadError
from unpact.packaged_models import PACKAGED_MODELS, packaged_model_file

EMBEDDED_PREFIX = "embedded:"
GGUF_SUFFIX = ".gguf"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def embedded_model_names() -> list[str]:
    """Names of the models shipped inside the package (``embedded:<name>``)."""
    if not EMBEDDED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_MODELS_DIR.iterdir() if (p / "config.json").is_file())


def gguf_file_in(path: str | os.PathLike) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the one ``.gguf`` in a directory
    that is not an HF checkpoint (no ``config.json``). ``None`` when it names none.

    A directory with several ``.gguf`` files is an error naming them: pick one.

    Example:
        >>> gguf_file_in("/nonexistent/model.gguf") is None
        True
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p if p.suffix.lower() == GGUF_SUFFIX else None
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == GGUF_SUFFIX)
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise ModelLoadError(f"directory {str(p)!r} holds several GGUF files ({names}); give the file's path instead")
    return found[0] if found else None


def resolve_model_spec(spec: str | os.PathLike) -> tuple[str, str]:
    """Classify a model spec as ``("path", dir)``, ``("gguf", file)`` or ``("hub", id)``.

    ``embedded:<name>`` resolves to the shipped directory; a short name of
    :data:`unpact.packaged_models.PACKAGED_MODELS` (``smollm2-135m``) to the GGUF file
    inside its installed package; a ``.gguf`` file, or a directory holding one GGUF file
    and no ``config.json``, is ``"gguf"``; a string that names an existing directory, or
    that looks like a filesystem path, is a local path; anything else a hub id.

    Example:
        >>> resolve_model_spec("./runs/npo_gdr/model")
        ('path', 'runs/npo_gdr/model')
        >>> resolve_model_spec("EleutherAI/pythia-70m")
        ('hub', 'EleutherAI/pythia-70m')
    """
    s = str(spec)
    if s.startswith(EMBEDDED_PREFIX):
        name = s[len(EMBEDDED_PREFIX) :]
        directory = EMBEDDED_MODELS_DIR / name
        if not name or not (directory / "config.json").is_file():
            known = embedded_model_names()
            hint = (
                f"known embedded models: {', '.join(known)}"
                if known
                else "no embedded models are installed; build them with `unpact build-embedded`"
            )
            raise ModelLoadError(f"unknown embedded model {s!r}; {hint}")
        return "path", str(directory)
    p = Path(s).expanduser()
    if s in PACKAGED_MODELS and not p.exists():
        return "gguf", str(packaged_model_file(s))
    gguf = gguf_file_in(p)
    if gguf is not None:
        return "gguf", str(gguf)
    looks_like_path = (
        s.startswith((".", "/", "~"))
        or os.sep in s.strip("/")
        and s.count("/") != 1
        or p.exists()
        or s.lower().endswith(GGUF_SUFFIX)
    )
    if p.is_dir() or looks_like_path:
        return "path", str(p)
    return "hub", s


def check_checkpoint_dir(directory: Path) -> None:
    """Raise :class:`ModelLoadError` naming what a checkpoint directory lacks (the directory itself,
    ``config.json``, tokenizer files or weights)."""
    if not directory.exists():
        raise ModelLoadError(
            f"checkpoint directory {str(directory)!r} does not exist; "
            "give a HF checkpoint directory, a hub id or embedded:<name>"
        )
    if not directory.is_dir():
        raise ModelLoadError(
            f"{str(directory)!r} is a file, not a checkpoint directory; give the directory that holds config.json"
        )
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"checkpoint directory {str(directory)!r} has no config.json; "
            "save the model with save_pretrained() or unpact.save_model()"
        )
    if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"checkpoint directory {str(directory)!r} has no tokenizer files "
            f"(looked for {', '.join(_TOKENIZER_FILES)}); save the tokenizer into it with "
            "tokenizer.save_pretrained(directory)"
        )
    if not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in directory.iterdir()):
        raise ModelLoadError(
            f"checkpoint directory {str(directory)!r} has no weights (*.safetensors); "
            "save the model with save_pretrained() or unpact.save_model()"
        )


def check_model_spec(spec: str | os.PathLike) -> tuple[str, str]:
    """:func:`resolve_model_spec`, then :func:`check_checkpoint_dir` on a local directory:
    raises :class:`ModelLoadError` naming what is missing; returns the resolved pair.

    Example:
        >>> check_model_spec("./no/such/dir")
        Traceback (most recent call last):
        ...
        unpact.errors.ModelLoadError: checkpoint directory 'no/such/dir' does not exist; give a HF checkpoint directory, a hub id or embedded:<name>
    """
    kind, target = resolve_model_spec(spec)
    if kind == "path":
        check_checkpoint_dir(Path(target))
    return kind, target
