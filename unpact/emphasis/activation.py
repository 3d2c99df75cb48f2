"""Activation emphasis: scale attention to (or the residual stream at) the keywords' positions.

An :class:`ActivationEmphasis` names one intervention: its kind (``"attention"``:
multiply the attention every query pays to the keyword positions by ``factor``
and renormalise, on ``blocks.{l}.attn.hook_pattern``; ``"value"``: multiply the
value vectors of the keyword positions, i.e. what every head reads from them, on
``blocks.{l}.attn.hook_v``; ``"residual"``: multiply the residual stream (or a
component's output) at the keyword positions by ``factor``, on
``blocks.{l}.hook_{site}``; in pre-LN models the whole residual at a position is
scale-invariant to the next layer's norm, so this one is weak), the factor, and the layers (a named layer set or
explicit indices) and heads. The kinds are registered in :data:`KINDS` (:func:`register_kind`). :func:`emphasis_hooks` turns it, with per-item
keyword positions in the *original* prompt, into the ``fwd_hooks`` callable that
``unpact.scoring`` passes each batch's item indices to. :func:`sweep` lists the
default grid: factors 1, 2, 4, 8 x layer sets all/early/middle/late.

Generation (``greedy_generate``) keeps the prompt positions the same tokens at
every step: with its KV cache (the default, :mod:`unpact.generation`) the prompt's
keys and values are computed under the hooks once and every generated token's
query still has its attention to the keyword columns scaled; ``cache=False``
re-runs the whole sequence every step (same numbers within float error).

Example:
    >>> e = ActivationEmphasis("attention", factor=4.0, layers="middle")
    >>> e.name
    'attention x4 @ middle'
    >>> layer_set(6, "middle")
    [2, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from unpact.errors import ConfigError
from unpact.hooks import attention_scaling_hooks, position_mask, residual_scaling_hooks
from unpact.registry import Registry

#: Named layer sets: thirds of the stack (early/middle/late) or all of it.
LAYER_SETS: tuple[str, ...] = ("all", "early", "middle", "late")
DEFAULT_FACTORS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class EmphasisKind:
    """A registered kind of activation emphasis.

    Attributes:
        name: its name (``ActivationEmphasis.kind``, ``emphasis.kinds`` in the config).
        description: one line: what it scales, on which hook points.
        hooks: ``hooks(layers, positions, factor, heads, site) -> [(hook_name, fn)]``; ``factor``
            is a number or a per-row tensor ``[batch]`` (rows at 1 pass unchanged).
        uses_site: the kind reads ``site`` (settings differing only in site differ).
    """

    name: str
    description: str
    hooks: Callable[..., list]
    uses_site: bool = False


#: name -> :class:`EmphasisKind`; add one with :func:`register_kind`.
KINDS: Registry[EmphasisKind] = Registry("activation emphasis kind")


def register_kind(name: str, description: str, *, uses_site: bool = False) -> Callable:
    """Register ``fn(layers, positions, factor, heads, site) -> [(hook_name, fn)]`` as activation
    emphasis kind ``name`` (a decorator). ``ActivationEmphasis(kind=name)``, ``emphasis.kinds``
    and ``unpact recover --kinds`` then accept it.

    Example:
        >>> sorted(KINDS)
        ['attention', 'residual', 'value']
        >>> get_kind("attention").description
        'scale the attention every query pays to the keyword positions (blocks.{l}.attn.hook_pattern)'
    """

    def deco(fn: Callable[..., list]) -> Callable[..., list]:
        KINDS.add(name, EmphasisKind(name, description, fn, uses_site))
        return fn

    return deco


def get_kind(name: str) -> EmphasisKind:
    """The registered kind ``name``; an unknown name is a :class:`ConfigError` listing the known ones.

    Example:
        >>> get_kind("gain")
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown activation emphasis kind 'gain'; known: attention, value, residual
    """
    return KINDS.get(name)


@register_kind(
    "attention", "scale the attention every query pays to the keyword positions (blocks.{l}.attn.hook_pattern)"
)
def _attention(layers, positions, factor, heads, site):
    return attention_scaling_hooks(layers, positions, factor, heads=heads)


@register_kind(
    "value",
    "scale the value vectors at the keyword positions: what every head reads from them (blocks.{l}.attn.hook_v)",
)
def _value(layers, positions, factor, heads, site):
    return residual_scaling_hooks(layers, positions, factor, site="v", heads=heads)


@register_kind(
    "residual",
    "scale the residual stream (or a component's output) at the keyword positions (blocks.{l}.hook_{site})",
    uses_site=True,
)
def _residual(layers, positions, factor, heads, site):
    return residual_scaling_hooks(layers, positions, factor, site=site, heads=heads)


def layer_set(n_layers: int, name: str | Sequence[int]) -> list[int]:
    """The layer indices of a named set (``all``, ``early``, ``middle``, ``late``) or explicit indices.

    The stack is cut into thirds, the middle third getting the remainder, so every
    set is non-empty for ``n_layers >= 3`` (with fewer layers early/late overlap middle).

    Example:
        >>> [layer_set(4, s) for s in ("early", "middle", "late")]
        [[0], [1, 2], [3]]
        >>> layer_set(4, "1,3")
        [1, 3]
    """
    if not isinstance(name, str):
        layers = [int(x) for x in name]
    elif name == "all":
        return list(range(n_layers))
    elif name in ("early", "middle", "late"):
        third = max(1, n_layers // 3)
        if n_layers < 3:
            return {"early": [0], "middle": list(range(n_layers)), "late": [n_layers - 1]}[name]
        return {
            "early": list(range(third)),
            "middle": list(range(third, n_layers - third)),
            "late": list(range(n_layers - third, n_layers)),
        }[name]
    else:
        try:
            layers = [int(x) for x in name.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"unknown layer set {name!r}; use one of {', '.join(LAYER_SETS)} or indices like '0,2'"
            ) from None
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad or not layers:
        raise ConfigError(f"layers {bad or layers} out of range: the model has {n_layers} layers")
    return layers


@dataclass(frozen=True)
class ActivationEmphasis:
    """One activation intervention at the keyword positions (see the module docstring)."""

    kind: str = "attention"
    factor: float = 2.0
    layers: str | tuple[int, ...] = "all"
    heads: tuple[int, ...] | None = None
    site: str = "resid_post"

    def __post_init__(self) -> None:
        get_kind(self.kind)
        if self.factor < 0:
            raise ConfigError(f"the emphasis factor must be >= 0, got {self.factor}")

    @property
    def name(self) -> str:
        layers = self.layers if isinstance(self.layers, str) else ",".join(map(str, self.layers))
        heads = "" if self.heads is None else " heads " + ",".join(map(str, self.heads))
        kind = f"{self.kind}[{self.site}]" if get_kind(self.kind).uses_site else self.kind
        return f"{kind} x{self.factor:g} @ {layers}{heads}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        d["name"] = self.name
        return d

    def hooks(self, n_layers: int, positions) -> list[tuple[str, Callable]]:
        """``[(hook_name, fn)]`` for these ``positions`` (a list, per-row lists or a mask)."""
        return KINDS[self.kind].hooks(layer_set(n_layers, self.layers), positions, self.factor, self.heads, self.site)


def emphasis_hooks(
    model, emphasis: ActivationEmphasis, positions: Sequence[Sequence[int]]
) -> Callable[[list[int]], list]:
    """The ``fwd_hooks`` callable for ``unpact.scoring``: batch item indices -> hooks at their positions.

    ``positions[i]`` are item i's keyword positions in its (original) prompt, BOS at 0.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> fh = emphasis_hooks(model, ActivationEmphasis(factor=4), [[3, 4], [5]])      # doctest: +SKIP
        >>> greedy_generate(model, prompts, fwd_hooks=fh)                                # doctest: +SKIP
    """
    n_layers = model.cfg.n_layers

    def for_batch(idx: list[int]) -> list:
        return emphasis.hooks(n_layers, [list(positions[i]) for i in idx])

    return for_batch


def batched_emphasis_hooks(
    model,
    settings: Sequence[ActivationEmphasis | None],
    positions: Sequence[Sequence[int]],
) -> Callable[[list[int]], list]:
    """One ``fwd_hooks`` callable for items that each carry their own setting (or None: untouched).

    Item i is emphasised by ``settings[i]`` at ``positions[i]``. For a batch, each
    hook point gets one hook per (kind, site, heads) present, with a per-row factor
    tensor: the row's factor where its setting names that layer, 1 elsewhere (rows
    with factor 1 pass bit for bit unchanged). So a batch mixing settings (and plain
    rows) computes, row by row, what :func:`emphasis_hooks` computes setting by setting.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> fh = batched_emphasis_hooks(model, [ActivationEmphasis(factor=4), None], [[3, 4], [3, 4]])  # doctest: +SKIP
        >>> greedy_generate(model, prompts, fwd_hooks=fh)     # row 0 emphasised, row 1 plain     # doctest: +SKIP
    """
    if len(settings) != len(positions):
        raise ValueError(f"{len(settings)} settings but {len(positions)} position lists")
    n_layers = model.cfg.n_layers
    layers_of = {s: frozenset(layer_set(n_layers, s.layers)) for s in set(settings) if s is not None}

    def for_batch(idx: list[int]) -> list:
        rows = [settings[i] for i in idx]
        pos = _mask([positions[i] for i in idx])  # built once per batch, shared by every hook
        groups: dict[tuple, list[int]] = {}
        for j, s in enumerate(rows):
            if s is not None and s.factor != 1:
                groups.setdefault((s.kind, s.site if KINDS[s.kind].uses_site else None, s.heads), []).append(j)
        hooks: list = []
        for (kind, site, heads), js in groups.items():
            for layer in range(n_layers):
                f = torch.ones(len(idx))
                for j in js:
                    if layer in layers_of[rows[j]]:
                        f[j] = rows[j].factor
                if bool((f == 1).all()):
                    continue
                hooks += KINDS[kind].hooks([layer], pos, f, heads, site)
        return hooks

    return for_batch


def _mask(positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boolean ``[batch, 1 + last position]`` mask of per-row positions (hooks pad it to their width)."""
    width = 1 + max((max(p) for p in positions if len(p)), default=0)
    return position_mask([list(p) for p in positions], len(positions), width)


def sweep(
    factors: Sequence[float] = DEFAULT_FACTORS,
    layer_sets: Sequence[str] = LAYER_SETS,
    kinds: Sequence[str] = ("attention",),
    site: str = "resid_post",
) -> list[ActivationEmphasis]:
    """The grid of interventions: every kind x factor x layer set (in that order)."""
    return [ActivationEmphasis(k, float(f), ls, None, site) for k in kinds for f in factors for ls in layer_sets]
