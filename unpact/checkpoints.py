"""Checks of checkpoint files before any work: integrity, and whether an unlearned checkpoint
fits the original it is audited against.

``unpact audit`` measures checkpoints that someone else made. Before a run directory exists,
:func:`check_audit_inputs` reads each checkpoint's files once:

* the safetensors headers (:func:`read_header`): a file shorter than its header says (a
  truncated download or copy) or with an unreadable header is an error;
* the architecture: ``config.json``'s ``model_type`` and every tensor's shape, from the
  headers (no weight is read for this);
* the tokenizer: its vocabulary (token -> id) and special tokens;
* one pass over the weights, one tensor at a time (:func:`weight_pass`): NaN or infinite
  weights are an error; the relative weight distance ``||U - O|| / ||O||`` over all tensors
  tells whether U descends from O (:data:`MAX_RELATIVE_DISTANCE`); identical weights are a
  warning (the audit still runs).

Every failure is an :class:`~unpact.errors.InputError` naming the checkpoint and the fix.

Example:
    >>> relative_distance_note(0.02)
    'relative weight distance 0.02 from the original'
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from unpact.errors import InputError, ModelLoadError
from unpact.models import check_checkpoint_dir, load_tokenizer, resolve_model_spec

#: Largest relative weight distance ``||U - O|| / ||O||`` (all tensors together) at which an
#: unlearned checkpoint U still counts as a descendant of the original O. Measured with
#: ``scripts/measure_descendant_distance.py`` (docs/audit.md has the table): the ten registered
#: methods at their default strength (seed 0, embedded:tofu forget10) move the embedded gpt2,
#: llama and qwen2 models by 0.048 (npo on qwen2) to 0.179 (rmu on gpt2); the retain-only twins,
#: same configuration trained without the forget set, sit at 0.80 (gpt2), 0.87 (qwen2) and 0.90
#: (llama); independently drawn weights sit near sqrt(2). 0.4 is more than twice the largest
#: unlearning run and half the nearest unrelated model. ``audit.max_relative_distance``
#: (None: no check) overrides it.
MAX_RELATIVE_DISTANCE = 0.4

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}


def relative_distance_note(d: float) -> str:
    return f"relative weight distance {d:.3g} from the original"


@dataclass
class CheckpointFiles:
    """What the files of one checkpoint say without loading the model."""

    spec: str
    directory: Path
    model_type: str | None
    #: tensor name -> (file, shape)
    tensors: dict[str, tuple[Path, tuple[int, ...]]] = field(default_factory=dict)


def local_directory(spec: str) -> Path:
    """The local directory of checkpoint ``spec`` (a hub id: its snapshot in the Hugging Face cache,
    downloaded when missing and the hub is reachable)."""
    try:
        kind, target = resolve_model_spec(spec)
    except ModelLoadError as exc:
        raise InputError(str(exc)) from None
    if kind == "path":
        return Path(target)
    if kind == "gguf":
        raise InputError(
            f"checkpoint {spec!r} is a GGUF file; the audit's checks compare safetensors checkpoints: "
            "save it as one first (unpact.save_model(unpact.load_model(spec), directory)) and give that directory"
        )
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        return Path(
            snapshot_download(
                target, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"], local_files_only=offline
            )
        )
    except Exception as exc:  # noqa: BLE001 - any failure means the audit could not read it
        first = " ".join(str(exc).split())[:200]
        raise InputError(
            f"checkpoint {spec!r}: could not get its files from the hub or the cache "
            f"({type(exc).__name__}: {first}); check the id and the network, or give a directory"
        ) from None


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The tensor entries of safetensors file ``path`` (name -> dtype, shape, data_offsets).

    A file shorter than its header says, or whose header is not the safetensors layout, is an
    :class:`~unpact.errors.InputError` (a truncated download, a partial copy, another format).
    """
    path = Path(path)
    size = path.stat().st_size
    fix = "copy or download the checkpoint again"
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InputError(
                f"{str(path)!r} is truncated or not a safetensors file ({size} bytes, shorter than "
                f"the 8-byte header length); {fix}"
            )
        n = int.from_bytes(raw, "little")
        if n <= 0 or n > size - 8 or n > 100_000_000:
            raise InputError(
                f"{str(path)!r} is truncated or corrupt: its header length ({n} bytes) does not fit in "
                f"the file ({size} bytes); {fix}"
            )
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"{str(path)!r} is corrupt: its safetensors header is not valid JSON; {fix}") from None
    if not isinstance(header, dict):
        raise InputError(f"{str(path)!r} is corrupt: its safetensors header is not a table of tensors; {fix}")
    header.pop("__metadata__", None)
    end = 0
    for name, t in header.items():
        try:
            lo, hi = (int(x) for x in t["data_offsets"])
            shape = [int(x) for x in t["shape"]]
            width = _DTYPE_BYTES.get(t["dtype"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{str(path)!r} is corrupt: the header entry of tensor {name!r} is malformed; {fix}"
            ) from None
        if width is not None and hi - lo != math.prod(shape) * width:
            raise InputError(
                f"{str(path)!r} is corrupt: tensor {name!r} has {hi - lo} bytes for shape {shape} ({t['dtype']}); {fix}"
            )
        end = max(end, hi)
    if 8 + n + end > size:
        raise InputError(
            f"{str(path)!r} is truncated: {size} bytes, but its header says the tensors run to byte "
            f"{8 + n + end}; {fix}"
        )
    return header


def inspect_files(spec: str) -> CheckpointFiles:
    """Read ``spec``'s ``config.json`` and safetensors headers (no weights)."""
    directory = local_directory(spec)
    try:
        check_checkpoint_dir(directory)
    except ModelLoadError as exc:
        raise InputError(str(exc)) from None
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"{str(directory / 'config.json')!r} is not valid JSON; copy the checkpoint again") from None
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"checkpoint {spec!r} has no *.safetensors weights (unpact never unpickles .bin files); "
            "convert it with save_pretrained(..., safe_serialization=True)"
        )
    out = CheckpointFiles(spec=str(spec), directory=directory, model_type=config.get("model_type"))
    for f in files:
        for name, t in read_header(f).items():
            out.tensors[name] = (f, tuple(int(x) for x in t["shape"]))
    return out


