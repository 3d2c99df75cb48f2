"""KeyTokens: the paper's rule for the prompt tokens an answer depends on.

Given contributions C_i (for example from ``loo``) over the non-special tokens:

    P = {i : C_i > 0}
    KeyTokens = P                          if |P| < beta
              = {i in P : N(C_i) > alpha}  otherwise

N normalises the positive contributions. Defaults (chosen here; the paper leaves
them to the implementation):

* ``normalize="share"``: N(C_i) = C_i / sum_{j in P} C_j (each token's share of
  the positive contribution, so the shares sum to 1);
* ``alpha = 0.1``: a keyword carries more than 10% of the positive contribution
  (so there are at most 9 of them);
* ``beta = 3``: with fewer than 3 positive tokens every one of them is a keyword.

``normalize="max"`` (N = C_i / max_P C_j) is the other choice offered: with it
``alpha`` is a fraction of the strongest token's contribution. Special tokens
(BOS, template words such as "Question:" and "\\nAnswer:") never count.

Example:
    >>> key_tokens([0.0, 0.5, -0.2, 0.3, 0.01, 0.2], special=[True, False, False, False, False, False])
    [1, 3, 5]
    >>> key_tokens([0.0, 0.5, -0.2], special=[True, False, False])   # |P| = 1 < beta: all of P
    [1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unpact.errors import ConfigError

NORMALIZERS = ("share", "max")


@dataclass
class KeyTokensConfig:
    """The rule's parameters (see the module docstring)."""

    alpha: float = 0.1
    beta: int = 3
    normalize: str = "share"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZERS:
            raise ConfigError(f"KeyTokens normalize must be one of {NORMALIZERS}, got {self.normalize!r}")
        if self.beta < 0:
            raise ConfigError(f"KeyTokens beta must be >= 0, got {self.beta}")


def key_tokens(
    scores,
    special: Sequence[bool] | None = None,
    *,
    alpha: float = KeyTokensConfig.alpha,
    beta: int = KeyTokensConfig.beta,
    normalize: str = KeyTokensConfig.normalize,
) -> list[int]:
    """Positions of the KeyTokens of one prompt, in increasing order.

    Args:
        scores: an :class:`~unpact.attribution.Attribution` (its scores and special
            mask are used) or a sequence of per-token contributions.
        special: tokens that never count (default: the attribution's mask, or none).
        alpha, beta, normalize: the rule's parameters (:class:`KeyTokensConfig`).
    """
    KeyTokensConfig(alpha, beta, normalize)
    if hasattr(scores, "scores") and hasattr(scores, "special"):
        if special is None:
            special = scores.special
        scores = scores.scores
    c = [float(v) for v in scores]
    if special is None:
        special = [False] * len(c)
    if len(special) != len(c):
        raise ValueError(f"{len(c)} scores but {len(special)} special flags")
    positive = [i for i, v in enumerate(c) if v > 0 and not special[i]]
    if len(positive) < beta:
        return positive
    if normalize == "share":
        denom = sum(c[i] for i in positive)
    else:
        denom = max(c[i] for i in positive)
    return [i for i in positive if c[i] / denom > alpha]
