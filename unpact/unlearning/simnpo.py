"""SimNPO (Fan et al. 2024): reference-free, length-normalised NPO.

``L = -(2/β) E[log σ(-(β/|y|) log π(y|x) - γ)] + retain_weight · NLL(retain)``
(the retain term is used when a retain set is given; SimNPO's paper uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from unpact.unlearning.base import Batch, Run, UnlearnConfig, UnlearningMethod, answer_logprobs_of
from unpact.unlearning.losses import nll, sequence_logprobs, simnpo_loss
from unpact.unlearning.registry import register
from unpact.unlearning.retain import RetainTerm


@dataclass
class SimNPOConfig(UnlearnConfig):
    """SimNPO's β (inverse temperature on the mean log-prob), margin γ and retain weight."""

    # tuned on the embedded models (docs/unlearning.md)
    lr: float = 1e-3
    steps: int = 30
    beta: float = 2.5
    gamma: float = 0.0
    retain_weight: float = 1.0


@register
class SimNPO(UnlearningMethod):
    """SimNPO on forget (+ NLL on retain when given)."""

    name = "simnpo"
    config_class = SimNPOConfig
    retain = "optional"
    description = "reference-free length-normalised NPO (+ NLL on retain)"

    def __init__(self, config):
        super().__init__(config)
        self.retain_term = RetainTerm("nll", config.retain_weight)

    def setup(self, run: Run) -> None:
        self.retain_term.setup(run)

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        _, lp = answer_logprobs_of(model, batch.forget)
        mean_lp = sequence_logprobs(lp, batch.forget.target_mask, "mean")
        forget = simnpo_loss(mean_lp, self.config.beta, self.config.gamma)
        loss = forget
        parts = {"forget_loss": forget, "forget_nll": -mean_lp.detach().mean()}
        if self.retain_term.weight:
            loss = self.retain_term.add(loss, parts, model, batch)
        return loss, parts
