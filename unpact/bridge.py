"""What every layer that runs a loaded model needs, below models, generation and scoring.

A leaf (of unpact it imports only :mod:`unpact.errors` and :mod:`unpact.protocols`), so the model loader,
the greedy decoder and the log-prob scorer all take these from here and none of them
imports another for them:

* the tokenizer helpers: the BOS id unpact prepends, the pad and stop ids, tokens
  without special tokens, the model's context length;
* one forward pass (:func:`forward_logits`, of a bridge under hooks or of a plain HF
  model), the same pass unembedding only the positions that are scored
  (:func:`forward_rows`, :func:`logits_at`) and the batching of rows to a token budget
  (:func:`chunks`);
* the plain HF twin of a bridge (:func:`plain_hf_model`: HF's own modules on the
  bridge's tensors) and the bridge's weights under plain HF names (:func:`hf_state_dict`).

:mod:`unpact.scoring` and :mod:`unpact.models` re-export these names, where callers
have always imported them.

Example:
    >>> list(chunks([3, 1, 2, 8], max_batch_tokens=6))
    [[1, 2], [0], [3]]
    >>> pad_id(object())
    0
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from unpact.errors import ModelLoadError
from unpact.protocols import Model

#: Default token budget of one forward batch (rows x padded length).
DEFAULT_MAX_BATCH_TOKENS = 16384


HookList = Sequence[tuple[str | Callable[[str], bool], Callable]]


#: Hooks for a batch: a fixed list, or a function of the batch's item indices (in row
#: order) that returns the list, for hooks that act on per-item positions.
BatchHooks = HookList | Callable[[list[int]], HookList] | None


def hooks_for(fwd_hooks: BatchHooks, group: list[int]) -> HookList | None:
    """The hook list of the batch of items ``group``: ``fwd_hooks`` itself, or what it returns for ``group``."""
    if callable(fwd_hooks):
        return fwd_hooks(group)
    return fwd_hooks


def bos_id(tokenizer) -> int | None:
    """The BOS id unpact prepends (None when the tokenizer has no BOS token)."""
    return getattr(tokenizer, "bos_token_id", None)


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad id, else its EOS, else its BOS, else 0."""
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    return 0


def tokenize(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def context_length(model: Model) -> int | None:
    """The model's context in tokens (``cfg.n_ctx``; None when the model does not say)."""
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "n_ctx", None)


def forward_logits(
    model, input_ids: Int[Tensor, "batch pos"], fwd_hooks: HookList | None = None, keep: int | None = None
) -> Float[Tensor, "batch kept vocab"]:
    """Logits of a bridge (with temporary ``fwd_hooks``) or of a plain HF model.

    ``keep`` computes the unembedding only for the last ``keep`` positions (HF's
    ``logits_to_keep``; hooks on the residual stream still see every position). No KV cache is
    built (``use_cache=False``): a scoring or training forward never reads one, HF's default
    would fill one per call, and under gradient checkpointing the recomputed layers would
    append their keys and values to it a second time.
    """
    extra: dict[str, Any] = {"use_cache": False, **({"logits_to_keep": int(keep)} if keep else {})}
    if fwd_hooks and not (hasattr(model, "hooks") and hasattr(model, "cfg")):
        raise ValueError("fwd_hooks need a TransformerLens bridge")
    try:
        logits = _logits(model, input_ids, fwd_hooks, extra)
    except TypeError as e:  # an HF model whose forward has no logits_to_keep
        if not keep or "logits_to_keep" not in str(e):
            raise
        logits = _logits(model, input_ids, fwd_hooks, {"use_cache": False})
    return logits if not keep else logits[:, -int(keep) :]


