"""Contribution tracking: the same items attributed on two models, compared.

``compare(before, after)`` takes two lists of :class:`Attribution` for the same
items (matched by ``item_id``; the prompt tokens must agree), typically the
original model and an unlearned one, and returns a :class:`Comparison`:

* per item: per-token deltas ``after - before``, the KeyTokens (of ``before``,
  the original model's keywords, by default), the LP change and the Spearman rank
  correlation of the two token rankings (non-special tokens; scipy);
* summaries: mean delta on KeyTokens vs other tokens, overall and by item group
  (``forget``/``retain``/``general``, from ``Attribution.group``); per layer and
  per head (when both sides come from ``heads``): the mean change of each
  layer's attention/MLP total contribution and of each head's total.

Everything is plain data (``to_dict()``), ready for results.json.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> cmp = compare(attribute(orig, items), attribute(unlearned, items))   # doctest: +SKIP
    >>> cmp.summary["key_mean_delta"], cmp.summary["other_mean_delta"]      # doctest: +SKIP
    (-0.31, -0.02)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from unpact import figures
from unpact.attribution.keytokens import key_tokens
from unpact.attribution.result import Attribution, plain_data
from unpact.errors import InputError
from unpact.stats import mean, spearman


@dataclass
class TokenDelta:
    """One item's change between two models."""

    item_id: str
    group: str | None
    tokens: list[str]
    before: list[float]
    after: list[float]
    delta: list[float]
    special: list[bool]
    key_tokens: list[int]
    lp_before: float
    lp_after: float
    spearman: float | None


@dataclass
class Comparison:
    """Result of :func:`compare`: per-item deltas and summaries (plain data)."""

    items: list[TokenDelta]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain_data(asdict(self))

    def to_html(self, max_items: int = 12) -> str:
        """An HTML view (a fragment with its own styles): the summaries, each item before / after /
        change as token heatmaps, and the per-layer and per-head changes when both sides are ``heads``."""
        return figures.fragment(figures.comparison_html(self, max_items=max_items))

    def _repr_html_(self) -> str:  # a notebook displays the object with this
        return self.to_html()

    def __repr__(self) -> str:  # short: the per-token arrays are in to_dict()
        s = self.summary
        keys = ("key_mean_delta", "other_mean_delta", "lp_mean_delta")
        return (
            f"Comparison(n_items={len(self.items)}, "
            + ", ".join(f"{k}={s[k]:.4f}" if isinstance(s.get(k), float) else f"{k}={s.get(k)}" for k in keys)
            + f", groups={sorted(s.get('by_group', {}))})"
        )


def _key_other(d: TokenDelta) -> tuple[list[float], list[float]]:
    keys = set(d.key_tokens)
    key = [d.delta[i] for i in keys]
    other = [d.delta[i] for i in range(len(d.delta)) if i not in keys and not d.special[i]]
    return key, other


def _summarise(ds: list[TokenDelta]) -> dict[str, Any]:
    key, other = [], []
    for d in ds:
        k, o = _key_other(d)
        key += k
        other += o
    return {
        "n_items": len(ds),
        "key_mean_delta": mean(key),
        "other_mean_delta": mean(other),
        "all_mean_delta": mean(key + other),
        "n_key_tokens": len(key),
        "n_other_tokens": len(other),
        "lp_mean_delta": mean([d.lp_after - d.lp_before for d in ds]),
        "spearman_mean": mean([d.spearman for d in ds if d.spearman is not None]),
    }


def compare(
    before: Sequence[Attribution],
    after: Sequence[Attribution],
    *,
    key_from: str = "before",
    **key_options: Any,
) -> Comparison:
    """Per-token deltas and summaries of two attributions of the same items.

    Args:
        before, after: attributions of the same items (same prompts) on two models.
        key_from: whose KeyTokens define "key" tokens: ``"before"`` (default) or ``"after"``.
        key_options: ``alpha``/``beta``/``normalize`` for :func:`key_tokens`.
    """
    if isinstance(before, Attribution):
        before = [before]
    if isinstance(after, Attribution):
        after = [after]
    if key_from not in ("before", "after"):
        raise InputError(f"key_from must be 'before' or 'after', got {key_from!r}")
    by_id = {a.item_id: a for a in after}
    if len(by_id) != len(after):
        raise InputError("compare: the 'after' attributions have repeated item ids; give each item a unique id")
    deltas: list[TokenDelta] = []
    for b in before:
        a = by_id.get(b.item_id)
        if a is None:
            raise InputError(f"compare: item {b.item_id!r} is in 'before' but not in 'after'")
        if a.token_ids != b.token_ids:
            raise InputError(
                f"compare: item {b.item_id!r} has different prompt tokens before and after; "
                "attribute the same items with the same tokenizer and format"
            )
        ref = b if key_from == "before" else a
        keys = key_tokens(ref, **key_options)
        content = b.content_positions
        deltas.append(
            TokenDelta(
                item_id=b.item_id,
                group=b.group,
                tokens=list(b.tokens),
                before=list(b.scores),
                after=list(a.scores),
                delta=[y - x for x, y in zip(b.scores, a.scores)],
                special=list(b.special),
                key_tokens=keys,
                lp_before=b.lp,
                lp_after=a.lp,
                spearman=spearman([b.scores[i] for i in content], [a.scores[i] for i in content], min_pairs=2),
            )
        )
    if len(deltas) != len(after):
        missing = sorted(set(by_id) - {d.item_id for d in deltas})
        raise InputError(f"compare: item(s) {missing[:5]} are in 'after' but not in 'before'")
    summary = _summarise(deltas)
    groups = sorted({d.group for d in deltas if d.group is not None})
    summary["by_group"] = {g: _summarise([d for d in deltas if d.group == g]) for g in groups}
    summary.update(_layer_head_summary(list(before), by_id))
    return Comparison(deltas, summary)


def _layer_head_summary(before: list[Attribution], by_id: dict[str, Attribution]) -> dict[str, Any]:
    """Mean change per layer (attention and MLP totals) and per head (sum over sources)."""
    pairs = [
        (b, by_id[b.item_id]) for b in before if "head_total" in b.extras and "head_total" in by_id[b.item_id].extras
    ]
    if not pairs:
        return {}
    out: dict[str, Any] = {}
    for key in ("attn_total", "mlp_total", "attn_direct", "mlp_direct"):
        d = np.array([np.subtract(a.extras[key], b.extras[key]) for b, a in pairs])
        out[f"per_layer_{key}_delta"] = d.mean(0).tolist()
    for key in ("head_total", "head_direct"):
        d = np.array([np.sum(a.extras[key], -1) - np.sum(b.extras[key], -1) for b, a in pairs])
        out[f"per_head_{key}_delta"] = d.mean(0).tolist()
    return out
