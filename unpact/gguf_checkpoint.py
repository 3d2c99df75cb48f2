"""GGUF checkpoints (llama.cpp's one-file format), read into an ordinary HF model.

A ``.gguf`` file holds the architecture's hyperparameters, the tokenizer (token list,
types, merges, BOS/EOS policy, chat template) and the weights, usually quantized
(``Q4_1``, ``Q8_0``, ...). unpact reads it through transformers' own GGUF support,
which de-quantizes every tensor to floating point, and then moves the weights into a
plain model built from the same config, so the result is an ordinary HF model: it
saves with ``save_pretrained`` and boots as a TransformerLens bridge like any
checkpoint directory. The de-quantized weights are *not* the original model's: a
``Q4_1`` file de-quantized is the quantized model, in float32.

The tokenizer keeps the file's BOS policy (``tokenizer.ggml.add_bos_token``) explicitly,
so a checkpoint saved from it (:func:`unpact.models.save_model`) tokenizes exactly as
the GGUF's own tokenizer does.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> source = read_gguf_source("SmolLM2-135M-Instruct.Q4_1.gguf")   # doctest: +SKIP
    >>> source.file_type, source.architecture                          # doctest: +SKIP
    ('MOSTLY_Q4_1', 'llama')
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from unpact.errors import ModelLoadError
from unpact.model_specs import GGUF_SUFFIX, gguf_file_in  # noqa: F401 (re-exported)

#: what to install when the ``gguf`` reader is missing (transformers needs it too)
GGUF_INSTALL = "pip install 'unpact-lens[gguf]'"


@dataclass(frozen=True)
class GGUFSource:
    """Where a model's weights came from when it was read from a GGUF file.

    ``file_type`` is the file's declared quantization (``general.file_type`` as
    llama.cpp names it, e.g. ``MOSTLY_Q4_1``); ``tensor_types`` counts the tensors by
    their stored type (a "Q4_1" file keeps norms in F32 and often the embedding in Q8_0).
    """

    file: str
    architecture: str
    file_type: str
    tensor_types: dict[str, int] = field(default_factory=dict)
    add_bos_token: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": "gguf", **asdict(self)}


def _reader(file: Path):
    try:
        import gguf
    except ImportError as exc:
        raise ModelLoadError(f"reading {str(file)!r} needs the gguf package; install it with: {GGUF_INSTALL}") from exc
    try:
        return gguf, gguf.GGUFReader(str(file))
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ModelLoadError(f"{str(file)!r} is not a readable GGUF file: {exc}") from exc


def read_gguf_source(file: str | os.PathLike) -> GGUFSource:
    """The architecture, declared quantization and stored tensor types of a GGUF file
    (metadata only: no weights are de-quantized)."""
    file = Path(file)
    gguf, reader = _reader(file)
    return _source_of(gguf, reader, file)


def _source_of(gguf, reader, file: Path) -> GGUFSource:
    def value(key: str, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    raw_type = value("general.file_type")
    try:
        file_type = gguf.LlamaFileType(int(raw_type)).name if raw_type is not None else "unknown"
    except ValueError:
        file_type = f"file_type {raw_type}"
    types = Counter(t.tensor_type.name for t in reader.tensors)
    bos = value("tokenizer.ggml.add_bos_token")
    return GGUFSource(
        file=str(file),
        architecture=str(value("general.architecture", "unknown")),
        file_type=file_type,
        tensor_types=dict(sorted(types.items())),
        add_bos_token=None if bos is None else bool(bos),
    )


@contextlib.contextmanager
def _parsed_once(gguf, file: Path, reader):
    """Hand transformers ``reader``, already parsed, whenever it opens ``file``.

    transformers parses the whole file's metadata for the config, again for the tokenizer and
    again for the weights (``gguf.GGUFReader``, about 3.6 s each for SmolLM2's 49k-token
    vocabulary); the reader is read-only, so one parse serves all three. Other files open as usual.
    """
    original = gguf.GGUFReader

    def reuse(path, *args, **kwargs):
        if not args and not kwargs and Path(path).resolve() == file.resolve():
            return reader
        return original(path, *args, **kwargs)

    gguf.GGUFReader = reuse
    try:
        yield
    finally:
        gguf.GGUFReader = original


def load_gguf(file: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """Read ``file`` as ``(hf_model, tokenizer, source)``: a plain HF causal LM holding the
    de-quantized weights (no quantization config left on it, so it saves like any model),
    the GGUF's tokenizer with its BOS policy made explicit, and the :class:`GGUFSource`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(file)
    gguf, reader = _reader(file)
    source = _source_of(gguf, reader, file)
    folder, name = str(file.parent), file.name
    try:
        with _parsed_once(gguf, file, reader):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            with contextlib.redirect_stderr(io.StringIO()):  # transformers' own tqdm bar over the tensors
                read = AutoModelForCausalLM.from_pretrained(
                    folder, gguf_file=name, dtype=dtype, attn_implementation="eager"
                )
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ModelLoadError(
            f"transformers could not read {str(file)!r} (architecture {source.architecture!r}, "
            f"{source.file_type}): {type(exc).__name__}: {exc}"
        ) from exc
    config = read.config.__class__.from_dict(
        {k: v for k, v in read.config.to_dict().items() if k != "quantization_config"}
    )
    config.dtype = dtype
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    plain.load_state_dict(read.state_dict(), assign=True, strict=False)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"{str(file)!r}: the GGUF file has no tensors for {missing[:3]}")
    for name, buf in list(plain.named_buffers()):
        if buf.is_meta:  # non-persistent buffers (rotary inverse frequencies) rebuilt from the config
            owner, _, attr = name.rpartition(".")
            plain.get_submodule(owner)._buffers[attr] = read.get_buffer(name)
    plain.generation_config = read.generation_config
    plain.eval()
    if source.add_bos_token is not None:
        tokenizer.add_bos_token = source.add_bos_token
    return plain, tokenizer, source
