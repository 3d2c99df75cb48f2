"""The loss terms the unlearning methods combine (pure tensor functions).

Token log-probs come from :func:`unpact.scoring.row_logprobs` (the one log-prob
routine) on logits computed only at the positions that predict answer tokens
(:func:`unpact.unlearning.base.answer_logits_of`); these functions only reduce them.

* ``nll``: mean over items of the mean answer-token negative log-likelihood;
  gradient ascent minimises ``-nll`` on the forget set.
* ``npo``: Zhang et al. 2024, ``-(2/β) E[log σ(-β (log π(y|x) - log π_ref(y|x)))]``
  with sequence (summed) log-probs.
* ``simnpo``: Fan et al. 2024, reference-free, length-normalised, with the margin γ
  inside as in the SimNPO repository (OPTML-Group/Unlearn-Simple, ``simnpo`` loss):
  ``-(2/β) E[log σ(β (NLL(y|x)/|y| - γ))]`` with ``NLL/|y| = -mean log p``.
* ``kl_to_reference``: ``KL(π_ref ‖ π)`` of the next-token distributions at the
  answer positions, averaged over positions (reference log-probs precomputed);
  ``kl_rows_to_reference`` the same from the answer positions' logits only.
* ``masked_mse``: RMU's mean squared distance over real (non-padding) positions.

Example:
    >>> import torch
    >>> npo_loss(torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)   # at π = π_ref: (2/β) log 2
    tensor(13.8629)
"""

from __future__ import annotations

import torch  # noqa: F401 (the docstring examples use it)
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from unpact.scoring import reduce_logprobs


def sequence_logprobs(
    tok_lp: Float[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"], reduction: str = "mean"
) -> Float[Tensor, " batch"]:
    """Per-item answer log-prob (``"mean"`` over answer tokens or ``"sum"``)."""
    return reduce_logprobs(tok_lp, target_mask, reduction)


def nll(tok_lp: Float[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """Mean over items of the mean answer-token negative log-likelihood."""
    return -sequence_logprobs(tok_lp, target_mask, "mean").mean()


def npo_loss(logp: Float[Tensor, " batch"], ref_logp: Float[Tensor, " batch"], beta: float) -> Float[Tensor, ""]:
    """NPO: ``-(2/β) mean log σ(-β (logp - ref_logp))`` (sequence log-probs)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(mean_logp: Float[Tensor, " batch"], beta: float, gamma: float = 0.0) -> Float[Tensor, ""]:
    """SimNPO: ``-(2/β) mean log σ(β (-mean_logp - γ))`` (length-normalised log-probs, γ inside β
    as in the SimNPO repository).

    Example:
        >>> round(float(simnpo_loss(torch.tensor([-1.0]), beta=2.0, gamma=1.0)), 4)   # -(2/2) log σ(0)
        0.6931
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (-mean_logp - gamma)).mean()


def answer_logits(
    logits: Float[Tensor, "batch pos vocab"], target_mask: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "n_targets vocab"]:
    """The logit rows that predict the answer tokens, row-major (item by item, left to right).

    Same convention as :func:`unpact.scoring.token_logprobs`: the logits at
    position ``t - 1`` predict the token at ``t``.
    """
    b, t = target_mask.nonzero(as_tuple=True)
    return logits[b, t - 1]


def kl_to_reference(
    logits: Float[Tensor, "batch pos vocab"],
    target_mask: Bool[Tensor, "batch pos"],
    ref_logprobs: Float[Tensor, "n_targets vocab"],
) -> Float[Tensor, ""]:
    """``KL(π_ref ‖ π)`` averaged over the answer positions of the batch, from logits at every position."""
    return kl_rows_to_reference(answer_logits(logits, target_mask), ref_logprobs)


def kl_rows_to_reference(
    answer_rows: Float[Tensor, "n_targets vocab"], ref_logprobs: Float[Tensor, "n_targets vocab"]
) -> Float[Tensor, ""]:
    """``KL(π_ref ‖ π)`` averaged over the answer positions, from the logits at the positions that
    predict answer tokens only (:func:`answer_logits`' rows; the full vocabulary at each).

    Example:
        >>> rows = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
        >>> float(kl_rows_to_reference(rows, rows.log_softmax(-1)))
        0.0
    """
    cur = answer_rows.float().log_softmax(-1)
    ref = ref_logprobs.to(cur.device, cur.dtype)
    return (ref.exp() * (ref - cur)).sum(-1).mean()


def masked_mse(
    acts: Float[Tensor, "batch pos d_model"],
    target: Float[Tensor, "batch pos d_model"] | Float[Tensor, " d_model"],
    mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, ""]:
    """Mean squared error over the real (masked-in) positions and the model dimension."""
    diff = (acts - target).pow(2).mean(-1)
    m = mask.to(diff.dtype)
    return (diff * m).sum() / m.sum().clamp(min=1)
