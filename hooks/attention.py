"""Scale the attention that queries pay to chosen key positions (renormalised).

Hook name: ``blocks.{l}.attn.hook_pattern``, shape ``[batch head q k]`` (the
post-softmax pattern). On TransformerBridge the attention output is computed from
the *hooked* pattern (``hook_z = pattern @ v``; unpact's tests check it), so
editing it changes the model's output.

For each row (batch, head, query) that pays any attention to the chosen keys:

    pattern'[k] = pattern[k] * w[k] / sum_j pattern[j] * w[j],  w = factor at the keys, 1 elsewhere

which equals adding ``log(factor)`` to those keys' scores before the softmax.
Rows stay normalised; rows with no weight on the keys (e.g. queries before the
first keyword) are returned bit-for-bit unchanged; ``factor == 1`` returns the
input tensor itself (an exact no-op). It applies to every query position,
including tokens generated after the prompt.

``factor`` may also be a tensor ``[batch]``: one factor per row, so one batched
forward runs several settings side by side (rows with factor 1 are returned bit
for bit unchanged, rows with factor f equal a separate run with factor f).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> hooks = attention_scaling_hooks(layers=[0, 1], positions=[3, 4], factor=4.0)   # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=hooks):                                             # doctest: +SKIP
    ...     logits = model(tokens)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

from unpact.hooks.names import act_name
from unpact.hooks.positions import Factor, Positions, check_factor, head_mask, position_mask, row_factors


def attention_pattern_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_pattern``."""
    return act_name("pattern", layer)


def scale_attention(
    pattern: Float[Tensor, "batch head q k"],
    hook=None,
    *,
    positions: Positions,
    factor: Factor,
    heads: Sequence[int] | None = None,
) -> Float[Tensor, "batch head q k"]:
    """Hook function on ``hook_pattern``: multiply attention to ``positions`` by ``factor``, renormalise.

    ``factor``: a number, or a tensor ``[batch]`` of per-row factors.
    """
    if not isinstance(factor, Tensor) and factor == 1:
        return pattern
    check_factor(factor, "attention")
    b, n_heads, _q, k = pattern.shape
    keys = position_mask(positions, b, k, pattern.device, axis="key")  # [b k]
    hm = head_mask(heads, n_heads, pattern.device)
    if not isinstance(factor, Tensor):
        f = torch.tensor(float(factor), dtype=pattern.dtype, device=pattern.device)
        return _rescale(pattern, keys, f, hm)
    f = row_factors(factor, b, pattern.dtype, pattern.device)
    rows = (f != 1).nonzero().squeeze(-1)  # only these rows change; the others pass bit for bit
    if rows.numel() == 0:
        return pattern
    if rows.numel() == b:
        return _rescale(pattern, keys, f[:, None], hm)
    return pattern.index_copy(0, rows, _rescale(pattern[rows], keys[rows], f[rows][:, None], hm))


def _rescale(pattern: Tensor, keys: Tensor, f: Tensor, hm: Tensor) -> Tensor:
    """``pattern`` with attention to ``keys`` [b k] multiplied by ``f`` (a scalar or [b 1]), rows renormalised."""
    w = torch.where(keys, f, torch.tensor(1.0, dtype=pattern.dtype, device=pattern.device))
    scaled = pattern * w[:, None, None, :]
    total = scaled.sum(-1, keepdim=True)
    on_keys = (pattern * keys[:, None, None, :]).sum(-1, keepdim=True) > 0
    ok = on_keys & (total > 0)
    new = scaled / torch.where(ok, total, torch.ones_like(total))
    sel = ok & hm[None, :, None, None]
    return torch.where(sel, new, pattern)


def attention_scaling_hooks(
    layers: Sequence[int],
    positions: Positions,
    factor: Factor,
    heads: Sequence[int] | None = None,
) -> list[tuple[str, Callable]]:
    """``[(blocks.{l}.attn.hook_pattern, fn)]`` scaling attention to ``positions`` by ``factor``.

    ``factor`` is a number or a tensor ``[batch]`` of per-row factors. ``heads`` picks
    heads (all when None), the same in every listed layer. Empty when every factor
    is 1 (nothing to attach).
    """
    if isinstance(factor, Tensor):
        if bool((factor == 1).all()):
            return []
        check_factor(factor, "attention")
    elif factor == 1:
        return []
    else:
        factor = float(factor)
    fn = partial(scale_attention, positions=positions, factor=factor, heads=heads)
    return [(attention_pattern_name(l), fn) for l in layers]
