"""Greedy generation with a KV cache that keeps the hooks, and a loaded bridge whose ``generate`` is right.

Two things live here.

**The bridge's own KV cache.** TransformerLens 4.3's bridge attention extends
HF's cache only when HF hands it over as ``past_key_values`` (or ``layer_past``);
transformers >= 5.2x renamed that argument ``cache``, so on GPT-2-, Llama- and
Qwen2-style bridges the cache stays empty and every cached decoding step attends
to itself alone: ``model.generate(...)`` (``use_past_kv_cache=True`` by default)
returns fluent garbage. :func:`prepare_generation` (run by
:func:`unpact.load_model`) hands the cache on under either name
(:func:`enable_kv_cache`), then checks on one short prompt that the logits of a
cached forward equal the uncached ones (:func:`kv_cache_gap`). A model that
fails the check keeps working: its ``generate`` defaults to
``use_past_kv_cache=False`` and ``model.unpact_kv_cache["ok"]`` is False.

**Cached greedy generation under hooks** (:func:`greedy_tokens`, behind
:func:`unpact.scoring.greedy_generate`). The uncached path re-runs the whole
sequence at every step so that hooks acting on prompt positions see the same
tokens every time. Here the prompt runs once (right-padded, exactly as the
uncached path's first step, hooks included, so the cached keys and values are
the *hooked* ones), then each step runs only the new token of every row against
the cache. The new token of row r sits in cache column ``W + t`` (W = the
batch's padded prompt width) but at absolute position ``len(prompt_r) + t``; the
attention mask hides the padding columns, ``position_ids`` carry the absolute
positions, and :func:`unpact.hooks.position_layout` tells every ``unpact.hooks``
hook which absolute position each query and key column holds. So attention
scaling still reweights the keyword *columns* for every new query, value and
residual scaling still act on the keyword positions (whose cached keys and
values were computed under them), and the logits equal the uncached path's
within float error (tests: 1e-5, identical greedy tokens).

Hook-free calls run on :func:`unpact.bridge.plain_hf_model` (the bridge's own
tensors under HF's modules: no hook points to pass through), with the same loop.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.scoring import greedy_generate
    >>> greedy_generate(model, ["Question: Where was Ana Lind born?\\nAnswer:"], fwd_hooks=hooks)  # doctest: +SKIP
    ['Ana Lind was born in Lima.']
    >>> model.generate("Question: Where was Ana Lind born?\\nAnswer:", max_new_tokens=8)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from jaxtyping import Float
from torch import Tensor

from unpact.bridge import (
    DEFAULT_MAX_BATCH_TOKENS,
    bos_id,
    chunks,
    context_length,
    forward_rows,
    hooks_for,
    logits_at,
    pad_id,
    plain_hf_model,
    stop_ids,
    tokenize,
)
from unpact.errors import ModelLoadError
from unpact.hooks.positions import Layout, position_layout

#: Largest relative gap ``max|cached - uncached| / max(1, max|uncached|)`` between the
#: logits of a cached and an uncached forward that :func:`prepare_generation` accepts,
#: per parameter dtype. Reordered float32 matmuls differ by ~1e-6 relative; half
#: precision by ~1e-2; a cache that is ignored or misplaced differs by O(1).
KV_CACHE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 2e-2}

#: The short prompt of the load-time check.
CHECK_PROMPT = "The quick brown fox jumps over the lazy dog."


# ----------------------------------------------------------------- bridge cache


def _update_kv_cache_any_name(self, k: Tensor, v: Tensor, **kwargs):
    """The component's ``_update_kv_cache``, also finding HF's cache under its new name ``cache``."""
    if kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None and kwargs.get("cache") is not None:
        kwargs["past_key_values"] = kwargs["cache"]
    return type(self)._update_kv_cache(self, k, v, **kwargs)


def enable_kv_cache(model) -> int:
    """Let every attention component of a bridge extend HF's cache whatever HF calls it.

    Installs, on each component instance (not the class), an ``_update_kv_cache``
    that maps HF's ``cache`` argument onto the ``past_key_values`` TransformerLens
    reads. Returns the number of components changed (0 for a plain HF model or a
    bridge already done).
    """
    n = 0
    for mod in model.modules():
        if not callable(getattr(type(mod), "_update_kv_cache", None)) or "_update_kv_cache" in vars(mod):
            continue
        mod._update_kv_cache = types.MethodType(_update_kv_cache_any_name, mod)
        n += 1
    return n


def _is_bridge(model) -> bool:
    return hasattr(model, "hooks") and hasattr(model, "cfg") and hasattr(model, "original_model")


def _param_dtype(model) -> torch.dtype:
    return next(iter(model.parameters())).dtype


def _check_ids(model) -> Tensor:
    tok = getattr(model, "tokenizer", None)
    ids: list[int] = []
    if tok is not None:
        b = bos_id(tok)
        ids = ([int(b)] if b is not None else []) + tokenize(tok, CHECK_PROMPT)
    if len(ids) < 4:
        vocab = int(getattr(model.cfg, "d_vocab", 8))
        ids = [i % vocab for i in range(1, 9)]
    return torch.tensor([ids[:16]], dtype=torch.long)


def kv_cache_gap(model) -> float:
    """Relative gap between a bridge's logits with and without its KV cache on one short prompt.

    The prompt runs whole, then again as a cached prefix plus its last three
    tokens; returns ``max|cached - whole| / max(1, max|whole|)`` over those three
    positions (about 1e-7 in float32 when the cache works, O(1) when it is ignored).
    """
    from transformers.cache_utils import DynamicCache

    device = next(iter(model.parameters())).device
    ids = _check_ids(model).to(device)
    k = 3
    arg = {_cache_arg(model.original_model): DynamicCache()}
    with torch.no_grad():
        whole = model(ids, return_type="logits")[:, -k:].float()
        model(ids[:, :-k], return_type="logits", use_cache=True, **arg)
        cached = model(ids[:, -k:], return_type="logits", use_cache=True, **arg).float()
    return float((cached - whole).abs().max()) / max(1.0, float(whole.abs().max()))


def prepare_generation(model, fix: bool = True) -> dict:
    """Make ``model.generate`` right: fix the bridge's cache, check it, else generate uncached.

    Sets and returns ``model.unpact_kv_cache = {"ok", "gap", "tolerance", "patched", "error"}``.
    When the check fails, ``model.generate`` and ``model.generate_stream`` default to
    ``use_past_kv_cache=False`` (an explicit argument still wins) and the cached
    hooked generation of :func:`greedy_tokens` is not used for this model.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> model = unpact.load_model("embedded:gpt2")      # runs this   # doctest: +SKIP
        >>> model.unpact_kv_cache["ok"]                                  # doctest: +SKIP
        True
    """
    patched = enable_kv_cache(model) if fix else 0
    tol = KV_CACHE_TOLERANCE.get(_param_dtype(model), 5e-2)
    info = {"ok": False, "gap": None, "tolerance": tol, "patched": patched, "error": None}
    try:
        gap = kv_cache_gap(model)
        info["gap"] = gap
        info["ok"] = bool(gap <= tol)
    except Exception as exc:  # noqa: BLE001 - an architecture whose forward takes no cache
        info["error"] = f"{type(exc).__name__}: {exc}"
    if not info["ok"]:
        for name in ("generate", "generate_stream"):
            method = getattr(type(model), name, None)
            if callable(method):
                setattr(model, name, functools.partial(method, model, use_past_kv_cache=False))
    model.unpact_kv_cache = info
    return info


def kv_cache_ok(model) -> bool:
    """Whether a bridge's cached forward passed :func:`prepare_generation`'s check (checked now if never)."""
    info = getattr(model, "unpact_kv_cache", None)
    if info is None:
        info = prepare_generation(model)
    return bool(info["ok"])


# ----------------------------------------------------------------- greedy loops


class _Decoder:
    """Shared bookkeeping of a greedy loop: stops, newline detection, results."""

    def __init__(self, model, n: int, stop_at_newline: bool, keep_logits: bool, stop_at_eos: bool = True):
        self.tok = model.tokenizer
        self.stops = stop_ids(self.tok) if stop_at_eos else set()
        self.n_ctx = context_length(model) or 10**9
        self.stop_at_newline = stop_at_newline
        self.newline: dict[int, bool] = {}
        self.results: list[list[int]] = [[] for _ in range(n)]
        self.logits: list[list[Tensor]] | None = [[] for _ in range(n)] if keep_logits else None

    def ends_line(self, t: int) -> bool:
        if t not in self.newline:
            self.newline[t] = "\n" in self.tok.decode([t])
        return self.newline[t]

    def step(self, item: int, row_logits: Tensor, cur: int) -> tuple[int | None, bool]:
        """Pick row ``item``'s next token; ``(token or None when it stopped, still running)``."""
        if self.logits is not None:
            self.logits[item].append(row_logits.detach().float().cpu())
        t = int(row_logits.argmax(-1))
        if t in self.stops:
            return None, False
        self.results[item].append(t)
        done = (self.stop_at_newline and self.ends_line(t)) or cur + 1 >= self.n_ctx
        return t, not done


