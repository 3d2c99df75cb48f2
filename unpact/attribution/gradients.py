"""Integrated gradients (IG) on the token embeddings, through ``hook_embed``.

For prompt token i with embedding e_i and baseline embedding b_i:

    IG_i = (e_i - b_i) . integral_0^1 dLP/de_i (b + a (e - b)) da

where the whole prompt (every token but BOS) is interpolated together and the
answer's embeddings and all positional embeddings are left alone. The integral is
approximated by a quadrature over ``steps`` points (Gauss-Legendre by default,
as captum does; the Riemann rules are offered too); every step of every item is
one row of a batched, chunked forward + backward. Completeness says the scores
add up to LP(x) - LP(baseline); the result carries the gap

    extras["completeness_gap"] = |sum_i IG_i - (LP(x) - LP(baseline))|
    extras["relative_gap"]     = completeness_gap / |LP(x) - LP(baseline)|

with ``extras["lp_baseline"]`` and ``extras["steps"]``. A fixed step count does not
add up everywhere: where the baseline is the zero vector (``"zero"``, or a pad
token whose embedding row is zero, as on embedded:llama) a norm layer (RMSNorm,
LayerNorm without positional embeddings) puts the whole integral into a narrow
spike near alpha = 0, and 64 Gauss-Legendre points missed it by 14-36% on
embedded:llama. So the steps are **refined per item**: an item whose relative gap
exceeds ``tolerance`` (5%) is recomputed with twice the steps, up to ``max_steps``
(1024); the steps used and the gap that remains are reported either way. The
baseline is a token (``"pad"`` by default, an id, ...; its embedding is the
model's embedding of that token) or ``"zero"`` (the zero vector).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> a = attribute(model, items, method="integrated_gradients")            # doctest: +SKIP
    >>> a[0].extras["relative_gap"] <= 0.05, a[0].extras["steps"]              # doctest: +SKIP
    (True, 128)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unpact import scoring
from unpact.attribution.base import AttributionMethod, make_result, register
from unpact.attribution.prepare import Prepared, baseline_token_id
from unpact.attribution.result import Attribution
from unpact.errors import ConfigError
from unpact.progress import ProgressFactory, null_progress

QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of an IG quadrature on [0, 1] (captum's conventions).

    Example:
        >>> a, w = quadrature(4, "riemann_trapezoid")
        >>> [round(x, 3) for x in a], [round(x, 3) for x in w]
        ([0.0, 0.333, 0.667, 1.0], [0.167, 0.333, 0.333, 0.167])
    """
    if steps < 1:
        raise ConfigError(f"integrated gradients needs steps >= 1, got {steps}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return [float(v) for v in 0.5 * (x + 1)], [float(v) for v in 0.5 * w]
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ConfigError("riemann_trapezoid needs steps >= 2")
        w = [1.0 / (steps - 1)] * steps
        w[0] /= 2
        w[-1] /= 2
        return [float(v) for v in np.linspace(0, 1, steps)], w
    if method in ("riemann_left", "riemann_right", "riemann_middle"):
        shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
        return [(k + shift) / steps for k in range(steps)], [1.0 / steps] * steps
    raise ConfigError(f"unknown IG quadrature {method!r}; known: {', '.join(QUADRATURES)}")


@dataclass
class IGConfig:
    """Options of :class:`IntegratedGradients`.

    Attributes:
        steps: quadrature points of the first pass (64).
        baseline: ``"pad"`` (default), ``"eos"``, ``"bos"``, ``"unk"``, a token id, or ``"zero"``.
        method: quadrature, one of :data:`QUADRATURES` (default Gauss-Legendre, as captum).
        tolerance: largest relative completeness gap accepted; an item above it is
            recomputed with twice the steps (5%: the usual IG sanity bound, Sundararajan
            et al. 2017 suggest within 5%).
        max_steps: the refinement stops here (1024 closed every gap on the shipped models);
            ``max_steps = steps`` turns refinement off. The gap left is reported.
        atol: an absolute gap (nats) below which an item counts as converged (when
            LP(x) and LP(baseline) are nearly equal the relative gap is meaningless).
        max_batch_tokens: token budget of one forward+backward batch (rows x padded length);
            smaller than for plain scoring because activations are kept for the backward.
        quantity: the attributed quantity, a name in :data:`unpact.scoring.QUANTITIES`
            (``"mean"``: LP, the mean answer log-prob, the paper's).
    """

    steps: int = 64
    baseline: int | str = "pad"
    method: str = "gausslegendre"
    tolerance: float = 0.05
    max_steps: int = 1024
    atol: float = 1e-4
    max_batch_tokens: int = 1024
    quantity: str = "mean"

    def __post_init__(self) -> None:
        quadrature(self.steps, self.method)
        scoring.get_quantity(self.quantity)
        if self.max_steps < self.steps:
            raise ConfigError(f"integrated gradients needs max_steps >= steps, got {self.max_steps} < {self.steps}")
        if not self.tolerance > 0:
            raise ConfigError(f"integrated gradients needs tolerance > 0, got {self.tolerance}")


def _interp_hook(base: list[torch.Tensor | None], alpha: torch.Tensor, mask: torch.Tensor, store: list):
    """hook_embed: rows become b + alpha (e - b) on masked positions; keeps e and the result."""

    def hook(act, hook=None):
        b = torch.zeros_like(act) if base[0] is None else base[0].to(act.dtype)
        e = act.detach()
        mixed = b + alpha.to(act.dtype)[:, None, None] * (e - b)
        out = torch.where(mask[:, :, None], mixed, act)
        if store is not None:
            store.append((e, b, out))
        return out

    return hook


@register
class IntegratedGradients(AttributionMethod):
    """IG of LP(x, y) with respect to the prompt's token embeddings (``hook_embed``)."""

    name = "integrated_gradients"
    aliases = ("ig",)
    Config = IGConfig

    def _baseline_rows(self, model, ids: torch.Tensor, mask: torch.Tensor, bid: int | None):
        """Baseline embeddings for packed rows (None means zeros)."""
        if bid is None:
            return None
        with torch.no_grad():
            return model.embed(torch.where(mask, torch.full_like(ids, bid), ids))

    def _integrate(self, model, items: list[Prepared], steps: int, bid: int | None, bar) -> list[torch.Tensor]:
        """Per item, the IG scores of its prompt tokens at ``steps`` quadrature points."""
        cfg = self.config
        alphas, weights = quadrature(steps, cfg.method)
        device = next(iter(model.parameters())).device
        pad = scoring.pad_id(model.tokenizer)
        # rows: (item index, alpha, weight)
        rows = [(k, a, w) for k in range(len(items)) for a, w in zip(alphas, weights)]
        lengths = [len(items[k].prompt_ids) + len(items[k].answer_ids) for k, _, _ in rows]
        totals = [torch.zeros(len(p.prompt_ids), dtype=torch.float64) for p in items]
        for group in scoring.chunks(lengths, cfg.max_batch_tokens):
            seqs = [items[rows[r][0]].seq for r in group]
            packed = scoring.pack(seqs, pad).to(device)
            mask = self._prompt_mask(packed, [items[rows[r][0]] for r in group])
            alpha = torch.tensor([rows[r][1] for r in group], device=device)
            w = torch.tensor([rows[r][2] for r in group], device=device, dtype=torch.float64)
            base = [self._baseline_rows(model, packed.input_ids, mask, bid)]
            store: list = []
            hook = _interp_hook(base, alpha, mask, store)
            with torch.enable_grad():
                logits = scoring.forward_logits(model, packed.input_ids, [("hook_embed", hook)],
                                                keep=scoring.answer_window(packed.target_mask))
                lp = scoring.reduce_logprobs(
                    scoring.token_logprobs(logits, packed.input_ids, packed.target_mask), packed.target_mask, cfg.quantity
                )
                e, b, out = store[-1]
                (g,) = torch.autograd.grad((lp.double() * w).sum(), out)
            contrib = ((e - b).double() * g.double()).sum(-1) * mask
            for j, r in enumerate(group):
                k = rows[r][0]
                n = len(items[k].prompt_ids)
                totals[k] += contrib[j, :n].cpu()
            del logits, lp, store, g, out
            bar.update()
        return totals

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        cfg = self.config
        zero = cfg.baseline == "zero"
        bid = None if zero else baseline_token_id(model.tokenizer, cfg.baseline)
        # endpoints, for LP(x), LP(baseline) and the completeness gap (no grad): a token
        # baseline is just the prompt with its tokens replaced; "zero" zeroes their embeddings
        ends: list[tuple[list[int], list[int]]] = []
        for p in items:
            ends.append(p.seq)
            if bid is None:
                ends.append(p.seq)
            else:
                ends.append((p.prompt_ids[: p.first] + [bid] * (len(p.prompt_ids) - p.first), p.answer_ids))

        def zero_hooks(group):
            firsts = [(items[r // 2].first, len(items[r // 2].prompt_ids)) if r % 2 else None for r in group]
            return [("hook_embed", _ZeroHook(firsts))]

        lp_ends = scoring.score_sequences(
            model, ends, fwd_hooks=zero_hooks if bid is None else None, max_batch_tokens=cfg.max_batch_tokens * 4,
            reduction=cfg.quantity).double().cpu()
        diffs = [float(lp_ends[2 * k]) - float(lp_ends[2 * k + 1]) for k in range(len(items))]

        # refinement: every item at cfg.steps, then those whose gap exceeds the tolerance at 2x, ...
        totals: list[torch.Tensor | None] = [None] * len(items)
        used = [cfg.steps] * len(items)
        pending = list(range(len(items)))
        steps = cfg.steps
        with progress(total=None, desc="integrated gradients") as bar:
            while pending:
                got = self._integrate(model, [items[k] for k in pending], steps, bid, bar)
                again = []
                for k, t in zip(pending, got):
                    totals[k], used[k] = t, steps
                    gap = abs(float(t.sum()) - diffs[k])
                    if gap > max(cfg.tolerance * abs(diffs[k]), cfg.atol) and steps * 2 <= cfg.max_steps:
                        again.append(k)
                pending, steps = again, steps * 2
        options = self.options
        if bid is not None:
            options["baseline_id"] = bid
        out_attr = []
        for k, prep in enumerate(items):
            lp_x, lp_base = float(lp_ends[2 * k]), float(lp_ends[2 * k + 1])
            s = totals[k]
            gap = abs(float(s.sum()) - (lp_x - lp_base))
            extras = {
                "lp_baseline": lp_base,
                "completeness_gap": gap,
                "relative_gap": gap / abs(lp_x - lp_base) if lp_x != lp_base else None,
                "steps": used[k],
            }
            out_attr.append(make_result(model, prep, s.tolist(), lp_x, self.name, options, extras))
        return out_attr

    @staticmethod
    def _prompt_mask(packed: scoring.Packed, preps: list[Prepared]) -> torch.Tensor:
        mask = torch.zeros_like(packed.target_mask)
        for j, p in enumerate(preps):
            mask[j, p.first: len(p.prompt_ids)] = True
        return mask


class _ZeroHook:
    """hook_embed that zeroes the prompt embeddings (after BOS) of the marked rows."""

    def __init__(self, spans):
        self.spans = spans

    def __call__(self, act, hook=None):
        act = act.clone()
        for j, span in enumerate(self.spans):
            if span is not None:
                act[j, span[0]: span[1]] = 0
        return act
