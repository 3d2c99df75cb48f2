"""Negative Preference Optimization (Zhang et al. 2024) and its retain-regularised variants.

``L_NPO = -(2/β) E[log σ(-β (log π(y|x) - log π_ref(y|x)))]`` over forget items,
with sequence log-probs; ``π_ref`` is the model before unlearning, its
log-probs of every forget item computed once up front (no second model).

| name    | loss                                   |
|---------|----------------------------------------|
| npo     | ``L_NPO``                               |
| npo_gdr | ``L_NPO + retain_weight · NLL(retain)`` |
| npo_klr | ``L_NPO + retain_weight · KL(π_ref ‖ π) on retain`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from unpact.scoring import score_sequences
from unpact.unlearning.base import Batch, Run, UnlearnConfig, UnlearningMethod, answer_logprobs_of
from unpact.unlearning.losses import npo_loss, nll, sequence_logprobs
from unpact.unlearning.registry import register
from unpact.unlearning.retain import RetainTerm


@dataclass
class NPOConfig(UnlearnConfig):
    """NPO on the forget answers; ``beta`` is the paper's β."""

    #: NPO's TOFU runs / open-unlearning ``NPO``: beta 0.1 (as here), lr 1e-5
    REFERENCE: ClassVar[dict[str, Any]] = {"lr": 1e-5}

    # tuned on the embedded models (docs/unlearning.md); without a retain term
    # lr 5e-4 already collapses the model (retain ROUGE-L 0)
    lr: float = 3e-4
    steps: int = 20
    beta: float = 0.1


@dataclass
class NPOGDRConfig(NPOConfig):
    """NPO + NLL on retain."""

    # tuned on the embedded models (docs/unlearning.md)
    lr: float = 1e-3
    steps: int = 30
    retain_weight: float = 1.0


@dataclass
class NPOKLRConfig(NPOConfig):
    """NPO + KL to the initial model on retain."""

    # tuned on the embedded models (docs/unlearning.md)
    lr: float = 1e-3
    steps: int = 30
    retain_weight: float = 1.0


class _NPO(UnlearningMethod):
    retain_kind: str | None = None

    def __init__(self, config):
        super().__init__(config)
        self.retain_term = (
            RetainTerm(self.retain_kind, getattr(config, "retain_weight", 0.0)) if self.retain_kind else None
        )
        self.ref_logp: Tensor | None = None

    def setup(self, run: Run) -> None:
        # log π_ref(y|x) of every forget item, summed over answer tokens, once.
        self.ref_logp = score_sequences(run.model, run.forget_seqs, reduction="sum").to(run.device)
        if self.retain_term is not None:
            self.retain_term.setup(run)

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        _, lp = answer_logprobs_of(model, batch.forget)
        logp = sequence_logprobs(lp, batch.forget.target_mask, "sum")
        ref = self.ref_logp[torch.tensor(batch.forget_idx, device=logp.device)]  # type: ignore[index]
        forget = npo_loss(logp, ref, self.config.beta)
        loss = forget
        parts = {"forget_loss": forget, "forget_nll": nll(lp.detach(), batch.forget.target_mask)}
        if self.retain_term is not None:
            loss = self.retain_term.add(loss, parts, model, batch)
        return loss, parts


@register
class NPO(_NPO):
    """NPO on the forget answers only."""

    name = "npo"
    config_class = NPOConfig
    description = "negative preference optimization on forget"


@register
class NPOGDR(_NPO):
    """NPO on forget, NLL on retain."""

    name = "npo_gdr"
    config_class = NPOGDRConfig
    retain = "required"
    retain_kind = "nll"
    description = "NPO on forget + NLL on retain"


@register
class NPOKLR(_NPO):
    """NPO on forget, KL(reference ‖ model) on retain."""

    name = "npo_klr"
    config_class = NPOKLRConfig
    retain = "required"
    retain_kind = "kl"
    description = "NPO on forget + KL to the original model on retain"
