"""Positions a hook acts on: one list for every row, per-row lists, or a boolean mask.

Every hook in :mod:`unpact.hooks` takes ``positions`` in one of three forms and
turns it into a boolean mask ``[batch pos]`` of the width of the activation it
sees (:func:`position_mask`):

* a sequence of ints, the same absolute positions for every row;
* a sequence of sequences of ints, one list per row (ragged);
* a boolean tensor ``[batch pos]``; it is padded with False (or cut) to the
  activation's width, so a mask built for a prompt keeps working while greedy
  generation appends tokens after it.

Positions are absolute (unpact's scoring convention: BOS at 0, right padding),
so position 5 is the same token in every forward of a generation loop.
Positions at or beyond the activation's width are ignored.

Under a KV cache a forward sees only the new tokens (``[batch new ...]``) while
attention patterns span every cached key (``[batch head new keys]``), and the
columns need not be the absolute positions (padding between a row's prompt and
its generated tokens). The generation loop then declares, for the duration of
the forward, which absolute position each query column and each key column
holds (:func:`position_layout`); :func:`position_mask` with ``axis="query"`` or
``axis="key"`` maps the positions through it, so every hook in ``unpact.hooks``
acts on the same tokens with or without a cache. A hook of your own that
indexes positions should build its mask with :func:`position_mask` too.

Example:
    >>> position_mask([1, 3], batch=2, width=5, device="cpu").int().tolist()
    [[0, 1, 0, 1, 0], [0, 1, 0, 1, 0]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Union

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

Positions = Union[Sequence[int], Sequence[Sequence[int]], Bool[Tensor, "batch pos"]]
#: A scaling factor: one number for every row, or a tensor ``[batch]`` of per-row factors.
Factor = Union[float, Float[Tensor, " batch"]]


def row_factors(factor: Tensor, batch: int, dtype, device) -> Float[Tensor, " batch"]:
    """A per-row factor tensor checked against the batch and cast to the activation's dtype/device."""
    f = factor.to(device=device, dtype=dtype).reshape(-1)
    if f.shape[0] != batch:
        raise ValueError(f"{f.shape[0]} per-row factors but the batch has {batch} rows")
    return f


def check_factor(factor, what: str = "scaling") -> None:
    """Raise ValueError for a negative factor (a number or any entry of a tensor)."""
    bad = bool((factor < 0).any()) if isinstance(factor, Tensor) else factor < 0
    if bad:
        raise ValueError(f"the {what} factor must be >= 0, got {factor}")


@dataclass(frozen=True)
class Layout:
    """Absolute position held by each column of the current forward (-1: padding).

    ``query``: ``[batch new]``, the positions of the activations' ``pos`` axis;
    ``key``: ``[batch keys]``, the positions of an attention pattern's key axis.
    """

    query: Int[Tensor, "batch new"]
    key: Int[Tensor, "batch keys"]


_LAYOUT: ContextVar[Layout | None] = ContextVar("unpact_position_layout", default=None)


@contextmanager
def position_layout(layout: Layout | None) -> Iterator[None]:
    """Declare the column -> absolute position layout of the forwards run inside (None: identity).

    Example:
        >>> lay = Layout(query=torch.tensor([[7]]), key=torch.tensor([[0, 1, 2, -1, 7]]))
        >>> with position_layout(lay):
        ...     position_mask([2, 7], 1, 1, axis="query").tolist(), position_mask([2, 7], 1, 5, axis="key").tolist()
        ([[True]], [[False, False, True, False, True]])
    """
    token = _LAYOUT.set(layout)
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def current_layout() -> Layout | None:
    """The layout declared by :func:`position_layout` (None outside cached generation)."""
    return _LAYOUT.get()


def position_mask(
    positions: Positions, batch: int, width: int, device=None, axis: str | None = None
) -> Bool[Tensor, "batch pos"]:
    """Boolean mask ``[batch, width]`` of the positions a hook acts on.

    ``axis`` (``"query"`` for an activation's ``pos`` axis, ``"key"`` for an attention
    pattern's key axis) maps columns to absolute positions through the layout of a
    cached generation step (:func:`position_layout`); without a layout, or with
    ``axis=None``, column i is position i.
    """
    layout = _LAYOUT.get() if axis is not None else None
    if layout is not None:
        cols = layout.query if axis == "query" else layout.key
        if cols.shape != (batch, width):
            raise ValueError(
                f"the position layout's {axis} axis is {tuple(cols.shape)} but the activation is [{batch}, {width}]"
            )
        cols = cols.to(device)
        top = int(cols.max()) + 1 if cols.numel() else 1
        full = _plain_mask(positions, batch, max(top, 1), device)
        got = full.gather(1, cols.clamp(min=0))
        return got & (cols >= 0)
    return _plain_mask(positions, batch, width, device)


def _plain_mask(positions: Positions, batch: int, width: int, device=None) -> Bool[Tensor, "batch pos"]:
    if isinstance(positions, Tensor):
        m = positions.to(device=device, dtype=torch.bool)
        if m.ndim == 1:
            m = m.unsqueeze(0).expand(batch, -1)
        if m.ndim != 2:
            raise ValueError(f"a position mask must be [batch pos], got shape {tuple(m.shape)}")
        if m.shape[0] != batch:
            raise ValueError(f"the position mask has {m.shape[0]} rows but the batch has {batch}")
        if m.shape[1] >= width:
            return m[:, :width]
        pad = torch.zeros((batch, width - m.shape[1]), dtype=torch.bool, device=m.device)
        return torch.cat([m, pad], dim=1)
    mask = torch.zeros((batch, width), dtype=torch.bool)
    pos = list(positions)
    if pos and not isinstance(pos[0], (int,)) and hasattr(pos[0], "__iter__"):
        if len(pos) != batch:
            raise ValueError(f"{len(pos)} per-row position lists but the batch has {batch} rows")
        for r, row in enumerate(pos):
            for p in row:
                _check(p)
                if p < width:
                    mask[r, p] = True
    else:
        for p in pos:
            _check(p)
            if p < width:
                mask[:, p] = True
    return mask.to(device) if device is not None else mask


def _check(p) -> None:
    if int(p) != p or p < 0:
        raise ValueError(f"positions are absolute non-negative ints, got {p!r}")


def head_mask(heads: Sequence[int] | None, n_heads: int, device=None) -> Bool[Tensor, " head"]:
    """Boolean mask over heads (all heads when ``heads`` is None)."""
    m = torch.zeros(n_heads, dtype=torch.bool, device=device)
    if heads is None:
        m[:] = True
        return m
    for h in heads:
        if not 0 <= h < n_heads:
            raise ValueError(f"head {h} out of range: the layer has {n_heads} heads")
        m[h] = True
    return m
