"""Leave-one-out (LOO) contributions, the paper's measure.

    C(x_i, y) = LP(x, y) - LP(x without x_i, y)

LP is the mean log-prob of the answer tokens under teacher forcing
(:mod:`unpact.scoring`). ``mode="delete"`` (the paper) removes token i, so later
tokens move one position left; ``mode="baseline"`` replaces it by a baseline
token instead (captum's ``FeatureAblation`` convention; positions stay put).

Special tokens (BOS, the tokenizer's special tokens, the prompt format's fixed
text: :func:`unpact.attribution.prepare.special_mask`) are not ablated by
default (``skip_special=True``) and score 0. They are never keywords, and
KeyTokens, tracking and the collapse analysis read only the other tokens, so
no result that uses LOO changes; in a chat format with a system prompt they
are most of the prompt (SmolLM2's template: 21 of about 30 tokens), and the
early ones are the costliest ablations under the prefix cache. The result's
``options["skipped"]`` counts them; ``skip_special=False`` ablates every
token after BOS.

All ablated prompts of all items are scored in one batched call, chunked to
``max_batch_tokens``: n + 1 rows per item, never one forward per token. BOS is
never ablated (score 0). By default (``prefix_cache=True``) the call is
:func:`unpact.scoring.score_variants`: ablation i shares its first i tokens with
the original prompt, so those keys and values are computed once per item and
each ablated row runs only the tokens from position i on, with logits only at
the answer positions (about 2-3x less work than scoring every row whole; equal
within 1e-5). It runs the bridge's weights through HF's own attention, so
hooks on the bridge are not applied; ``prefix_cache=False`` scores every row
whole through the bridge with :func:`unpact.scoring.score_sequences`.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.attribution import attribute                       # doctest: +SKIP
    >>> a = attribute(model, ("Question: Where was Ana Lind born?\\nAnswer:", " Lima"), method="loo")  # doctest: +SKIP
    >>> a.top(2)                                                         # doctest: +SKIP
    [(' Lind', 0.41), (' born', 0.12)]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unpact import scoring
from unpact.attribution.base import AttributionMethod, make_result, register
from unpact.attribution.prepare import Prepared, baseline_token_id
from unpact.attribution.result import Attribution
from unpact.errors import ConfigError, InputError
from unpact.progress import ProgressFactory, null_progress


@dataclass
class LooConfig:
    """Options of :class:`LeaveOneOut`.

    Attributes:
        mode: ``"delete"`` (the paper: drop token i) or ``"baseline"`` (replace it by ``baseline``).
        baseline: token for ``mode="baseline"``: an id or ``"pad"``/``"eos"``/``"bos"``/``"unk"``.
        max_batch_tokens: token budget of one forward batch (rows x padded length).
        prefix_cache: reuse each prompt's keys/values for the tokens an ablation leaves
            unchanged (:func:`unpact.scoring.score_variants`); ``False`` scores every
            ablated sequence whole through the bridge (hooks on the bridge apply).
        quantity: the attributed quantity, a name in :data:`unpact.scoring.QUANTITIES`
            (``"mean"``: LP, the mean answer log-prob, the paper's).
        skip_special: do not ablate special tokens (score 0; see the module docstring).
    """

    mode: str = "delete"
    baseline: int | str = "pad"
    max_batch_tokens: int = scoring.DEFAULT_MAX_BATCH_TOKENS
    prefix_cache: bool = True
    quantity: str = "mean"
    skip_special: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("delete", "baseline"):
            raise ConfigError(f"loo mode must be 'delete' or 'baseline', got {self.mode!r}")
        scoring.get_quantity(self.quantity)


def ablated_prompts(
    prep: Prepared, mode: str, baseline_id: int | None = None, positions: list[int] | None = None
) -> list[list[int]]:
    """The ablated prompts of one item at ``positions`` (default: ``prep.first`` .. n-1), in order."""
    p = prep.prompt_ids
    out = []
    for i in prep.positions() if positions is None else positions:
        if mode == "delete":
            q = p[:i] + p[i + 1 :]
            if not q:
                raise InputError(
                    f"item {prep.item_id!r}: deleting the only prompt token leaves no prompt; "
                    "use a tokenizer with BOS or mode='baseline'"
                )
        else:
            q = list(p)
            q[i] = int(baseline_id)  # type: ignore[arg-type]
        out.append(q)
    return out


@register
class LeaveOneOut(AttributionMethod):
    """C_i = LP(x, y) - LP(x with token i deleted or replaced, y), all ablations batched."""

    name = "loo"
    aliases = ("leave_one_out",)
    config_class = LooConfig

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        cfg = self.config
        bid = baseline_token_id(model.tokenizer, cfg.baseline) if cfg.mode == "baseline" else None
        seqs: list[tuple[list[int], list[int]]] = []
        base_of: list[int] = []
        shared: list[int] = []
        spans = []
        positions = []
        for k, prep in enumerate(items):
            start = len(seqs)
            where = prep.positions(cfg.skip_special)
            positions.append(where)
            seqs.append(prep.seq)
            shared.append(len(prep.prompt_ids))
            seqs.extend((q, prep.answer_ids) for q in ablated_prompts(prep, cfg.mode, bid, where))
            shared.extend(where)  # ablation i keeps tokens < i
            base_of.extend([k] * (len(seqs) - start))
            spans.append((start, len(seqs)))
        with progress(total=1, desc="loo") as bar:
            if cfg.prefix_cache:
                lp = scoring.score_variants(
                    model,
                    [prep.prompt_ids for prep in items],
                    seqs,
                    base_of,
                    shared,
                    reduction=cfg.quantity,
                    max_batch_tokens=cfg.max_batch_tokens,
                )
            else:
                lp = scoring.score_sequences(model, seqs, reduction=cfg.quantity, max_batch_tokens=cfg.max_batch_tokens)
            bar.update()
        lp = lp.double().cpu()
        options = self.options
        if bid is not None:
            options["baseline_id"] = bid
        out = []
        for prep, (a, b), where in zip(items, spans, positions):
            full = lp[a]
            scores = torch.zeros(len(prep.prompt_ids), dtype=torch.float64)
            scores[where] = full - lp[a + 1 : b]
            skipped = len(prep.prompt_ids) - prep.first - len(where)
            out.append(
                make_result(model, prep, scores.tolist(), float(full), self.name, dict(options, skipped=skipped))
            )
        return out
