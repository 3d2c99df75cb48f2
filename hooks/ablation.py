"""Zero or mean ablation of an activation at chosen positions.

Attach to any ``[batch pos ...]`` hook: ``blocks.{l}.hook_resid_pre/post``,
``hook_attn_out``, ``hook_mlp_out``, ``hook_embed``, ``blocks.{l}.attn.hook_z``
(with ``heads``). Positions outside the named ones are untouched.

``mean`` ablation replaces the activation by ``value`` (a tensor broadcastable
to one position's activation, e.g. ``[d_model]``, typically a mean over a
reference set from :func:`mean_activation`); without ``value`` it uses the mean
over the current batch's unselected positions.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> hooks = ablation_hooks(["blocks.0.hook_resid_post"], positions=[2], mode="zero")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

from unpact.hooks.positions import Positions, position_mask
from unpact.hooks.residual import act_mask


def ablate(
    act: Tensor,
    hook=None,
    *,
    positions: Positions,
    mode: str = "zero",
    value: Tensor | None = None,
    heads: Sequence[int] | None = None,
) -> Tensor:
    """Hook function: set ``act`` at ``positions`` to 0 (``mode="zero"``) or a mean (``mode="mean"``)."""
    m = act_mask(act, positions, heads)
    if mode == "zero":
        fill = torch.zeros((), dtype=act.dtype, device=act.device)
    elif mode == "mean":
        if value is not None:
            fill = value.to(device=act.device, dtype=act.dtype)
        else:
            rest = ~position_mask(positions, act.shape[0], act.shape[1], act.device, axis="query")
            fill = act[rest].mean(0) if rest.any() else act.reshape(-1, *act.shape[2:]).mean(0)
    else:
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    return torch.where(m, fill, act)


def ablation_hooks(
    names: Sequence[str],
    positions: Positions,
    mode: str = "zero",
    value: Tensor | dict[str, Tensor] | None = None,
    heads: Sequence[int] | None = None,
) -> list[tuple[str, Callable]]:
    """``[(name, fn)]`` ablating each hook in ``names`` at ``positions``.

    ``value`` is one tensor for all names or a dict name -> tensor (mean ablation).
    """
    out = []
    for n in names:
        v = value.get(n) if isinstance(value, dict) else value
        out.append((n, partial(ablate, positions=positions, mode=mode, value=v, heads=heads)))
    return out


def mean_activation(model, tokens, name: str, lengths: Sequence[int] | None = None) -> Float[Tensor, ...]:
    """Mean of activation ``name`` over the real (unpadded) positions of ``tokens`` [batch pos]."""
    store: dict[str, Tensor] = {}

    def grab(act, hook):
        store["a"] = act.detach()
        return act

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, grab)]):
        model(tokens, return_type="logits")
    a = store["a"]
    if lengths is None:
        return a.reshape(-1, *a.shape[2:]).mean(0)
    keep = torch.arange(a.shape[1], device=a.device)[None, :] < torch.as_tensor(list(lengths), device=a.device)[:, None]
    return a[keep].mean(0)
