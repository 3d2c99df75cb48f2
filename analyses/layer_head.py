"""Per-layer and per-head tracking: where in the network did the contribution to the answer change most?

Input: per method, the change (after minus before) of each layer's and each
head's contribution to the answer's log-prob, averaged over forget items (and,
if given, over control items). Output: the layers and heads ranked by the size
of the change, and a verdict naming where the change concentrates.

Example:
    >>> r = layer_head_analysis({"ga": {"layer_delta": [0.1, -2.0], "head_delta": [[0.0, 0.1], [-1.5, 0.0]]}})
    >>> r["methods"]["ga"]["top_layer"], r["methods"]["ga"]["top_head"]
    (1, [1, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unpact.analyses._stats import fmt


def layer_head_analysis(per_method: dict[str, dict[str, Any]], top_k: int = 3) -> dict[str, Any]:
    """Rank layers and heads by |change| per method; ``head_delta`` is [layer][head]."""
    methods: dict[str, Any] = {}
    parts = []
    for m, r in per_method.items():
        out: dict[str, Any] = {}
        ld = r.get("layer_delta")
        if ld:
            arr = np.asarray(ld, dtype=float)
            order = np.argsort(-np.abs(arr))
            out["top_layer"] = int(order[0])
            out["layer_ranking"] = [int(i) for i in order[:top_k]]
            out["layer_share_of_change"] = float(np.abs(arr[order[0]]) / max(np.abs(arr).sum(), 1e-12))
        hd = r.get("head_delta")
        if hd:
            arr = np.asarray(hd, dtype=float)
            flat = np.argsort(-np.abs(arr).ravel())
            heads = [list(map(int, np.unravel_index(i, arr.shape))) for i in flat[:top_k]]
            out["top_head"] = heads[0]
            out["head_ranking"] = heads
            out["top_head_delta"] = float(arr[tuple(heads[0])])
            out["head_share_of_change"] = float(np.abs(arr[tuple(heads[0])]) / max(np.abs(arr).sum(), 1e-12))
        methods[m] = out
        if "top_layer" in out or "top_head" in out:
            desc = f"{m}: layer {out.get('top_layer', 'n/a')} (attention + MLP)"
            if "top_head" in out:
                desc += (
                    f", head L{out['top_head'][0]}H{out['top_head'][1]} ({fmt(out['top_head_delta'])}, "
                    f"{fmt(100 * out['head_share_of_change'], 0)}% of the heads' |change|)"
                )
            parts.append(desc)
    verdict = (
        "largest change in contribution to the answer — " + "; ".join(parts) if parts else "no per-layer/per-head data"
    )
    return {"methods": methods, "verdict": verdict}
