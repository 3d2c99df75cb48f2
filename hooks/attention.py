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

Example:
    >>> hooks = attention_scaling_hooks(layers=[0, 1], positions=[3, 4], factor=4.0)   # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=hooks):                                             # doctest: +SKIP
    ...     logits = model(tokens)
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from unpact.hooks.positions import Positions, head_mask, position_mask


def attention_pattern_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_pattern``."""
    return f"blocks.{layer}.attn.hook_pattern"


def scale_attention(
    pattern: Float[Tensor, "batch head q k"],
    hook=None,
    *,
    positions: Positions,
    factor: float,
    heads: Sequence[int] | None = None,
) -> Float[Tensor, "batch head q k"]:
    """Hook function on ``hook_pattern``: multiply attention to ``positions`` by ``factor``, renormalise."""
    if factor == 1:
        return pattern
    if factor < 0:
        raise ValueError(f"the attention factor must be >= 0, got {factor}")
    b, n_heads, _q, k = pattern.shape
    keys = position_mask(positions, b, k, pattern.device)  # [b k]
    w = torch.where(keys, torch.tensor(float(factor), dtype=pattern.dtype, device=pattern.device),
                    torch.tensor(1.0, dtype=pattern.dtype, device=pattern.device))
    scaled = pattern * w[:, None, None, :]
    total = scaled.sum(-1, keepdim=True)
    on_keys = (pattern * keys[:, None, None, :]).sum(-1, keepdim=True) > 0
    ok = on_keys & (total > 0)
    new = scaled / torch.where(ok, total, torch.ones_like(total))
    sel = ok & head_mask(heads, n_heads, pattern.device)[None, :, None, None]
    return torch.where(sel, new, pattern)


def attention_scaling_hooks(
    layers: Sequence[int],
    positions: Positions,
    factor: float,
    heads: Sequence[int] | None = None,
) -> list[tuple[str, Callable]]:
    """``[(blocks.{l}.attn.hook_pattern, fn)]`` scaling attention to ``positions`` by ``factor``.

    ``heads`` picks heads (all when None), the same in every listed layer. Empty for
    ``factor == 1`` (nothing to attach).
    """
    if factor == 1:
        return []
    fn = partial(scale_attention, positions=positions, factor=float(factor), heads=heads)
    return [(attention_pattern_name(l), fn) for l in layers]