def _tied(name: str) -> bool:
    """A tensor one side may leave out of its file because it is tied to the embedding."""
    return name.endswith("lm_head.weight") or name.endswith("embed_out.weight")


def check_same_architecture(original: CheckpointFiles, other: CheckpointFiles) -> None:
    """Raise :class:`InputError` unless ``other`` has ``original``'s model type and tensor shapes."""
    fix = "audit a checkpoint unlearned from this original, or give its own original with --original"
    if original.model_type != other.model_type:
        raise InputError(
            f"checkpoint {other.spec!r} is a {other.model_type!r} model but the original {original.spec!r} "
            f"is a {original.model_type!r} model (config.json model_type); {fix}"
        )
    for a, b in ((original, other), (other, original)):
        missing = [k for k in a.tensors if k not in b.tensors and not _tied(k)]
        if missing:
            raise InputError(
                f"checkpoints {original.spec!r} and {other.spec!r} have different architectures: tensor "
                f"{missing[0]!r} is in {a.spec!r} only ({len(missing)} such); {fix}"
            )
    for k, (_, shape) in original.tensors.items():
        if k in other.tensors and other.tensors[k][1] != shape:
            raise InputError(
                f"checkpoints {original.spec!r} and {other.spec!r} have different architectures: tensor "
                f"{k!r} is {list(shape)} in the original and {list(other.tensors[k][1])} in the other; {fix}"
            )


