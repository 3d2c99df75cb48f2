"""Task-vector negation (Ilharco et al. 2023).

Fine-tune the model on the forget answers (gradient descent, ``steps`` steps
at ``lr``), giving θ_ft; the task vector is τ = θ_ft − θ; the result is
``θ − alpha · τ``. Only one extra copy of the weights (θ) is kept: the model
itself is fine-tuned in place and then overwritten with the negation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unpact.errors import ConfigError
from unpact.unlearning.base import (
    Batch,
    Run,
    UnlearnConfig,
    UnlearningMethod,
    answer_logprobs_of,
    copy_model,
    unique_storage,
)
from unpact.unlearning.losses import nll
from unpact.unlearning.registry import register


@dataclass
class TaskVectorConfig(UnlearnConfig):
    """Fine-tuning (``lr``, ``steps``) on forget, then negation scaled by ``alpha``."""

    # tuned on the embedded models (docs/unlearning.md): on a model that has memorised
    # the forget set the fine-tuning step is small, so the negation is scaled up
    lr: float = 5e-4
    steps: int = 30
    alpha: float = 2.5


@register
class TaskVector(UnlearningMethod):
    """Fine-tune on forget, then subtract ``alpha`` times the weight change."""

    name = "task_vector"
    config_class = TaskVectorConfig
    description = "fine-tune on forget, then negate the task vector"

    def setup(self, run: Run) -> None:
        self.params = unique_storage(self.trainable(run.model))
        self.theta0 = [p.detach().clone() for p in self.params]

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        _, lp = answer_logprobs_of(model, batch.forget)
        forget_nll = nll(lp, batch.forget.target_mask)
        return forget_nll, {"forget_nll": forget_nll}

    def finish(self, run: Run) -> None:
        self.negate(self.params, self.theta0)
        self.theta0 = []

    def negate(self, params: list, theta0: list) -> None:
        """``params`` (the fine-tuned weights θ_ft, in place) become ``θ − alpha (θ_ft − θ)``
        with ``theta0`` the original weights θ."""
        a = self.config.alpha
        for p, p0 in zip(params, theta0):
            # θ − a (θ_ft − θ) = (1 + a) θ − a θ_ft
            p.data.mul_(-a).add_(p0, alpha=1.0 + a)

    def checkpoint_model(self, live, original):
        """A copy of ``live`` negated against ``original``: the model the method would end with
        were training stopped here."""
        out = copy_model(live)
        params = unique_storage(self.trainable(out))
        theta0 = [p.detach() for p in unique_storage(self.trainable(original))]
        if [p.shape for p in params] != [p.shape for p in theta0]:
            raise ConfigError("task_vector checkpoint: the model's parameters do not line up with the original's")
        with torch.no_grad():
            self.negate(params, theta0)
        return out
