"""TransformerLens hook functions (installed as ``unpact.hooks``).

Each is a plain hook function ``fn(activation, hook) -> activation`` plus a small
factory returning ``[(hook_name, fn)]`` for ``model.hooks(fwd_hooks=...)`` or
``unpact.scoring``'s ``fwd_hooks``:

=================================  =============================================  ===========================
what                               hook names                                     shape
=================================  =============================================  ===========================
:func:`attention_scaling_hooks`    ``blocks.{l}.attn.hook_pattern``               ``[batch head q k]``
:func:`residual_scaling_hooks`     ``blocks.{l}.hook_resid_pre/mid/post``,        ``[batch pos d_model]``
                                   ``hook_attn_out``, ``hook_mlp_out``
                                   (``attn.hook_z`` with heads)                   ``[batch pos head d_head]``
:func:`ablation_hooks`             any ``[batch pos ...]`` hook
:class:`Capture`                   any hook (forward and backward)
=================================  =============================================  ===========================

Positions are absolute (BOS at 0): a list for every row, per-row lists, or a
boolean mask ``[batch pos]`` (see :mod:`unpact.hooks.positions`). A factor of 1
is an exact no-op. A factor may be a tensor ``[batch]`` of per-row factors, so
several settings run side by side in one batched forward. Under a KV cache
(``unpact.generation``) the hooks act on the same absolute positions through
:func:`position_layout`. ``model.hooks(...)`` removes the hooks on exit, also after an
exception.
"""

from unpact.hooks.ablation import ablate, ablation_hooks, mean_activation
from unpact.hooks.attention import attention_pattern_name, attention_scaling_hooks, scale_attention
from unpact.hooks.capture import Capture
from unpact.hooks.positions import Factor, Layout, Positions, current_layout, head_mask, position_layout, position_mask
from unpact.hooks.residual import SITES, act_mask, residual_scaling_hooks, scale_positions, site_name

__all__ = [
    "Positions",
    "Factor",
    "position_mask",
    "head_mask",
    "Layout",
    "position_layout",
    "current_layout",
    "scale_attention",
    "attention_scaling_hooks",
    "attention_pattern_name",
    "scale_positions",
    "residual_scaling_hooks",
    "SITES",
    "site_name",
    "act_mask",
    "ablate",
    "ablation_hooks",
    "mean_activation",
    "Capture",
]
