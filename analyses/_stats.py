"""The analyses' small statistics: :mod:`unpact.stats` (one place for the whole package)."""

from unpact.stats import fmt, gini, mean, sign_test_p, spearman, spearman_exact_p, spearman_p

__all__ = ["fmt", "gini", "mean", "sign_test_p", "spearman", "spearman_exact_p", "spearman_p"]
