"""Integrated gradients (IG) on the token embeddings, through ``hook_embed``, at a bounded cost.

For prompt token i with embedding e_i and baseline embedding b_i:

    IG_i = (e_i - b_i) . integral_0^1 dLP/de_i (b + a (e - b)) da

where the prompt's tokens (every token but BOS and, by default, the prompt format's special
tokens, which keep their embeddings: ``skip_special``) are interpolated together and the
answer's embeddings and all positional embeddings are left alone. By default
(``prefix_cache``) the tokens before the first interpolated one are run once per item and
every point runs from there on (:class:`unpact.scoring.PrefixedRows`). The integral is a
quadrature over ``steps`` points; each point of each item is one row of a batched,
chunked forward + backward (one pass). Completeness says the scores add up to
LP(x) - LP(baseline); the result carries the gap

    extras["completeness_gap"] = |sum_i IG_i - (LP(x) - LP(baseline))|
    extras["relative_gap"]     = completeness_gap / |LP(x) - LP(baseline)|

with ``extras["lp_baseline"]``. A fixed step count does not add up everywhere: where the
baseline is the zero vector (``"zero"``, or a pad token whose embedding row is zero, as
on embedded:llama) a norm layer (RMSNorm, LayerNorm without positional embeddings) puts
nearly the whole integral into a narrow spike near alpha = 0. So:

* the rule is **nested**: Fejer's second rule (the interior Chebyshev points, see
  :func:`nodes`) at ``s`` points is contained in the rule at ``2 s + 1`` points, so an item
  refined from 63 to 127 to 255 points costs 255 passes, not 63 + 127 + 255; every point's
  per-token integrand is kept and the weights of the finer rule are applied to all of them;
* the points are **warped** towards alpha = 0 (alpha = t ** ``warp``, t on the rule's points),
  where the spike is;
* each item is **refined** (its steps doubled) while its relative gap exceeds
  ``tolerance`` (5%) and the next refinement fits its **budget**: ``max_passes``
  forward+backward passes (256) and, optionally, ``max_seconds`` of wall time. A refinement
  that would pass the budget is not started: the item keeps the gap it has and says so.

Per item the result reports ``extras["steps"]`` (the rule's points at the end),
``extras["passes"]`` (forward+backward passes spent on it: equal to ``steps`` for a nested
rule), ``extras["converged"]`` (gap within the tolerance), ``extras["budget_stopped"]`` and
``extras["stopped_by"]`` (``"passes"``, ``"seconds"`` or None). The baseline is a token
(``"pad"`` by default, an id, ...; its embedding is the model's embedding of that token)
or ``"zero"`` (the zero vector).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> a = attribute(model, items, method="integrated_gradients")            # doctest: +SKIP
    >>> a[0].extras["relative_gap"] <= 0.05, a[0].extras["steps"]              # doctest: +SKIP
    (True, 127)
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from unpact import scoring
from unpact.attribution.base import AttributionMethod, make_result, register
from unpact.attribution.prepare import Prepared, baseline_token_id
from unpact.attribution.result import Attribution
from unpact.errors import ConfigError
from unpact.progress import ProgressFactory, null_progress

QUADRATURES = ("fejer2", "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

#: Rules whose points at ``refined_steps(s)`` include every point at ``s``: refining them only
#: evaluates the new points. The others (Gauss-Legendre, the midpoint rule) start over.
NESTED = ("fejer2", "riemann_trapezoid", "riemann_left", "riemann_right")

#: One quadrature point: ``(key, alpha, weight)``; ``key`` names the point across step counts of
#: a nested rule (an exact fraction), so a point computed at ``s`` steps is found again at ``2s``.
Node = tuple[Hashable, float, float]


def _fejer2_weights(n: int) -> np.ndarray:
    """Weights on [0, 1] of Fejer's second rule with ``n`` intervals (its ``n - 1`` interior points)."""
    theta = np.arange(1, n) * np.pi / n
    k = np.arange(1, n // 2 + 1)
    w = 4 * np.sin(theta) / n * (np.sin(np.outer(theta, 2 * k - 1)) / (2 * k - 1)).sum(1)
    return w / 2


def nodes(steps: int, rule: str = "fejer2", warp: float = 1.0) -> list[Node]:
    """The ``steps`` points of an IG quadrature on [0, 1]: ``(key, alpha, weight)``, alpha ascending.

    The rule places points t on [0, 1]; ``warp`` p substitutes alpha = t ** p (weight
    w p t ** (p - 1)), the same integral with its points crowded towards alpha = 0, where a
    baseline at the zero vector puts a norm layer's narrow spike (p = 1: no substitution).

    * ``"fejer2"``: Fejer's second rule, the interior Chebyshev points
      alpha_j = (1 - cos(j pi / n)) / 2, j = 1..n-1 with n = steps + 1. Open (alpha = 0, where a
      zero baseline meets a norm layer's 1/sqrt(eps) gradient, is never evaluated), clustered
      towards both ends like Gauss-Legendre and about as accurate on smooth integrands, and
      nested: the points at ``2 * steps + 1`` include those at ``steps``.
    * ``"gausslegendre"``: captum's default; not nested.
    * ``"riemann_trapezoid"`` (nested at ``2 * steps - 1``), ``"riemann_left"``, ``"riemann_right"``
      (nested at ``2 * steps``), ``"riemann_middle"`` (not nested under doubling): captum's conventions.

    Example:
        >>> [(round(a, 3), round(w, 3)) for _, a, w in nodes(3, "fejer2")]
        [(0.146, 0.333), (0.5, 0.333), (0.854, 0.333)]
        >>> {k for k, _, _ in nodes(3, "fejer2")} <= {k for k, _, _ in nodes(7, "fejer2")}
        True
    """
    if warp < 1:
        raise ConfigError(f"integrated gradients needs warp >= 1, got {warp}")
    got = _rule_nodes(steps, rule)
    if warp == 1:
        return got
    return [(k, t**warp, w * warp * t ** (warp - 1)) for k, t, w in got]


def _rule_nodes(steps: int, rule: str) -> list[Node]:
    """:func:`nodes` before the warp."""
    if steps < 1:
        raise ConfigError(f"integrated gradients needs steps >= 1, got {steps}")
    if rule == "fejer2":
        n = steps + 1
        keys = [Fraction(j, n) for j in range(1, n)]
        return [
            (k, (1 - math.cos(math.pi * k.numerator / k.denominator)) / 2, float(w))
            for k, w in zip(keys, _fejer2_weights(n))
        ]
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return [
            (("gausslegendre", steps, i), float(0.5 * (a + 1)), float(0.5 * v)) for i, (a, v) in enumerate(zip(x, w))
        ]
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ConfigError("riemann_trapezoid needs steps >= 2")
        w = [1.0 / (steps - 1)] * steps
        w[0] /= 2
        w[-1] /= 2
        keys = [Fraction(k, steps - 1) for k in range(steps)]
        return [(k, k.numerator / k.denominator, v) for k, v in zip(keys, w)]
    if rule in ("riemann_left", "riemann_right", "riemann_middle"):
        shift = {"riemann_left": 0, "riemann_right": 2, "riemann_middle": 1}[rule]
        keys = [Fraction(2 * k + shift, 2 * steps) for k in range(steps)]
        return [(k, k.numerator / k.denominator, 1.0 / steps) for k in keys]
    raise ConfigError(f"unknown IG quadrature {rule!r}; known: {', '.join(QUADRATURES)}")


def quadrature(steps: int, rule: str = "fejer2", warp: float = 1.0) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of an IG quadrature on [0, 1] (see :func:`nodes`).

    Example:
        >>> a, w = quadrature(4, "riemann_trapezoid")
        >>> [round(x, 3) for x in a], [round(x, 3) for x in w]
        ([0.0, 0.333, 0.667, 1.0], [0.167, 0.333, 0.333, 0.167])
    """
    got = nodes(steps, rule, warp)
    return [a for _, a, _ in got], [w for _, _, w in got]


def refined_steps(steps: int, rule: str) -> int:
    """The step count a refinement of ``steps`` moves to: the smallest one with halved spacing
    whose points include the current ones for a nested rule, twice the steps otherwise.

    Example:
        >>> refined_steps(63, "fejer2"), refined_steps(65, "riemann_trapezoid"), refined_steps(64, "gausslegendre")
        (127, 129, 128)
    """
    if rule == "fejer2":
        return 2 * steps + 1
    if rule == "riemann_trapezoid":
        return 2 * steps - 1
    return 2 * steps


#: A forward+backward pass keeps every layer's activations (and IG runs one row per
#: interpolation point), so IG's batches get a sixteenth of the forward budget
#: (unpact.scoring.DEFAULT_MAX_BATCH_TOKENS by default; the main job's
#: unpact.stages.BACKWARD_SHARE takes the same share of its own budget).
IG_BATCH_SHARE = 16


@dataclass
class IGConfig:
    """Options of :class:`IntegratedGradients`.

    Attributes:
        steps: quadrature points of the first pass (63: Fejer's second rule with 64 intervals,
            as many points as the fixed 64 Gauss-Legendre steps of earlier versions, which were
            within 0.1% on the embedded models whose baseline is not the zero vector; its
            refinements are 127 and 255 points, so the default budget holds two of them).
        baseline: ``"pad"`` (default), ``"eos"``, ``"bos"``, ``"unk"``, a token id, or ``"zero"``.
        rule: the quadrature, one of :data:`QUADRATURES` (default ``"fejer2"``: nested, so a refinement
            reuses every point already computed, and open, clustered at the ends, about as
            accurate as captum's Gauss-Legendre; see :func:`nodes`).
        warp: alpha = t ** warp over the rule's points t (3: on the three forget10 items of
            embedded:llama with its zero pad row, 255 Fejer points left gaps of 2-5% unwarped,
            0.03-0.6% at warp 2 and 0.03-0.2% at warp 3; embedded:qwen2 with ``baseline="zero"``
            4-20%, 2-6% and 0.5-4.5%; embedded:gpt2 stays within 0.01% at 63 points either way).
            1 turns the substitution off.
        tolerance: largest relative completeness gap accepted; an item above it is refined
            (5%: the usual IG sanity bound, Sundararajan et al. 2017 suggest within 5%).
        max_passes: the per-item budget of forward+backward passes (interpolation points,
            counted over every refinement). A refinement that would pass it is not started; the
            item keeps the gap it has and says the budget stopped it (256: the first pass and
            two refinements, 255 points, closed every gap on the shipped models; 4x the first
            pass bounds the cost of IG at 4x a fixed 64-step run, where the old refinement to
            1024 Gauss-Legendre steps could spend 1984 passes, 31x). ``max_passes = steps`` turns refinement off.
        max_seconds: an optional wall-clock budget per item (None: no time limit, so results do
            not depend on the machine). An item's time is its share (by tokens) of the batches
            its points ran in; a refinement whose predicted time would pass the budget is not started.
        atol: an absolute gap (nats) below which an item counts as converged (when
            LP(x) and LP(baseline) are nearly equal the relative gap is meaningless).
        max_batch_tokens: token budget of one forward+backward batch (rows x padded length;
            the forward budget over :data:`IG_BATCH_SHARE`, because activations are kept for the backward).
        quantity: the attributed quantity, a name in :data:`unpact.scoring.QUANTITIES`
            (``"mean"``: LP, the mean answer log-prob, the paper's).
        skip_special: special tokens (BOS, the tokenizer's special tokens, the prompt format's
            fixed text) are not interpolated: they keep their embeddings at every point and in
            the baseline, and score 0 (captum's ``skip_tokens`` convention). The baseline is then
            the prompt's format with the question's tokens at the baseline; they are never
            keywords, and no analysis reads their score. False interpolates every token after BOS.
        prefix_cache: the tokens before the first interpolated one are the same at every point
            of an item, so their keys and values are computed once per item and each point runs
            only from there on (:class:`unpact.scoring.PrefixedRows`: the bridge's weights in HF's
            own attention, so hooks on the bridge are not applied, as in leave-one-out's prefix
            cache). Under a chat template with a system prompt that prefix is most of the prompt.
            False runs every point whole through the bridge, interpolating at ``hook_embed``.
    """

    steps: int = 63
    baseline: int | str = "pad"
    rule: str = "fejer2"
    warp: float = 3.0
    tolerance: float = 0.05
    max_passes: int = 256
    max_seconds: float | None = None
    atol: float = 1e-4
    max_batch_tokens: int = scoring.DEFAULT_MAX_BATCH_TOKENS // IG_BATCH_SHARE
    quantity: str = "mean"
    skip_special: bool = True
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        nodes(self.steps, self.rule, self.warp)
        scoring.get_quantity(self.quantity)
        if self.max_passes < self.steps:
            raise ConfigError(f"integrated gradients needs max_passes >= steps, got {self.max_passes} < {self.steps}")
        if not self.tolerance > 0:
            raise ConfigError(f"integrated gradients needs tolerance > 0, got {self.tolerance}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"integrated gradients needs max_seconds > 0 or None, got {self.max_seconds}")


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


@dataclass
class _Item:
    """The refinement state of one item: its points so far and what they cost."""

    diff: float  # LP(x) - LP(baseline)
    steps: int  # the rule's step count now
    points: dict[Hashable, Tensor] = field(default_factory=dict)  # key -> (e - b) . dLP/de at that point
    passes: int = 0  # forward+backward rows spent
    seconds: float = 0.0  # share of the batches' wall time
    stopped_by: str | None = None  # "passes" / "seconds" when the budget stopped it

    def scores(self, rule: str, warp: float) -> Float[Tensor, " prompt"]:
        """The IG scores at the current step count: the rule's weighted sum of its points."""
        total = None
        for key, _, w in nodes(self.steps, rule, warp):
            term = w * self.points[key]
            total = term if total is None else total + term
        return total


@register
class IntegratedGradients(AttributionMethod):
    """IG of LP(x, y) with respect to the prompt's token embeddings (``hook_embed``)."""

    name = "integrated_gradients"
    aliases = ("ig",)
    config_class = IGConfig

    def _baseline_rows(self, model, ids: torch.Tensor, mask: torch.Tensor, bid: int | None):
        """Baseline embeddings for packed rows (None means zeros)."""
        if bid is None:
            return None
        with torch.no_grad():
            return model.embed(torch.where(mask, torch.full_like(ids, bid), ids))

    def _points(
        self,
        model,
        items: list[Prepared],
        where: list[list[int]],
        rows: list[tuple[int, Hashable, float]],
        bid: int | None,
        bar,
    ) -> tuple[list[Float[Tensor, " prompt"]], list[float]]:
        """For each row ``(item index, key, alpha)``: the item's per-token integrand
        (e_i - b_i) . dLP/de_i at b + alpha (e - b) over its interpolated positions ``where``,
        and the row's share of its batch's wall time.

        Rows of every item are batched together, chunked to ``max_batch_tokens``; one
        forward + backward per chunk (rows are independent, so the gradient of the batch's summed
        LP gives each row its own). With ``prefix_cache`` each row runs after its item's cached
        prefix (:meth:`_points_prefixed`); without it, or where the cache cannot be shared, every
        row runs whole through the bridge (:meth:`_points_whole`).
        """
        if self.config.prefix_cache:
            runner = scoring.PrefixedRows.build(
                model,
                [p.prompt_ids for p in items],
                [items[k].seq for k, _, _ in rows],
                [k for k, _, _ in rows],
                [min(where[k], default=len(items[k].prompt_ids)) for k, _, _ in rows],
                max_batch_tokens=self.config.max_batch_tokens,
            )
            if runner is not None:
                return self._points_prefixed(model, runner, items, where, rows, bid, bar)
        return self._points_whole(model, items, where, rows, bid, bar)

    def _points_prefixed(self, model, runner, items, where, rows, bid, bar):
        cfg = self.config
        out: list = [None] * len(rows)
        secs = [0.0] * len(rows)
        table = runner.hf.get_input_embeddings().weight
        for group in runner.groups:
            t0 = time.perf_counter()
            store: list = []

            def edit(embeds, placed, group=group, store=store):
                e = embeds.detach()
                mask = torch.zeros(e.shape[:2], dtype=torch.bool, device=e.device)
                for r, (j, col) in enumerate(placed):
                    start = runner.starts[j]
                    mask[r, [col + p - start for p in where[rows[j][0]]]] = True
                b = torch.zeros_like(e) if bid is None else table[bid].detach().to(e.dtype).expand_as(e)
                alpha = torch.tensor([rows[j][2] for j in group], device=e.device, dtype=e.dtype)
                mixed = torch.where(mask[:, :, None], b + alpha[:, None, None] * (e - b), e).requires_grad_(True)
                store.append((e, b, mixed, mask, placed))
                return mixed

            with torch.enable_grad():
                lp = runner.logprobs(group, cfg.quantity, edit)
                e, b, act, mask, placed = store[-1]
                (g,) = torch.autograd.grad(lp.double().sum(), act)
            contrib = (((e - b).double() * g.double()).sum(-1) * mask).cpu()
            for r, (j, col) in enumerate(placed):
                k = rows[j][0]
                scores = torch.zeros(len(items[k].prompt_ids), dtype=torch.float64)
                start = runner.starts[j]
                scores[where[k]] = contrib[r, [col + p - start for p in where[k]]]
                out[j] = scores
            del lp, store, g, act
            self._share_time(time.perf_counter() - t0, group, runner.rest, secs)
            bar.update()
        return out, secs

    def _points_whole(self, model, items, where, rows, bid, bar):
        cfg = self.config
        device = next(iter(model.parameters())).device
        pad = scoring.pad_id(model.tokenizer)
        lengths = [len(items[k].prompt_ids) + len(items[k].answer_ids) for k, _, _ in rows]
        out: list = [None] * len(rows)
        secs = [0.0] * len(rows)
        for group in scoring.chunks(lengths, cfg.max_batch_tokens):
            t0 = time.perf_counter()
            seqs = [items[rows[r][0]].seq for r in group]
            packed = scoring.pack(seqs, pad).to(device)
            mask = self._prompt_mask(packed, [where[rows[r][0]] for r in group])
            alpha = torch.tensor([rows[r][2] for r in group], device=device)
            base = [self._baseline_rows(model, packed.input_ids, mask, bid)]
            store: list = []
            hook = _interp_hook(base, alpha, mask, store)
            with torch.enable_grad():
                tok_lp = scoring.scored_token_logprobs(
                    model, packed.input_ids, packed.target_mask, [("hook_embed", hook)]
                )
                lp = scoring.reduce_logprobs(tok_lp, packed.target_mask, cfg.quantity)
                e, b, act = store[-1]
                (g,) = torch.autograd.grad(lp.double().sum(), act)
            contrib = (((e - b).double() * g.double()).sum(-1) * mask).cpu()
            for j, r in enumerate(group):
                out[r] = contrib[j, : len(items[rows[r][0]].prompt_ids)].clone()
            del tok_lp, lp, store, g, act
            self._share_time(time.perf_counter() - t0, group, lengths, secs)
            bar.update()
        return out, secs

    @staticmethod
    def _share_time(dt: float, group: list[int], lengths: list[int], secs: list[float]) -> None:
        """Each row of a batch gets the batch's wall time in proportion to its tokens."""
        total = sum(lengths[r] for r in group) or 1
        for r in group:
            secs[r] = dt * lengths[r] / total

    def _affordable(self, st: _Item, steps: int) -> str | None:
        """None when the item may move to ``steps`` points, else the budget that forbids it."""
        cfg = self.config
        known = set(st.points)
        new = sum(1 for key, _, _ in nodes(steps, cfg.rule, cfg.warp) if key not in known)
        if st.passes + new > cfg.max_passes:
            return "passes"
        if cfg.max_seconds is not None and st.passes and st.seconds + new * st.seconds / st.passes > cfg.max_seconds:
            return "seconds"
        return None

    def _refine(
        self, model, items: list[Prepared], where: list[list[int]], diffs: list[float], bid: int | None, bar
    ) -> list[_Item]:
        """Every item at ``steps`` points, then each item whose completeness gap is above the
        tolerance at :func:`refined_steps` points (only the new points are evaluated when the rule
        is nested), until the gap is within it or the budget stops the item."""
        cfg = self.config
        state = [_Item(diff=d, steps=cfg.steps) for d in diffs]
        pending = list(range(len(items)))
        while pending:
            rows = [
                (k, key, a)
                for k in pending
                for key, a, _ in nodes(state[k].steps, cfg.rule, cfg.warp)
                if key not in state[k].points
            ]
            got, secs = self._points(model, items, where, rows, bid, bar)
            for (k, key, _), g, t in zip(rows, got, secs):
                state[k].points[key] = g
                state[k].passes += 1
                state[k].seconds += t
            again = []
            for k in pending:
                st = state[k]
                gap = abs(float(st.scores(cfg.rule, cfg.warp).sum()) - st.diff)
                if gap <= max(cfg.tolerance * abs(st.diff), cfg.atol):
                    continue
                nxt = refined_steps(st.steps, cfg.rule)
                st.stopped_by = self._affordable(st, nxt)
                if st.stopped_by is None:
                    st.steps = nxt
                    if cfg.rule not in NESTED:  # a rule that is not nested starts over
                        st.points = {}
                    again.append(k)
            pending = again
        return state

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        cfg = self.config
        zero = cfg.baseline == "zero"
        bid = None if zero else baseline_token_id(model.tokenizer, cfg.baseline)
        where = [p.positions(cfg.skip_special) for p in items]
        # endpoints, for LP(x), LP(baseline) and the completeness gap (no grad): a token
        # baseline is just the prompt with its interpolated tokens replaced; "zero" zeroes their embeddings
        ends: list[tuple[list[int], list[int]]] = []
        for p, w in zip(items, where):
            ends.append(p.seq)
            if bid is None:
                ends.append(p.seq)
            else:
                at = set(w)
                ends.append(([bid if i in at else t for i, t in enumerate(p.prompt_ids)], p.answer_ids))

        def zero_hooks(group):
            return [("hook_embed", _ZeroHook([where[r // 2] if r % 2 else None for r in group]))]

        lp_ends = (
            scoring.score_sequences(
                model,
                ends,
                fwd_hooks=zero_hooks if bid is None else None,
                max_batch_tokens=cfg.max_batch_tokens * 4,
                reduction=cfg.quantity,
            )
            .double()
            .cpu()
        )
        diffs = [float(lp_ends[2 * k]) - float(lp_ends[2 * k + 1]) for k in range(len(items))]

        with progress(total=None, desc="integrated gradients") as bar:
            state = self._refine(model, items, where, diffs, bid, bar)
        options = self.options
        if bid is not None:
            options["baseline_id"] = bid
        out_attr = []
        for k, prep in enumerate(items):
            lp_x, lp_base = float(lp_ends[2 * k]), float(lp_ends[2 * k + 1])
            st = state[k]
            s = st.scores(cfg.rule, cfg.warp)
            gap = abs(float(s.sum()) - (lp_x - lp_base))
            extras = {
                "lp_baseline": lp_base,
                "completeness_gap": gap,
                "relative_gap": gap / abs(lp_x - lp_base) if lp_x != lp_base else None,
                "steps": st.steps,
                "passes": st.passes,
                "converged": gap <= max(cfg.tolerance * abs(lp_x - lp_base), cfg.atol),
                "budget_stopped": st.stopped_by is not None,
                "stopped_by": st.stopped_by,
                "skipped": len(prep.prompt_ids) - prep.first - len(where[k]),
            }
            out_attr.append(make_result(model, prep, s.tolist(), lp_x, self.name, options, extras))
        return out_attr

    @staticmethod
    def _prompt_mask(packed: scoring.Packed, where: list[list[int]]) -> torch.Tensor:
        """True at each row's interpolated positions."""
        mask = torch.zeros_like(packed.target_mask)
        for j, positions in enumerate(where):
            mask[j, positions] = True
        return mask


class _ZeroHook:
    """hook_embed that zeroes the embeddings at the given positions of the marked rows (None: left alone)."""

    def __init__(self, positions: list[list[int] | None]):
        self.positions = positions

    def __call__(self, act, hook=None):
        act = act.clone()
        for j, at in enumerate(self.positions):
            if at:
                act[j, at] = 0
        return act