def _bridge_forward(model, ids, hooks, **kwargs) -> Tensor:
    ctx = model.hooks(fwd_hooks=list(hooks)) if hooks else nullcontext()
    with ctx:
        return model(ids, return_type="logits", **kwargs)


def _uncached(model, seqs, idx, dec: _Decoder, *, max_new_tokens, fwd_hooks, device, pad) -> None:
    """The reference loop: right-padded, every step re-runs the whole sequence (rows ``idx`` of ``seqs``)."""
    group = list(idx)
    width = max(len(seqs[i]) for i in group) + max_new_tokens
    ids = torch.full((len(group), width), pad, dtype=torch.long)
    cur = [len(seqs[i]) for i in group]
    for j, i in enumerate(group):
        ids[j, : cur[j]] = torch.tensor(seqs[i], dtype=torch.long)
    active = list(range(len(group)))
    hooks = hooks_for(fwd_hooks, group)
    for _ in range(max_new_tokens):
        if not active:
            break
        w = max(cur[j] for j in active)
        batch = ids[:, :w] if len(active) == len(group) else ids[active, :w]
        last = torch.tensor([cur[j] - 1 for j in active])  # only the last token of each row is unembedded
        logits = forward_rows(model, batch.to(device), torch.arange(len(active)), last, hooks)
        still = []
        for r, j in enumerate(active):
            t, going = dec.step(group[j], logits[r], cur[j])
            if t is None:
                continue
            ids[j, cur[j]] = t
            cur[j] += 1
            if going:
                still.append(j)
        if len(still) != len(active) and still:
            hooks = hooks_for(fwd_hooks, [group[j] for j in still])
        active = still


