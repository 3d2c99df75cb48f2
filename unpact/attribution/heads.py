"""Per-layer, per-head, per-source-token flow of the answer's log-prob (``heads``).

For layer l, head h, source position s and destination position t, the head
writes ``pattern[h, t, s] * (v_s W_O^h)`` into the residual stream at t (v_s is
``attn.hook_v`` at s, bias included, so summing over s gives the head's output
``z_t W_O^h``). Two readings of that vector:

* **direct**: projected through the final norm with its scale frozen
  (``ln_final.hook_scale`` treated as a constant, as TransformerLens does for
  direct logit attribution) onto the unembedding of the next answer token, and
  averaged over answer positions like LP. This is an exact linear decomposition of
  the *mean answer logit*:

      mean logit = embed + pos_embed + sum_l (sum_h sum_s head_direct[l][h][s]
                   + attn_bias_direct[l] + mlp_direct[l]) + constant

  where ``constant`` is the final norm's bias and ``b_U`` read at the answer
  tokens. The per-layer terms are the residual decomposition of
  ``ActivationCache.decompose_resid`` (embed, pos_embed, each layer's attention
  and MLP output) read the same way.
* **total** (first order): the same vector dotted with dLP/d(attention output of
  layer l) at t, summed over t; it counts every downstream path to LP, to first
  order. Per layer, ``attn_total[l]`` and ``mlp_total[l]`` are the block outputs
  dotted with their gradients; sum_h sum_s head_total + attn_bias_total = attn_total.

``scores[s]`` of the result is sum_{l,h} head_total[l][h][s] over prompt tokens
(the first-order flow from prompt token s through every head). Sources in the
extras run over the whole sequence (prompt then answer tokens), so the sums over
sources hold exactly. One forward and one backward per chunk of items.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> a = attribute(model, items, method="heads")[0]                      # doctest: +SKIP
    >>> len(a.extras["head_direct"]), len(a.extras["head_direct"][0])      # doctest: +SKIP
    (4, 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unpact import scoring
from unpact.attribution.base import AttributionMethod, make_result, register
from unpact.attribution.prepare import Prepared
from unpact.attribution.result import Attribution
from unpact.errors import ConfigError
from unpact.hooks.names import act_name
from unpact.progress import ProgressFactory, null_progress


@dataclass
class HeadsConfig:
    """Options of :class:`HeadFlow`.

    Attributes:
        max_batch_tokens: token budget of one forward+backward batch.

    The attributed quantity is LP, the mean answer log-prob, always (no ``quantity`` option as
    ``loo`` and integrated gradients have): the direct reading decomposes the *mean* answer logit,
    so another quantity would leave the two readings about different things.
    """

    max_batch_tokens: int = 4096


def _final_norm(model):
    """(kind, weight, bias) of the final norm: kind is ``"LN"`` or ``"RMS"``."""
    kind = getattr(model.cfg, "normalization_type", None)
    if kind not in ("LN", "LNPre", "RMS", "RMSPre"):
        raise ConfigError(f"heads attribution supports LayerNorm and RMSNorm models, not normalization {kind!r}")
    mod = getattr(model.ln_final, "original_component", model.ln_final)
    w = getattr(mod, "weight", None)
    b = getattr(mod, "bias", None)
    d = model.cfg.d_model
    w = torch.ones(d) if w is None else w.detach()
    b = torch.zeros(d) if b is None else b.detach()
    if "Gemma" in type(mod).__name__:  # Gemma's RMSNorm multiplies by (1 + weight)
        w = 1 + w
    return ("LN" if kind.startswith("LN") else "RMS"), w, b


def _b_O(model) -> torch.Tensor:
    try:
        return model.b_O.detach()
    except AttributeError:
        return torch.zeros(model.cfg.n_layers, model.cfg.d_model)


@dataclass
class Readout:
    """The weights the decomposition reads the residual stream with, in float32 on the model's device.

    ``kind`` is ``"LN"`` or ``"RMS"`` (the final norm), ``w_ln``/``b_ln`` its weight and bias
    ``[d_model]``, ``W_O`` the heads' output matrices ``[layer head d_head d_model]``, ``b_O``
    their biases ``[layer d_model]``, ``W_U``/``b_U`` the unembedding ``[d_model vocab]``/``[vocab]``.
    """

    kind: str
    w_ln: torch.Tensor
    b_ln: torch.Tensor
    W_O: torch.Tensor
    b_O: torch.Tensor
    W_U: torch.Tensor
    b_U: torch.Tensor

    @classmethod
    def of(cls, model) -> Readout:
        kind, w_ln, b_ln = _final_norm(model)
        W_U = model.W_U.detach().float()
        b_U = model.b_U.detach().float() if getattr(model, "b_U", None) is not None else torch.zeros(W_U.shape[1])
        device = next(iter(model.parameters())).device
        # float32 whatever the model's dtype, so half-precision models work and sums stay exact enough
        return cls(
            kind, w_ln.float(), b_ln.float(), model.W_O.detach().float(), _b_O(model).float().to(device), W_U, b_U
        )


@dataclass
class Captured:
    """One forward+backward of a packed batch: the activations the readings need and LP's gradients.

    ``acts``: hook name -> activation (detached, float32): embeddings, each layer's attention
    pattern ``[batch head q k]``, values ``[batch k head d_head]``, attention and MLP outputs
    ``[batch pos d_model]`` and the final norm's scale; ``grads``: dLP/d(activation) for the
    embeddings and each block output; ``rows``: the logits ``[n_answer_tokens vocab]`` of the
    positions that predict an answer token (:func:`unpact.scoring.answer_rows` order); ``lp``: LP
    per item ``[batch]``.
    """

    acts: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    rows: torch.Tensor
    lp: torch.Tensor


def capture(model, packed, n_layers: int) -> Captured:
    """Run ``packed`` forward with hooks that keep what :func:`decompose` reads, and take LP's gradients."""
    store: dict[str, torch.Tensor] = {}

    def keep(name, detach):
        def hook(act, hook=None):
            store[name] = act.detach() if detach else act
            return act

        return hook

    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    grad_names = ["hook_embed"]
    for layer in range(n_layers):
        names += [act_name("pattern", layer), act_name("v", layer)]
        grad_names += [act_name("attn_out", layer), act_name("mlp_out", layer)]
    hook_points = set(model.hook_dict) if hasattr(model, "hook_dict") else set(names + grad_names)
    fwd = [(n, keep(n, True)) for n in names if n in hook_points and n != "hook_embed"]
    fwd += [(n, keep(n, False)) for n in grad_names]
    ids, tmask = packed.input_ids, packed.target_mask
    with torch.enable_grad():
        rows = scoring.answer_row_logits(model, ids, tmask, fwd)  # unembedded only where an answer token is predicted
        lp = scoring.reduce_logprobs(scoring.row_logprobs(rows, ids, tmask), tmask)
        grads = torch.autograd.grad(lp.sum(), [store[n] for n in grad_names])
    return Captured(
        acts={n: t.detach().float() for n, t in store.items()},
        grads={n: g.detach().float() for n, g in zip(grad_names, grads)},
        rows=rows.detach().float(),
        lp=lp.detach(),
    )