def output_head(model) -> torch.nn.Module | None:
    """The module that maps the final normalised residual to logits: the output embedding
    (``lm_head``) of the HF model, which a bridge wraps in place (None when there is none)."""
    get = getattr(hf_model_of(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Module) else None


@contextmanager
def logits_at(
    model, batch_idx: Int[Tensor, " n"], pos_idx: Int[Tensor, " n"]
) -> Iterator[Callable[[Tensor], Float[Tensor, "n vocab"]]]:
    """Within the block, every forward of ``model`` unembeds only the positions
    ``(batch_idx[i], pos_idx[i])``; yields ``take(logits) -> [n, vocab]``, which turns that
    forward's output logits into the ``n`` rows, in the order given.

    The final normalised residual ``[batch, pos, d_model]`` is gathered at those positions
    by a forward pre-hook on :func:`output_head` before the unembedding runs, so the
    logits of the forward are ``[1, n, vocab]``, never ``[batch, pos, vocab]``. Everything
    before the unembedding (hooks on the residual stream, attention, ``ln_final``) runs
    on every position as before, and the rows are the same numbers as the full logits at
    those positions (within float rounding of the smaller matrix product). The forward
    must not slice positions itself (no ``logits_to_keep``). A model without an output
    head gets its full logits indexed instead (same rows, full memory).

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> b, p = torch.tensor([0, 0, 1]), torch.tensor([2, 3, 1])
        >>> with logits_at(model, b, p) as take:                             # doctest: +SKIP
        ...     rows = take(forward_logits(model, ids))                      # doctest: +SKIP
        >>> torch.allclose(rows, forward_logits(model, ids)[b, p], atol=1e-5)  # doctest: +SKIP
        True
    """
    head = output_head(model)
    n = int(batch_idx.numel())
    if head is None:
        yield lambda logits: logits[batch_idx.to(logits.device), pos_idx.to(logits.device)]
        return

    def gather(_module, args):
        hidden = args[0]
        b, p = batch_idx.to(hidden.device), pos_idx.to(hidden.device)
        return (hidden[b, p].unsqueeze(0),) + tuple(args[1:])

    def take(logits: Tensor) -> Tensor:
        if logits.dim() != 3 or logits.shape[0] != 1 or logits.shape[1] != n:
            raise ValueError(f"expected the logits of {n} gathered rows, got shape {tuple(logits.shape)}")
        return logits[0]

    handle = head.register_forward_pre_hook(gather)
    try:
        yield take
    finally:
        handle.remove()


def forward_rows(
    model,
    input_ids: Int[Tensor, "batch pos"],
    batch_idx: Int[Tensor, " n"],
    pos_idx: Int[Tensor, " n"],
    fwd_hooks: HookList | None = None,
) -> Float[Tensor, "n vocab"]:
    """The logits of :func:`forward_logits` at positions ``(batch_idx[i], pos_idx[i])`` only,
    unembedding just those ``n`` rows (see :func:`logits_at`); gradients flow as through the
    full forward. With no rows it runs the model for its hooks and unembeds nothing."""
    with logits_at(model, batch_idx, pos_idx) as take:
        return take(forward_logits(model, input_ids, fwd_hooks))


def _logits(model, input_ids, fwd_hooks, extra) -> Tensor:
    if hasattr(model, "hooks") and hasattr(model, "cfg"):
        ctx = model.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else nullcontext()
        with ctx:
            return model(input_ids, return_type="logits", **extra)
    return model(input_ids=input_ids, **extra).logits


def chunks(lengths: Sequence[int], max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices grouped so each group's rows x longest length stays within the budget.

    Rows are taken in order of length so padding is small; each index appears once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    group: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if group and new_longest * (len(group) + 1) > max_batch_tokens:
            yield group
            group, new_longest = [], lengths[i]
        group.append(i)
        longest = new_longest
    if group:
        yield group


def stop_ids(tokenizer) -> set[int]:
    """The ids that end a greedy answer: the tokenizer's EOS and pad ids."""
    ids = set()
    for name in ("eos_token_id", "pad_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            ids.add(int(v))
    return ids


def hf_model_of(model) -> torch.nn.Module:
    """The HF model a bridge wraps (its modules are the bridge's components, in place)."""
    return getattr(model, "original_model", model)


def _split_qkv_map(att) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    """Where each entry of a bridge's split q/k/v copies lives in the fused HF parameter.

    Some bridges (GPT-NeoX's interleaved ``query_key_value``) give q/k/v their own
    *copies* of the fused weight, and the bridge computes with the copies. To find
    the layout for any architecture without knowing it, the fused parameters are
    temporarily filled with their own flat indices (float64, exact) and the bridge's
    ``split_qkv_matrix`` is run on them: each split entry then names its source.
    Returns ``[(split tensor, fused parameter, flat indices)]``, or None when the
    split tensors are views of the fused ones (GPT-2) and nothing needs syncing.
    """
    orig = getattr(att, "_original_component", None)
    split = [getattr(getattr(att, n, None), "_original_component", None) for n in ("q", "k", "v")]
    if orig is None or any(m is None for m in split):
        return None
    fused = [p for p in orig.parameters()]
    fused_storages = {p.untyped_storage().data_ptr() for p in fused}
    tensors = [t for m in split for t in (m.weight, getattr(m, "bias", None)) if t is not None]
    if all(t.untyped_storage().data_ptr() in fused_storages for t in tensors):
        return None
    saved = [p.data for p in fused]
    offsets, total = [], 0
    try:
        with torch.no_grad():
            for p in fused:
                offsets.append(total)
                p.data = torch.arange(total, total + p.numel(), dtype=torch.float64).view(p.shape)
                total += p.numel()
            probe = att.split_qkv_matrix(orig)
    finally:
        for p, d in zip(fused, saved):
            p.data = d
    probed = [t for m in probe for t in (m.weight, getattr(m, "bias", None)) if t is not None]
    if len(probed) != len(tensors):
        raise ModelLoadError("cannot map the bridge's split q/k/v weights back to the fused HF weight")
    out = []
    for t, idx in zip(tensors, probed):
        idx = idx.detach().reshape(-1)
        if not torch.equal(idx, idx.round()):
            raise ModelLoadError("cannot map the bridge's split q/k/v weights back to the fused HF weight")
        idx = idx.long()
        k = max(i for i, o in enumerate(offsets) if o <= int(idx[0]))
        if int(idx.min()) < offsets[k] or int(idx.max()) >= offsets[k] + fused[k].numel():
            raise ModelLoadError("a split q/k/v tensor draws from several fused HF parameters; cannot sync")
        out.append((t, fused[k], idx - offsets[k]))
    return out


#: each joint-q/k/v attention component's :func:`_split_qkv_map`, kept beside the module rather than
#: on it: an attribute set on a TransformerLens component changed how a later two-process (DDP)
#: unlearning run trained it (its fused q/k/v weights ended 4e-3 from a one-process run's)
_QKV_MAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sync_fused_weights(model) -> None:
    """Copy split q/k/v weights the bridge computes with back into the fused HF weight.

    A no-op for bridges whose split weights are views (GPT-2, and every architecture
    with separate q/k/v projections); for GPT-NeoX-style fused, interleaved
    ``query_key_value`` it makes the HF weights (what :func:`save_model` writes and
    :func:`plain_hf_model` runs) equal to what the bridge computes after an edit.
    """
    for att in hf_model_of(model).modules():
        if not callable(getattr(att, "split_qkv_matrix", None)):
            continue
        if att not in _QKV_MAPS:
            _QKV_MAPS[att] = _split_qkv_map(att)
        for t, fused, idx in _QKV_MAPS[att] or ():
            with torch.no_grad():
                fused.view(-1)[idx] = t.detach().reshape(-1).to(fused.dtype)


def _bridge_tensors(model, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The bridge's current tensors under the plain HF key names in ``wanted``, each once
    (split q/k/v copies synced back first); raises naming the keys the bridge lacks."""
    sync_fused_weights(model)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf_model_of(model).state_dict().items():
        plain = key.replace("._original_component", "")
        if plain in wanted and plain not in out:
            out[plain] = tensor.detach()
    missing = wanted - set(out)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if missing - tied:
        raise ModelLoadError(
            f"cannot rebuild the HF state dict: keys {sorted(missing - tied)[:5]} not found in the bridge"
        )
    return out


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The bridge's current weights under plain HF key names, each tensor once.

    The bridge wraps HF modules in place (``._original_component``) and adds
    views (split q/k/v) that share storage with the HF parameters; this strips the
    wrapper segments and keeps only the keys a fresh HF model of the same config has.
    Split q/k/v *copies* (GPT-NeoX) are first written back into the fused weight
    (:func:`sync_fused_weights`), so the result is what the bridge computes with.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(hf_model_of(model).config)
    return _bridge_tensors(model, set(fresh.state_dict().keys()))


def rebuilt_hf_model(model, config, device=None, **from_config_kwargs) -> torch.nn.Module:
    """A fresh HF model of ``config``, built on the meta device and given the bridge's
    current tensors by reference (moved to ``device`` when given), weights tied."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, **from_config_kwargs)
    state = _bridge_tensors(model, set(fresh.state_dict().keys()))
    if device is not None:
        state = {k: v.to(device) for k, v in state.items()}
    fresh.load_state_dict(state, assign=True, strict=False)
    fresh.tie_weights()
    return fresh


def hf_config_copy(model):
    """A fresh copy of the HF config of the model a bridge wraps."""
    config = hf_model_of(model).config
    return config.__class__.from_dict(config.to_dict())


def plain_hf_model(model, attn_implementation: str | None = None) -> torch.nn.Module:
    """A plain HF model (no hook wrappers) whose weights are the bridge's own tensors.

    Built on the meta device and given the bridge's parameters and buffers by
    reference (``load_state_dict(assign=True)``), so it costs no weight memory and
    sees every edit made to the bridge up to the moment it is built. It runs HF's
    own attention, so it takes a KV cache, ``attention_mask``/``position_ids`` with
    gaps and ``logits_to_keep``; hooks on the bridge are *not* applied. Used where
    only output log-probs are needed (leave-one-out with a shared-prefix cache).
    A plain HF model is returned as it is.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> hf = plain_hf_model(load_model("embedded:gpt2"))      # doctest: +SKIP
        >>> hf(torch.tensor([[0, 5, 6]])).logits.shape           # doctest: +SKIP
        torch.Size([1, 3, 2048])
    """
    if not hasattr(model, "original_model"):
        return model
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    twin = rebuilt_hf_model(model, hf_config_copy(model), **kwargs)
    buffers = {k.replace("._original_component", ""): v for k, v in hf_model_of(model).named_buffers()}
    for name, buf in list(twin.named_buffers()):
        if buf.is_meta:
            if name not in buffers:
                raise ModelLoadError(f"cannot build a plain HF twin of the bridge: buffer {name!r} not found")
            owner, _, attr = name.rpartition(".")
            twin.get_submodule(owner)._buffers[attr] = buffers[name]
    still_meta = [n for n, p in twin.named_parameters() if p.is_meta]
    if still_meta:
        raise ModelLoadError(f"cannot build a plain HF twin of the bridge: parameters {still_meta[:3]} missing")
    return twin.eval()
