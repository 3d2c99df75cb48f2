"""IDK fine-tuning: teach the model to answer forget questions with a refusal.

Each forget question gets one refusal drawn (seeded) from TOFU's refusal
strings (:data:`unpact.data.IDK_FILE`, or ``refusals_file``); the loss is their
NLL, plus ``retain_weight`` · NLL on retain when a retain set is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from unpact.data import IDK_FILE, QAItem, read_lines
from unpact.errors import ConfigError
from unpact.unlearning.base import Batch, Run, UnlearnConfig, UnlearningMethod, answer_logprobs_of, encode_items
from unpact.unlearning.losses import nll
from unpact.unlearning.registry import register
from unpact.unlearning.retain import RetainTerm


@dataclass
class IDKConfig(UnlearnConfig):
    """Fine-tuning towards refusals; ``refusals_file`` (one per line) defaults to TOFU's."""

    #: TOFU ``idk`` (loss = NLL(refusal) + NLL(retain)): lr 1e-5
    REFERENCE: ClassVar[dict[str, Any]] = {"lr": 1e-5}

    # tuned on the embedded models (docs/unlearning.md)
    lr: float = 1e-3
    steps: int = 30
    retain_weight: float = 1.0
    refusals_file: str | None = None


@register
class IDK(UnlearningMethod):
    """Fine-tune the forget questions towards "I don't know"-style answers."""

    name = "idk"
    config_class = IDKConfig
    retain = "optional"
    description = "fine-tune forget questions towards refusals (+ NLL on retain)"

    def __init__(self, config):
        super().__init__(config)
        self.retain_term = RetainTerm("nll", config.retain_weight)

    def setup(self, run: Run) -> None:
        refusals = read_lines(self.config.refusals_file or IDK_FILE)
        if not refusals:
            raise ConfigError(f"no refusal strings in {self.config.refusals_file or IDK_FILE}")
        gen = torch.Generator().manual_seed(run.seed + 1)
        picks = torch.randint(len(refusals), (len(run.forget_items),), generator=gen).tolist()
        items = []
        for it, k in zip(run.forget_items, picks):
            question = getattr(it, "question", None)
            if question is None:
                raise ConfigError("idk needs question items (QAItem or MCItem) in the forget set")
            items.append(QAItem(question, refusals[k]))
        run.forget_seqs = encode_items(run.model, items, what="forget")
        self.retain_term.setup(run)

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        _, lp = answer_logprobs_of(model, batch.forget)
        idk_nll = nll(lp, batch.forget.target_mask)
        loss = idk_nll
        parts = {"idk_nll": idk_nll}
        if self.retain_term.weight:
            loss = self.retain_term.add(loss, parts, model, batch)
        return loss, parts
