"""Hook names: one place, in TransformerLens's own vocabulary.

A thin wrapper around ``transformer_lens.utilities.get_act_name``: ``act_name("pattern", 2)``
is ``"blocks.2.attn.hook_pattern"``, ``act_name("resid_post", 0)`` is
``"blocks.0.hook_resid_post"``. Every module that names a hook point takes the name from
here, never from an f-string.

Example:
    >>> act_name("pattern", 2), act_name("v", 0), act_name("attn_out", 1), act_name("resid_pre", 3)
    ('blocks.2.attn.hook_pattern', 'blocks.0.attn.hook_v', 'blocks.1.hook_attn_out', 'blocks.3.hook_resid_pre')
"""

from __future__ import annotations

import functools


@functools.cache
def act_name(name: str, layer: int | None = None) -> str:
    """The hook name of activation ``name`` (``"pattern"``, ``"v"``, ``"z"``, ``"resid_post"``,
    ``"attn_out"``, ``"mlp_out"``, ...) at ``layer`` (TransformerLens's ``get_act_name``)."""
    from transformer_lens.utilities import get_act_name  # imported on first use: it loads TransformerLens

    return get_act_name(name, layer)
