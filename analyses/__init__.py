"""The paper's analyses, one module each (installed as ``unpact.analyses``).

Each takes numbers and returns numbers plus a verdict computed from them:

* :mod:`~unpact.analyses.keyword_focus` — finding 1, KeyTokens lose contribution;
* :mod:`~unpact.analyses.recovery` — finding 2, emphasis brings answers back (prompt vs activation);
* :mod:`~unpact.analyses.collapse` — finding 3, indiscriminate drops go with lost utility;
* :mod:`~unpact.analyses.layer_head` — where in the network the contribution changed;
* :mod:`~unpact.analyses.assemble` — all four from a study's stage results, gated by the precondition.
"""

from unpact.analyses.assemble import forget_precondition, run_analyses
from unpact.analyses.collapse import collapse_analysis, token_drop_stats
from unpact.analyses.keyword_focus import keyword_focus, keyword_focus_vs_null, normalised_gap
from unpact.analyses.layer_head import layer_head_analysis
from unpact.analyses.recovery import recovery_analysis

__all__ = [
    "keyword_focus",
    "keyword_focus_vs_null",
    "normalised_gap",
    "recovery_analysis",
    "collapse_analysis",
    "token_drop_stats",
    "layer_head_analysis",
    "forget_precondition",
    "run_analyses",
]
