"""Retain-set regularisers shared by the GDR and KLR variants.

* ``"nll"`` (GDR, gradient descent on retain): the retain answers' NLL;
* ``"kl"`` (KLR): ``KL(π_ref ‖ π)`` at the retain answer positions, with the
  reference next-token log-probs computed once, with the initial weights, for
  exactly the retain items the schedule uses (no second model in memory).
"""

from __future__ import annotations

import torch
from torch import Tensor

from unpact.scoring import answer_rows, chunks, pack, pad_id
from unpact.unlearning.base import Batch, Run, answer_logits_of, answer_logprobs_of
from unpact.unlearning.losses import kl_rows_to_reference, nll


def reference_answer_distributions(run: Run, indices: list[int], max_batch_tokens: int = 8192) -> dict[int, Tensor]:
    """Item index -> ``[n_answer_tokens, vocab]`` reference log-probs (initial weights, no grad)."""
    model = run.model
    pad = pad_id(model.tokenizer)
    out: dict[int, Tensor] = {}
    lengths = [len(run.retain_seqs[i][0]) + len(run.retain_seqs[i][1]) for i in indices]
    with torch.no_grad():
        for group in chunks(lengths, max_batch_tokens):
            items = [indices[g] for g in group]
            packed = pack([run.retain_seqs[i] for i in items], pad).to(run.device)
            rows = answer_logits_of(model, packed).float().log_softmax(-1)
            counts = answer_rows(packed.target_mask)[0].bincount(minlength=len(items)).tolist()
            for i, piece in zip(items, rows.split(counts)):
                out[i] = piece.cpu()
    return out


class RetainTerm:
    """The retain loss of a method: ``kind`` in ``{"nll", "kl"}``, times ``weight``."""

    def __init__(self, kind: str, weight: float):
        self.kind = kind
        self.weight = weight
        self.ref: dict[int, Tensor] = {}

    def setup(self, run: Run) -> None:
        if self.kind == "kl" and run.retain_schedule is not None:
            self.ref = reference_answer_distributions(run, run.retain_used())

    def __call__(self, model, batch: Batch) -> Tensor | None:
        if batch.retain is None:
            return None
        if self.kind == "nll":
            _, lp = answer_logprobs_of(model, batch.retain)
            return nll(lp, batch.retain.target_mask)
        rows = answer_logits_of(model, batch.retain)
        ref = torch.cat([self.ref[i] for i in batch.retain_idx])  # type: ignore[union-attr]
        return kl_rows_to_reference(rows, ref)

    def add(self, loss: Tensor, parts: dict[str, Tensor], model, batch: Batch) -> Tensor:
        """``loss + weight * retain_loss`` (logged as ``parts["retain_loss"]``); ``loss`` when the batch has no retain part."""
        r = self(model, batch)
        if r is None:
            return loss
        r = r * batch.retain_scale
        parts["retain_loss"] = r
        return loss + self.weight * r
