"""Emphasis recovery: keyword prompt rewrites and activation scaling, compared.

* :mod:`~unpact.emphasis.rewrites` — named prompt-rewrite templates (repeat, quote,
  upper, focus, keywords_first and ``"a+b"`` combinations) with keyword token
  positions tracked through tokenisation;
* :mod:`~unpact.emphasis.activation` — attention / residual scaling at the keyword
  positions (``unpact.hooks``), and the factor x layer-set sweep;
* :mod:`~unpact.emphasis.recovery` — recovery per item, controls, collapse flags;
* :mod:`~unpact.emphasis.table` — its typed result (:class:`RecoveryTable`, one
  :class:`RecoveryRow` per setting) and the table's text rendering.
"""

from unpact.emphasis.activation import (
    DEFAULT_FACTORS,
    KINDS,
    LAYER_SETS,
    ActivationEmphasis,
    EmphasisKind,
    batched_emphasis_hooks,
    emphasis_hooks,
    get_kind,
    layer_set,
    register_kind,
    sweep,
)
from unpact.emphasis.recovery import (
    RecoveryConfig,
    compare_runs,
    score_answers,
    keytoken_positions,
    emphasis_items,
    recover,
)
from unpact.emphasis.table import (
    Baseline,
    BestSetting,
    ControlBaseline,
    ControlOutcome,
    EmphasisItem,
    RecoveryItem,
    RecoveryRow,
    RecoveryTable,
    best_setting,
    render_table,
)
from unpact.emphasis.rewrites import (
    DEFAULT_TEMPLATES,
    TEMPLATES,
    RewriteTemplate,
    RewrittenPrompt,
    get_template,
    keyword_positions,
    keywords_from_positions,
    register_template,
    rewrite,
    segment_question,
)

__all__ = [
    "ActivationEmphasis",
    "DEFAULT_FACTORS",
    "EmphasisKind",
    "KINDS",
    "LAYER_SETS",
    "batched_emphasis_hooks",
    "emphasis_hooks",
    "get_kind",
    "layer_set",
    "register_kind",
    "sweep",
    "BestSetting",
    "EmphasisItem",
    "RecoveryConfig",
    "RecoveryTable",
    "best_setting",
    "compare_runs",
    "score_answers",
    "keytoken_positions",
    "emphasis_items",
    "recover",
    "render_table",
    "Baseline",
    "ControlBaseline",
    "ControlOutcome",
    "RecoveryItem",
    "RecoveryRow",
    "DEFAULT_TEMPLATES",
    "TEMPLATES",
    "RewriteTemplate",
    "RewrittenPrompt",
    "get_template",
    "keyword_positions",
    "keywords_from_positions",
    "register_template",
    "rewrite",
    "segment_question",
]
