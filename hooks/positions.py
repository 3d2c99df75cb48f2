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

Example:
    >>> position_mask([1, 3], batch=2, width=5, device="cpu").int().tolist()
    [[0, 1, 0, 1, 0], [0, 1, 0, 1, 0]]
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from jaxtyping import Bool, Float
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


def position_mask(positions: Positions, batch: int, width: int, device=None) -> Bool[Tensor, "batch pos"]:
    """Boolean mask ``[batch, width]`` of the positions a hook acts on."""
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
