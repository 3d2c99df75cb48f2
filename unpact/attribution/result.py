"""The one result type of every attribution method: :class:`Attribution`.

One :class:`Attribution` describes one item (a prompt x and its answer y) under
one model and one method: the prompt's tokens, one score per prompt token, the
answer's mean log-prob LP(x, y), the method and its options, a mask of special
tokens (BOS and the fixed words of the prompt format, which never count as
keywords) and method-specific ``extras`` (for example the integrated-gradients
completeness gap, or the per-layer/per-head arrays of ``heads`` as nested lists).

Everything is plain Python data, so ``to_dict()`` is plain JSON and
``Attribution.from_dict(d)`` gives the same object back.

Example:
    >>> a = Attribution(item_id="q1", tokens=["<bos>", "Question", ":", " Lima"],
    ...                 token_ids=[0, 5, 6, 7], scores=[0.0, 0.1, 0.0, 0.9], lp=-1.2,
    ...                 method="loo", special=[True, True, True, False])
    >>> Attribution.from_dict(a.to_dict()) == a
    True
    >>> a.key_tokens()
    [3]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

from unpact import figures
from unpact.attribution.keytokens import key_tokens


def plain_data(x: Any) -> Any:
    """Tensors/numpy arrays/tuples -> nested lists and floats (JSON-safe)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().tolist()
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): plain_data(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_data(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass
class Attribution:
    """Per-prompt-token attribution of one item's answer log-prob.

    Attributes:
        item_id: the item's id (its ``id`` field, or its index in the call).
        tokens: the prompt's tokens as strings (BOS first when the tokenizer has one).
        token_ids: the prompt's token ids, same length as ``tokens``.
        scores: one score per prompt token (the method's contribution C_i; 0 at BOS).
        lp: LP(x, y), the mean log-prob of the answer tokens under teacher forcing.
        method: ``"loo"``, ``"integrated_gradients"`` or ``"heads"``.
        options: the method's options as used (plain values).
        special: True for tokens that never count as keywords (BOS, template words).
        answer_tokens / answer_ids: the answer's tokens.
        prompt / answer: the texts the model saw.
        group: the item's group (``"forget"``, ``"retain"``, ``"general"``, ...) or None.
        extras: method-specific results (plain JSON values).
    """

    item_id: str
    tokens: list[str]
    token_ids: list[int]
    scores: list[float]
    lp: float
    method: str
    special: list[bool]
    options: dict[str, Any] = field(default_factory=dict)
    answer_tokens: list[str] = field(default_factory=list)
    answer_ids: list[int] = field(default_factory=list)
    prompt: str = ""
    answer: str = ""
    group: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if not (len(self.tokens) == len(self.scores) == len(self.special) == n):
            raise ValueError(
                f"attribution of item {self.item_id!r}: tokens ({len(self.tokens)}), token_ids ({n}), "
                f"scores ({len(self.scores)}) and special ({len(self.special)}) must have the same length"
            )

    # ------------------------------------------------------------ views
    @property
    def content_positions(self) -> list[int]:
        """Positions of the tokens that may be keywords (not special)."""
        return [i for i, s in enumerate(self.special) if not s]

    def key_tokens(self, **options) -> list[int]:
        """Positions of this item's KeyTokens (see :func:`unpact.attribution.key_tokens`)."""
        return key_tokens(self, **options)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` highest-scoring non-special tokens as ``(token, score)``."""
        pos = sorted(self.content_positions, key=lambda i: -self.scores[i])[:k]
        return [(self.tokens[i], self.scores[i]) for i in pos]

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (lists, floats, strings); non-finite floats become None."""
        return plain_data(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["scores"] = [float("nan") if v is None else float(v) for v in d["scores"]]
        d["token_ids"] = [int(v) for v in d["token_ids"]]
        d["special"] = [bool(v) for v in d["special"]]
        d["lp"] = float("nan") if d.get("lp") is None else float(d["lp"])
        return cls(**d)

    # ------------------------------------------------------------ display
    def to_html(self, **key_options) -> str:
        """An HTML view (a fragment with its own styles): the token heatmap (red raises the answer's
        log-prob, blue lowers it, KeyTokens outlined) and, for ``heads``, the layer x head map."""
        return figures.fragment(figures.attribution_html(self, **key_options))

    def _repr_html_(self) -> str:  # a notebook displays the object with this
        return self.to_html()

    def __repr__(self) -> str:  # short: the full arrays are in to_dict()
        return (
            f"Attribution(item_id={self.item_id!r}, method={self.method!r}, lp={self.lp:.4f}, "
            f"n_tokens={len(self.tokens)}, top={self.top(3)})"
        )