def _plain_cache(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer).__name__ == "DynamicLayer" and getattr(layer, "keys", None) is not None for layer in layers
    )


def _cached(model, runner, seqs, idx, dec: _Decoder, *, max_new_tokens, fwd_hooks, device, pad) -> bool:
    """The cached loop on rows ``idx``; False (nothing recorded) when the cache cannot be laid out."""
    from transformers.cache_utils import DynamicCache

    group = list(idx)
    lens = [len(seqs[i]) for i in group]
    W = max(lens)
    ids = torch.full((len(group), W), pad, dtype=torch.long)
    for j, i in enumerate(group):
        ids[j, : lens[j]] = torch.tensor(seqs[i], dtype=torch.long)
    cache = DynamicCache()
    hooks = hooks_for(fwd_hooks, group)
    # the prompt: exactly the uncached path's first forward (no mask, right padding), filling the cache;
    # unembedded only at each row's last token
    logits = runner(ids.to(device), hooks, cache=cache, rows=(torch.arange(len(group)), torch.tensor(lens) - 1))
    if not _plain_cache(cache):
        return False  # sliding-window or recurrent layers: columns are not positions
    rows = list(range(len(group)))  # rows of the cache, in order; entries index ``group``
    cur = list(lens)
    last: dict[int, int] = {}
    still = _advance(dec, group, rows, lambda r, j: logits[r], cur, last)
    steps = 0  # decoding forwards run so far (cache columns beyond the prompt)
    while still and steps + 1 < max_new_tokens:
        if len(still) != len(rows):
            keep_rows = torch.tensor([rows.index(j) for j in still], device=device)
            for layer in cache.layers:
                layer.batch_select_indices(keep_rows)
            hooks = hooks_for(fwd_hooks, [group[j] for j in still])
        rows = still
        cols = W + steps + 1  # cache columns after this step's token
        new = torch.tensor([[last[j]] for j in rows], dtype=torch.long, device=device)
        pos = torch.tensor([[cur[j] - 1] for j in rows], dtype=torch.long, device=device)
        # absolute position of every cache column: the prompt, its padding (-1), the generated tokens
        c = torch.arange(cols, device=device)[None, :]
        length = torch.tensor([[lens[j]] for j in rows], dtype=torch.long, device=device)
        key = torch.where(c < length, c, torch.where(c >= W, length + c - W, -1))
        with position_layout(Layout(query=pos, key=key)):
            logits = runner(new, hooks, cache=cache, attention_mask=(key >= 0).long(), position_ids=pos)
        steps += 1
        still = _advance(dec, group, rows, lambda r, j: logits[r], cur, last)  # noqa: B023 (called in this step)
    return True