def check_same_tokenizer(original: CheckpointFiles, other: CheckpointFiles, what: str = "checkpoint") -> None:
    """Raise :class:`InputError` unless both checkpoints' tokenizers map the same tokens to the same ids."""
    toks = []
    for c in (original, other):
        try:
            toks.append(load_tokenizer(c.directory))
        except Exception as exc:  # noqa: BLE001 - named and re-raised
            raise InputError(f"could not read the tokenizer of {c.spec!r}: {exc}") from None
    va, vb = toks[0].get_vocab(), toks[1].get_vocab()
    if va != vb:
        only = sorted(set(va) ^ set(vb))
        moved = [t for t in va if t in vb and va[t] != vb[t]]
        detail = (
            f"{len(va)} vs {len(vb)} tokens, {len(only)} in one only (e.g. {only[0]!r})"
            if only
            else f"token {moved[0]!r} has id {va[moved[0]]} vs {vb[moved[0]]}"
        )
        raise InputError(
            f"{what} {other.spec!r} has a different tokenizer from the original {original.spec!r} "
            f"({detail}); its answers cannot be scored against the original's token by token: give "
            "checkpoints that share the original's tokenizer"
        )
    sa = {k: str(v) for k, v in (toks[0].special_tokens_map or {}).items()}
    sb = {k: str(v) for k, v in (toks[1].special_tokens_map or {}).items()}
    if sa != sb:
        key = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))[0]
        raise InputError(
            f"{what} {other.spec!r} has a different tokenizer from the original {original.spec!r} "
            f"(special token {key}: {sa.get(key)!r} vs {sb.get(key)!r}); give checkpoints that share "
            "the original's tokenizer"
        )


def weight_pass(original: CheckpointFiles, others: dict[str, CheckpointFiles]) -> dict[str, dict[str, Any]]:
    """One read of every tensor of the original and of each other checkpoint (one tensor at a time).

    Raises :class:`InputError` for a NaN or infinite weight (in any of them). Returns per other
    checkpoint: ``relative_distance`` (``||U - O|| / ||O||`` over the tensors both hold, in
    float64) and ``identical`` (every tensor equal bit for bit, the same tensor names).
    """
    handles: dict[Path, Any] = {}

    def tensor(c: CheckpointFiles, name: str):
        f = c.tensors[name][0]
        if f not in handles:
            handles[f] = safe_open(str(f), framework="pt", device="cpu")
        try:
            t = handles[f].get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - a file that lies about its contents
            raise InputError(
                f"{str(f)!r} is corrupt: tensor {name!r} cannot be read ({exc}); copy or download the checkpoint again"
            ) from None
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise InputError(
                f"checkpoint {c.spec!r} has {bad} NaN or infinite weights in tensor {name!r}; such a "
                "model cannot be scored: give the last finite checkpoint of its training"
            )
        return t

    sq_o = 0.0
    acc = {k: {"sq": 0.0, "identical": set(c.tensors) == set(original.tensors)} for k, c in others.items()}
    for name in original.tensors:
        o = tensor(original, name)
        of = o.double() if o.is_floating_point() else None
        if of is not None:
            sq_o += float((of * of).sum())
        for k, c in others.items():
            if name not in c.tensors:
                continue
            u = tensor(c, name)
            if acc[k]["identical"] and not (u.dtype == o.dtype and torch.equal(u, o)):
                acc[k]["identical"] = False
            if of is not None:
                d = u.double() - of
                acc[k]["sq"] += float((d * d).sum())
    for c in others.values():  # tensors of the others that the original's files leave out (tied)
        for name in c.tensors:
            if name not in original.tensors:
                tensor(c, name)
    return {
        k: {
            "relative_distance": math.sqrt(a["sq"]) / math.sqrt(sq_o) if sq_o > 0 else None,
            "identical": bool(a["identical"]),
        }
        for k, a in acc.items()
    }


def checkpoint_name(spec: str) -> str:
    """The name an audited checkpoint goes by (its directory name, a hub id's last part).

    Example:
        >>> checkpoint_name("runs/ga/"), checkpoint_name("org/model-x"), checkpoint_name("embedded:gpt2-retain")
        ('ga', 'model-x', 'gpt2-retain')
    """
    s = str(spec).rstrip("/").rstrip(os.sep)
    if s.startswith("embedded:"):
        return s.split(":", 1)[1]
    return s.replace(os.sep, "/").rsplit("/", 1)[-1] or s


