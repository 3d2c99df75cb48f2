"""Unlearning metrics: ROUGE-L recall, answer probability, truth ratio, forget quality,
model utility, multiple-choice accuracy, verbatim ROUGE.

ROUGE uses the ``rouge-score`` package with the stemmer on, as TOFU computes it.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference`` (TOFU's definition).

    Example:
        >>> rouge_l_recall("born in Lima, Peru", "Lima")
        1.0
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)
