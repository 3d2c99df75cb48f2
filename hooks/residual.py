"""Scale the residual stream, or one component's output, at chosen positions.

Hook names (all ``[batch pos d_model]``): ``blocks.{l}.hook_resid_pre``,
``blocks.{l}.hook_resid_mid``, ``blocks.{l}.hook_resid_post``,
``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_mlp_out``; also
``blocks.{l}.attn.hook_z`` and ``blocks.{l}.attn.hook_v`` ``[batch pos head d_head]``
(``heads`` selects heads there; hook_v has the key/value heads).

Mind that in a pre-LayerNorm model scaling the *whole* residual stream at a
position is invisible to the next layer's attention and MLP at that position
(LN(c x) = LN(x)); it only changes how much later layers' updates weigh against
it. Scaling ``hook_v`` (what heads read from those positions) or a component's
output changes the computation directly.

Only the named positions (and heads) change, bit for bit; ``factor == 1`` returns
the input tensor itself. ``factor`` may be a tensor ``[batch]`` of per-row
factors (rows with factor 1 unchanged bit for bit), so several settings share one
batched forward.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> hooks = residual_scaling_hooks(layers=[2], positions=[3, 4], factor=2.0, site="resid_post")  # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=hooks):                                                          # doctest: +SKIP
    ...     logits = model(tokens)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from unpact.hooks.names import act_name
from unpact.hooks.positions import Factor, Positions, check_factor, head_mask, position_mask, row_factors

#: Residual-stream sites (TransformerLens activation names, see :func:`unpact.hooks.names.act_name`).
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "v")


def site_name(site: str, layer: int) -> str:
    """The hook name of ``site`` (a key of :data:`SITES`) at ``layer``."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    return act_name(site, layer)


def act_mask(act: Tensor, positions: Positions, heads: Sequence[int] | None = None) -> Tensor:
    """Boolean mask broadcastable to ``act`` ([batch pos ...]) selecting positions (and heads)."""
    m = position_mask(positions, act.shape[0], act.shape[1], act.device, axis="query")
    m = m.reshape(m.shape + (1,) * (act.ndim - 2))
    if heads is not None:
        if act.ndim != 4:
            raise ValueError("heads need a per-head activation [batch pos head d_head] such as hook_z")
        m = m & head_mask(heads, act.shape[2], act.device)[None, None, :, None]
    return m


def scale_positions(
    act: Tensor, hook=None, *, positions: Positions, factor: Factor, heads: Sequence[int] | None = None
) -> Tensor:
    """Hook function: ``act * factor`` at ``positions`` (and ``heads``), unchanged elsewhere.

    ``factor``: a number, or a tensor ``[batch]`` of per-row factors.
    """
    if isinstance(factor, Tensor):
        f = row_factors(factor, act.shape[0], act.dtype, act.device)
        rows = (f != 1).nonzero().squeeze(-1)  # only these rows change; the others pass bit for bit
        if rows.numel() == 0:
            return act
        f = f.reshape(f.shape + (1,) * (act.ndim - 1))
        mask = act_mask(act, positions, heads)
        if rows.numel() == act.shape[0]:
            return torch.where(mask, act * f, act)
        sub = act[rows]
        mask = mask.expand(act.shape[0], *mask.shape[1:])[rows]
        return act.index_copy(0, rows, torch.where(mask, sub * f[rows], sub))
    if factor == 1:
        return act
    return torch.where(act_mask(act, positions, heads), act * factor, act)


def residual_scaling_hooks(
    layers: Sequence[int],
    positions: Positions,
    factor: Factor,
    site: str = "resid_post",
    heads: Sequence[int] | None = None,
) -> list[tuple[str, Callable]]:
    """``[(site hook name at layer l, fn)]`` scaling the activation at ``positions`` by ``factor``.

    ``factor`` is a number or a tensor ``[batch]`` of per-row factors; empty when every factor is 1.
    """
    if isinstance(factor, Tensor):
        if bool((factor == 1).all()):
            return []
        check_factor(factor, "scaling")
    elif factor == 1:
        return []
    else:
        factor = float(factor)
    fn = partial(scale_positions, positions=positions, factor=factor, heads=heads)
    return [(site_name(site, l), fn) for l in layers]