def _advance(
    dec,
    group: list[int],
    rows: list[int],
    row_logits: Callable[[int, int], Tensor],
    cur: list[int],
    last: dict[int, int],
) -> list[int]:
    """One decoding step of the cached path: each of ``rows`` (indices into ``group``; ``r`` its
    row in the batch) picks its next token from ``row_logits(r, j)``; ``last[j]`` and ``cur[j]``
    (its length) advance. Returns the rows still generating."""
    still = []
    for r, j in enumerate(rows):
        t, going = dec.step(group[j], row_logits(r, j), cur[j])
        if t is None:
            continue
        last[j] = t
        cur[j] += 1
        if going:
            still.append(j)
    return still


def _cache_arg(hf) -> str:
    """What the HF model's forward calls its cache (transformers >= 5.2x: ``cache``)."""
    params = inspect.signature(hf.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _bridge_runner(model):
    arg = _cache_arg(model.original_model)  # handed through the bridge's **kwargs to HF under HF's own name

    def run(ids, hooks, *, cache, rows=None, **kwargs):
        if rows is None:  # one new token per row: its logits
            return _bridge_forward(model, ids, hooks, use_cache=True, logits_to_keep=1, **{arg: cache}, **kwargs)[:, -1]
        with logits_at(model, *rows) as take:
            return take(_bridge_forward(model, ids, hooks, use_cache=True, **{arg: cache}, **kwargs))

    return run


def _hf_runner(hf):
    cache_arg = _cache_arg(hf)

    def run(ids, hooks, *, cache, rows=None, **kwargs):
        if hooks:
            raise ValueError("hooks need a TransformerLens bridge")
        if rows is None:  # one new token per row: its logits
            return hf(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_arg: cache}, **kwargs).logits[:, -1]
        with logits_at(hf, *rows) as take:
            return take(hf(input_ids=ids, use_cache=True, **{cache_arg: cache}, **kwargs).logits)

    return run


def _runner(model, fwd_hooks):
    """The forward of the cached loop, or None when it must not be used (then: uncached)."""
    if not _is_bridge(model):
        return None if (hasattr(model, "hooks") or fwd_hooks) else _hf_runner(model)
    if fwd_hooks is None:
        try:
            return _hf_runner(plain_hf_model(model))
        except ModelLoadError:
            pass
    return _bridge_runner(model) if kv_cache_ok(model) else None


def greedy_tokens(
    model,
    seqs: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    fwd_hooks=None,
    max_batch_tokens: int | None = None,
    stop_at_newline: bool = True,
    cache: bool = True,
    keep_logits: bool = False,
    stop_at_eos: bool = True,
) -> tuple[list[list[int]], list[Float[Tensor, "steps vocab"]] | None]:
    """Greedy continuation tokens of token sequences (BOS included), batched, with or without a KV cache.

    Returns ``(tokens per row, logits per row or None)``; with ``keep_logits`` each
    row's logits are ``[steps, vocab]`` (float32, on the CPU), the distribution each
    step chose from. ``fwd_hooks`` is a hook list or a callable of the batch's item
    indices, called again with the still-running subset whenever rows finish (see
    :func:`unpact.scoring.greedy_generate`). ``cache=False`` is the uncached
    reference path; ``cache=True`` falls back to it for a bridge whose cache failed
    :func:`prepare_generation`'s check and for caches that are not plain
    (sliding-window) per-layer key/value tensors. ``stop_at_eos=False`` generates
    exactly ``max_new_tokens`` per row unless a newline or the context ends it.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> toks, _ = greedy_tokens(model, [[0, 11, 12, 13]], max_new_tokens=4)   # doctest: +SKIP
    """
    budget = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
    seqs = [list(s) for s in seqs]
    dec = _Decoder(model, len(seqs), stop_at_newline, keep_logits, stop_at_eos)
    device = next(iter(model.parameters())).device
    pad = pad_id(model.tokenizer)
    runner = _runner(model, fwd_hooks) if cache and max_new_tokens > 0 else None
    lengths = [len(s) + max_new_tokens for s in seqs]
    with torch.no_grad():
        for group in chunks(lengths, budget):
            if runner is not None and _cached(
                model,
                runner,
                seqs,
                group,
                dec,
                max_new_tokens=max_new_tokens,
                fwd_hooks=fwd_hooks,
                device=device,
                pad=pad,
            ):
                continue
            _uncached(
                model, seqs, group, dec, max_new_tokens=max_new_tokens, fwd_hooks=fwd_hooks, device=device, pad=pad
            )
    logits = [torch.stack(r) if r else torch.empty(0) for r in dec.logits] if dec.logits is not None else None
    return dec.results, logits
