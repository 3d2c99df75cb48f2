"""What a checkpoint still memorises, as open-unlearning and MUSE measure it: the
membership-inference attacks LOSS, ZLib, Min-K% and Min-K%++, their AUC between forget and
holdout items, privleak, extraction strength and exact memorization.

Pure formulas, numbers in and numbers out (no model): :mod:`unpact.metrics` scores the
answers (``unpact.scoring.answer_token_stats``: per answer token under teacher forcing, its
log-prob, the top-1 token and the mean and variance of the log-prob over the vocabulary) and
registers the split metrics ``mia``, ``privleak``, ``exact_memorization`` and
``extraction_strength`` on these functions. docs/unlearning.md compares each with the
references' code, row by row.

Every attack score is signed as open-unlearning signs it (``src/evals/metrics/mia/``): the
higher the score, the *less* likely the item was trained on (a loss). The AUC is
``roc_auc_score(labels, scores)`` with forget items labelled 0 and holdout items 1
(open-unlearning's ``mia_auc``): 1 when every forget item scores below every holdout item
(the forget set still looks trained on), 0.5 when the two are indistinguishable.

Example:
    >>> mia_auc([0.1, 0.2], [0.9, 1.2])          # forget items have the lower loss: members
    1.0
    >>> min_k_score([-0.1, -5.0, -0.2, -3.0, -0.3], 0.4)   # -mean of the 2 lowest log-probs
    4.0
    >>> extraction_strength([5, 9, 7, 8], [5, 6, 7, 8])    # the suffix from token 2 on is extracted
    0.5
    >>> round(privleak(0.9, 0.5), 6)                        # MUSE: (0.1 - 0.5) / 0.5 x 100
    -80.0
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from unpact.errors import ConfigError, InputError

#: the membership-inference attacks, in the order they are reported
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


@dataclass(frozen=True)
class MIAConfig:
    """The settings of the attacks and of privleak, each default the references' own.

    Example:
        >>> MIAConfig().min_k_ratio
        0.4
        >>> MIAConfig(min_k_ratio=0.0)
        Traceback (most recent call last):
        unpact.errors.ConfigError: min_k_ratio must be in (0, 1]; got 0.0 (open-unlearning and MUSE use 0.4)
    """

    #: share k of an answer's tokens that Min-K% and Min-K%++ average (the k·|y| lowest, at least
    #: one): 0.4, the ``k`` of open-unlearning's ``configs/eval/{tofu,muse}_metrics/mia_min_k*.yaml``
    #: and MUSE's default privleak key ``forget_holdout_Min-40%`` (eval.py)
    min_k_ratio: float = 0.4
    #: the attack whose AUC privleak compares: ``min_k``, as open-unlearning's ``privleak.yaml``
    #: (``pre_compute: mia_min_k``) and MUSE's ``eval.py`` (``privleak_auc_key``)
    privleak_attack: str = "min_k"
    #: floor of Min-K%++'s per-position variance before its square root (open-unlearning's
    #: ``torch.clamp(sigma, min=1e-6)``): a position where the model is certain would divide by 0
    var_floor: float = 1e-6
    #: added to privleak's denominator (open-unlearning's ``1e-10``): a reference AUC of exactly 1
    #: gives a large finite number rather than a division by zero
    privleak_epsilon: float = 1e-10

    def __post_init__(self) -> None:
        if not 0.0 < self.min_k_ratio <= 1.0:
            raise ConfigError(
                f"min_k_ratio must be in (0, 1]; got {self.min_k_ratio} (open-unlearning and MUSE use 0.4)"
            )
        if self.privleak_attack not in ATTACKS:
            raise ConfigError(f"unknown privleak attack {self.privleak_attack!r}; known: {', '.join(ATTACKS)}")


def _lp(logprobs: Sequence[float]) -> np.ndarray:
    lp = np.asarray(logprobs, dtype=np.float64).reshape(-1)
    if lp.size == 0:
        raise InputError("an attack score needs at least one answer token; the answer has none")
    return lp


def n_lowest(n_tokens: int, ratio: float) -> int:
    """How many tokens Min-K% averages: ``max(1, int(n_tokens * ratio))`` (open-unlearning's ``num_k``).

    Example:
        >>> n_lowest(10, 0.4), n_lowest(2, 0.4)
        (4, 1)
    """
    return max(1, int(n_tokens * ratio))


def loss_score(logprobs: Sequence[float]) -> float:
    """LOSS attack (Yeom et al.): the answer's mean negative log-likelihood.

    Example:
        >>> loss_score([-1.0, -3.0])
        2.0
    """
    return float(-np.mean(_lp(logprobs)))


def zlib_entropy(text: str) -> int:
    """Length in bytes of ``text`` (UTF-8) compressed by ``zlib`` at its default level.

    Example:
        >>> zlib_entropy("")
        8
    """
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(logprobs: Sequence[float], text: str) -> float:
    """ZLib attack (Carlini et al. 2021): the mean loss over the zlib-compressed length of the text.

    Example:
        >>> zlib_score([-2.0], "") == 2.0 / 8
        True
    """
    return loss_score(logprobs) / zlib_entropy(text)


def min_k_score(logprobs: Sequence[float], ratio: float = MIAConfig.min_k_ratio) -> float:
    """Min-K% Prob (Shi et al. 2024): minus the mean of the ``n_lowest`` lowest token log-probs.

    Example:
        >>> min_k_score([-1.0, -2.0, -3.0], 1.0)
        2.0
    """
    lp = np.sort(_lp(logprobs))
    return float(-np.mean(lp[: n_lowest(lp.size, ratio)]))


def min_k_plus_plus_score(
    logprobs: Sequence[float],
    vocab_mean: Sequence[float],
    vocab_var: Sequence[float],
    ratio: float = MIAConfig.min_k_ratio,
    var_floor: float = MIAConfig.var_floor,
) -> float:
    """Min-K%++ (Zhang et al. 2025): each token's log-prob standardised by the distribution it was
    drawn from, ``z_t = (log p(y_t) - mu_t) / sqrt(max(sigma_t^2, var_floor))`` with ``mu_t`` and
    ``sigma_t^2`` the mean and variance of ``log p(v)`` for ``v ~ p(. | x, y_<t)``; the score is
    minus the mean of the ``n_lowest`` lowest ``z_t``.

    Example:
        >>> min_k_plus_plus_score([-1.0, -2.0], [-1.5, -1.0], [0.25, 1.0], ratio=0.5)   # z = 1, -1
        1.0
    """
    lp = _lp(logprobs)
    mu = np.asarray(vocab_mean, dtype=np.float64).reshape(-1)
    var = np.asarray(vocab_var, dtype=np.float64).reshape(-1)
    if not lp.size == mu.size == var.size:
        raise InputError(
            f"Min-K%++ needs one mean and one variance per token; got {lp.size} log-probs, "
            f"{mu.size} means and {var.size} variances"
        )
    z = np.sort((lp - mu) / np.sqrt(np.maximum(var, var_floor)))
    return float(-np.mean(z[: n_lowest(z.size, ratio)]))


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC of the attack with holdout items as the positive class: the share of (forget,
    holdout) pairs where the holdout item scores higher, ties counting one half (the Mann-Whitney
    U of the holdout scores over ``n_forget x n_holdout``; equal to sklearn's ``roc_auc_score``
    with forget labelled 0, open-unlearning's convention). NaN when a score is NaN.

    Example:
        >>> mia_auc([1.0, 2.0], [2.0, 3.0])   # pairs: (1,2) (1,3) (2,3) won, (2,2) tied
        0.875
    """
    f = np.asarray(forget_scores, dtype=np.float64).reshape(-1)
    h = np.asarray(holdout_scores, dtype=np.float64).reshape(-1)
    if f.size == 0 or h.size == 0:
        raise InputError(
            f"the MIA AUC needs forget and holdout items; got {f.size} forget and {h.size} holdout "
            "scores (give a holdout split: holdout_split in the run's config)"
        )
    if np.isnan(f).any() or np.isnan(h).any():
        return float("nan")
    ranks = rankdata(np.concatenate([f, h]))  # average ranks: ties count one half
    u = ranks[f.size :].sum() - h.size * (h.size + 1) / 2
    return float(u / (f.size * h.size))


def privleak(auc: float, reference_auc: float, epsilon: float = MIAConfig.privleak_epsilon) -> float:
    """MUSE's PrivLeak in percent: the AUC's relative change against the reference (retain-only) model's.

    MUSE's AUC is one minus open-unlearning's (MUSE labels the holdout items the members), so with
    open-unlearning's AUCs ``a`` (the model's) and ``r`` (the reference's) this is
    ``((1 - a) - (1 - r)) / (1 - r) x 100`` (open-unlearning ``privacy.privleak``). 0: the model leaks
    as little as the reference; strongly negative: the forget set still looks trained on
    (under-unlearning); positive: it looks *less* trained on than never-seen text (over-unlearning).

    Example:
        >>> privleak(0.5, 0.5)
        0.0
    """
    a, r = 1.0 - float(auc), 1.0 - float(reference_auc)
    return (a - r) / (r + epsilon) * 100.0


def exact_memorization(predicted: Sequence[int], targets: Sequence[int]) -> float:
    """Exact memorization (Tirumala et al. 2022, open-unlearning): the share of answer tokens whose
    teacher-forced top-1 prediction is the answer's token.

    Example:
        >>> exact_memorization([1, 2, 9, 4], [1, 2, 3, 4])
        0.75
    """
    p, t = np.asarray(predicted).reshape(-1), np.asarray(targets).reshape(-1)
    if p.size != t.size or t.size == 0:
        raise InputError(f"exact memorization needs one prediction per answer token; got {p.size} for {t.size} tokens")
    return float(np.mean(p == t))


def extraction_strength(predicted: Sequence[int], targets: Sequence[int]) -> float:
    """Extraction strength (Carlini et al. 2021's extractability, as open-unlearning scores it):
    ``1 - k/|y|`` for the smallest ``k`` such that, given the question and the answer's first ``k``
    tokens, greedy decoding reproduces the rest of the answer. Greedy decoding reproduces
    ``y_k..`` exactly when every teacher-forced top-1 prediction from position ``k`` on is the
    answer's token, so ``predicted`` (the teacher-forced top-1 tokens) is all it needs. 1: the whole
    answer comes from the question alone; 0: not even its last token (``k = |y|``, the empty suffix).

    Example:
        >>> extraction_strength([1, 2, 3], [1, 2, 3]), extraction_strength([1, 2, 9], [1, 2, 3])
        (1.0, 0.0)
    """
    p, t = np.asarray(predicted).reshape(-1), np.asarray(targets).reshape(-1)
    if p.size != t.size or t.size == 0:
        raise InputError(f"extraction strength needs one prediction per answer token; got {p.size} for {t.size} tokens")
    wrong = np.nonzero(p != t)[0]
    k = 0 if wrong.size == 0 else int(wrong[-1]) + 1  # the shortest prefix after which every prediction is right
    return 1.0 - k / t.size


def attack_scores(
    logprobs: Sequence[float],
    vocab_mean: Sequence[float],
    vocab_var: Sequence[float],
    text: str,
    config: MIAConfig = MIAConfig(),
) -> dict[str, float]:
    """Every attack's score of one answer (see :data:`ATTACKS`), from its token log-probs, the
    vocabulary mean and variance of the log-prob at each answer position and the answer's text.

    Example:
        >>> s = attack_scores([-1.0, -3.0], [-1.0, -1.0], [1.0, 1.0], "")
        >>> s["loss"], s["min_k"], s["min_k_plus_plus"]
        (2.0, 3.0, 2.0)
    """
    return {
        "loss": loss_score(logprobs),
        "zlib": zlib_score(logprobs, text),
        "min_k": min_k_score(logprobs, config.min_k_ratio),
        "min_k_plus_plus": min_k_plus_plus_score(logprobs, vocab_mean, vocab_var, config.min_k_ratio, config.var_floor),
    }