def answer_direction(
    ids: torch.Tensor, tmask: torch.Tensor, scale: torch.Tensor, readout: Readout
) -> tuple[torch.Tensor, torch.Tensor]:
    """``u[b, t]`` = d(mean answer logit)/d(final residual at t) with the final norm's scale frozen
    ``[batch pos d_model]`` (zero where t predicts no answer token), and the constant term per item
    ``[batch]`` (the final norm's bias and ``b_U`` read at the answer tokens)."""
    pred = tmask.clone()
    pred[:, 0] = False
    pred = torch.roll(pred, -1, dims=1)  # positions t that predict an answer token at t+1
    pred[:, -1] = False
    n_answer = tmask.sum(-1).clamp(min=1).to(readout.W_U.dtype)
    next_ids = torch.roll(ids, -1, dims=1)
    direction = (readout.w_ln[:, None] * readout.W_U)[:, next_ids].permute(1, 2, 0)  # [B T d]
    if readout.kind == "LN":
        direction = direction - direction.mean(-1, keepdim=True)
    scale = scale[..., 0] if scale.dim() == 3 else scale
    u = direction / scale[..., None] * (pred / n_answer[:, None])[..., None]
    const_t = (readout.b_ln @ readout.W_U)[next_ids] + readout.b_U[next_ids]
    return u, (const_t * pred).sum(-1) / n_answer