#: stage-name prefixes the study itself uses: an audited checkpoint never takes one of these names
RESERVED_NAMES = ("original", "reference", "controls", "analyses", "nulls")


def name_checkpoints(specs: list[str], taken: tuple[str, ...] = ()) -> dict[str, str]:
    """Name -> spec for the audited checkpoints: each named by :func:`checkpoint_name`, a repeated
    name (or one the study uses, or one in ``taken``) gets ``-2``, ``-3``, ...

    Example:
        >>> name_checkpoints(["a/ga", "b/ga", "c/original"])
        {'ga': 'a/ga', 'ga-2': 'b/ga', 'original-2': 'c/original'}
    """
    out: dict[str, str] = {}
    used = set(RESERVED_NAMES) | set(taken)
    for spec in specs:
        base = checkpoint_name(spec)
        name, i = base, 1
        while name in used:
            i += 1
            name = f"{base}-{i}"
        used.add(name)
        out[name] = spec
    return out


def check_audit_inputs(
    original: str, checkpoints: dict[str, str], reference: str | None, max_relative_distance: float | None
) -> dict[str, dict[str, Any]]:
    """Every check of ``unpact audit``'s checkpoints, before any work (see the module docstring).

    Returns per audited checkpoint its lineage: ``spec``, ``relative_distance``, ``identical``
    and ``warnings`` (identical weights: the audit still runs).
    """
    orig = inspect_files(original)
    files = {k: inspect_files(spec) for k, spec in checkpoints.items()}
    ref = inspect_files(reference) if reference else None
    for c in files.values():
        check_same_architecture(orig, c)
    for c in files.values():
        check_same_tokenizer(orig, c)
    if ref is not None:
        check_same_tokenizer(orig, ref, what="reference model")
    stats = weight_pass(orig, files)
    if ref is not None:
        weight_pass(ref, {})  # NaN/inf in the negative control
    out = {}
    for k, c in files.items():
        s = stats[k]
        d = s["relative_distance"]
        if max_relative_distance is not None and d is not None and d > max_relative_distance:
            raise InputError(
                f"checkpoint {c.spec!r} does not look unlearned from the original {orig.spec!r}: its "
                f"{relative_distance_note(d)} is above audit.max_relative_distance = {max_relative_distance:g} (unpact's "
                f"methods move the embedded models by 0.05-0.18, retain-only twins trained apart sit at 0.8-0.9); give the "
                "checkpoint's own original, or --set audit.max_relative_distance=null to audit it anyway (e.g. a "
                "retain-only model trained from scratch)"
            )
        warnings = []
        if s["identical"]:
            warnings.append(
                f"checkpoint {c.spec!r} has exactly the original's weights (every tensor identical): "
                "nothing was unlearned; the audit measures the original again"
            )
        out[k] = {"spec": c.spec, "relative_distance": d, "identical": s["identical"], "warnings": warnings}
    return out


def lineage(original: str, checkpoint: str) -> dict[str, Any]:
    """The relative weight distance of ``checkpoint`` from ``original`` and whether they are identical
    (what :func:`check_audit_inputs` records, for a checkpoint the run made itself)."""
    kind, _ = resolve_model_spec(original)
    if kind != "path":  # a GGUF file or a hub id: no safetensors files of the original to compare with
        return {
            "spec": str(checkpoint),
            "relative_distance": None,
            "identical": None,
            "warnings": [],
            "note": f"the original {original!r} is not a safetensors checkpoint directory ({kind}): "
            "weights not compared",
        }
    stats = weight_pass(inspect_files(original), {"c": inspect_files(checkpoint)})["c"]
    warnings = (
        [
            f"checkpoint {checkpoint!r} has exactly the original's weights (every tensor identical): nothing "
            "was unlearned"
        ]
        if stats["identical"]
        else []
    )
    return {"spec": str(checkpoint), **stats, "warnings": warnings}