def mean_answer_logit(rows: torch.Tensor, ids: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
    """The mean logit of the answer tokens per item ``[batch]``, from the answer rows' logits
    ``[n_answer_tokens vocab]`` (:func:`unpact.scoring.answer_rows` order)."""
    b_idx, t_idx = scoring.answer_rows(tmask)
    answer_logit = rows.gather(-1, ids[b_idx, t_idx, None])[:, 0]  # the logit of each answer token
    n_answer = tmask.sum(-1).clamp(min=1).to(answer_logit.dtype)
    total = torch.zeros(ids.shape[0], dtype=answer_logit.dtype, device=answer_logit.device).index_add(
        0, b_idx, answer_logit
    )
    return total / n_answer


def decompose(
    cap: Captured, u: torch.Tensor, readout: Readout, n_layers: int, n_heads: int, w0: int
) -> dict[str, torch.Tensor]:
    """Direct and total readings per layer (attention, MLP, attention bias) and per head and source
    token (``head_direct``/``head_total`` ``[batch layer head pos]``), plus the embeddings' terms."""
    acts, grads = cap.acts, cap.grads
    B, T = u.shape[:2]

    def direct(x):  # [B T d] -> [B]
        return (x * u).sum((-1, -2))

    def total(x, grad):
        return (x * grad).sum((-1, -2))

    out = {k: torch.zeros(B, n_layers, n_heads, T, dtype=torch.float64) for k in ("head_direct", "head_total")}
    for k in ("attn_direct", "mlp_direct", "attn_total", "mlp_total", "attn_bias_direct", "attn_bias_total"):
        out[k] = torch.zeros(B, n_layers)
    for layer in range(n_layers):
        pattern = acts[act_name("pattern", layer)]  # [B H q k]
        v = acts[act_name("v", layer)]  # [B k H' d_head]
        if v.shape[2] != n_heads:  # grouped-query attention: repeat the kv heads
            v = v.repeat_interleave(n_heads // v.shape[2], dim=2)
        grad_attn = grads[act_name("attn_out", layer)]
        out_dir = torch.einsum("hdm,btm->bthd", readout.W_O[layer], u[:, w0:])  # u is 0 before the window
        out_grad = torch.einsum("hdm,btm->bthd", readout.W_O[layer], grad_attn)
        out["head_direct"][:, layer] = (
            (pattern[:, :, w0:] * torch.einsum("bshd,bthd->bhts", v, out_dir)).sum(2).double()
        )
        out["head_total"][:, layer] = (pattern * torch.einsum("bshd,bthd->bhts", v, out_grad)).sum(2).double()
        attn, mlp = acts[act_name("attn_out", layer)], acts[act_name("mlp_out", layer)]
        out["attn_direct"][:, layer], out["mlp_direct"][:, layer] = direct(attn), direct(mlp)
        out["attn_total"][:, layer] = total(attn, grad_attn)
        out["mlp_total"][:, layer] = total(mlp, grads[act_name("mlp_out", layer)])
        bias = readout.b_O[layer].expand_as(attn)
        out["attn_bias_direct"][:, layer], out["attn_bias_total"][:, layer] = direct(bias), total(bias, grad_attn)
    out["embed_direct"], out["embed_total"] = direct(acts["hook_embed"]), total(acts["hook_embed"], grads["hook_embed"])
    pos = acts.get("hook_pos_embed")
    out["pos_embed_direct"] = direct(pos) if pos is not None else torch.zeros(B)
    return out


@register
class HeadFlow(AttributionMethod):
    """Direct and first-order total contributions per layer, head and source token."""

    name = "heads"
    aliases = ("head_flow",)
    config_class = HeadsConfig

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        device = next(iter(model.parameters())).device
        pad = scoring.pad_id(model.tokenizer)
        readout = Readout.of(model)
        lengths = [len(p.prompt_ids) + len(p.answer_ids) for p in items]
        results: list[Attribution | None] = [None] * len(items)
        groups = list(scoring.chunks(lengths, self.config.max_batch_tokens))
        with progress(total=len(groups), desc="heads") as bar:
            for group in groups:
                preps = [items[i] for i in group]
                packed = scoring.pack([p.seq for p in preps], pad).to(device)
                for j, res in enumerate(self._batch(model, preps, packed, readout)):
                    results[group[j]] = res
                bar.update()
        return results  # type: ignore[return-value]

    def _batch(self, model, preps: list[Prepared], packed, readout: Readout) -> list[Attribution]:
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        ids, tmask = packed.input_ids, packed.target_mask
        cap = capture(model, packed, n_layers)
        u, constant = answer_direction(ids, tmask, cap.acts["ln_final.hook_scale"], readout)
        w0 = ids.shape[1] - scoring.answer_window(tmask)  # the positions before the window predict no answer token
        parts = decompose(cap, u, readout, n_layers, n_heads, w0)
        logit_mean = mean_answer_logit(cap.rows, ids, tmask)
        return [
            self._item(model, p, j, parts, float(logit_mean[j]), float(constant[j]), float(cap.lp[j]))
            for j, p in enumerate(preps)
        ]

    def _item(
        self,
        model,
        prep: Prepared,
        j: int,
        parts: dict[str, torch.Tensor],
        answer_logit: float,
        constant: float,
        lp: float,
    ) -> Attribution:
        n = len(prep.prompt_ids) + len(prep.answer_ids)
        head_direct, head_total = parts["head_direct"][j, :, :, :n], parts["head_total"][j, :, :, :n]
        scores = head_total[:, :, : len(prep.prompt_ids)].sum((0, 1)).clone()
        scores[: prep.first] = 0.0
        extras = {
            "answer_logit": answer_logit,
            "constant": constant,
            "embed_direct": float(parts["embed_direct"][j]),
            "pos_embed_direct": float(parts["pos_embed_direct"][j]),
            "embed_total": float(parts["embed_total"][j]),
            **{
                k: parts[k][j].tolist()
                for k in ("attn_direct", "mlp_direct", "attn_bias_direct", "attn_total", "mlp_total", "attn_bias_total")
            },
            "head_direct": head_direct.tolist(),
            "head_total": head_total.tolist(),
            "n_sources": n,
            "score_definition": "sum over layers and heads of head_total at each prompt token",
        }
        return make_result(model, prep, scores.tolist(), lp, self.name, self.options, extras)
