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


@register
class HeadFlow(AttributionMethod):
    """Direct and first-order total contributions per layer, head and source token."""

    name = "heads"
    aliases = ("head_flow",)
    config_class = HeadsConfig

    def run(self, model, items: list[Prepared], progress: ProgressFactory = null_progress) -> list[Attribution]:
        cfg = self.config
        device = next(iter(model.parameters())).device
        pad = scoring.pad_id(model.tokenizer)
        L, H = model.cfg.n_layers, model.cfg.n_heads
        kind, w_ln, b_ln = _final_norm(model)
        # the decomposition is computed in float32 whatever the model's dtype (float16/bfloat16
        # activations are upcast below), so half-precision models work and sums stay exact enough
        w_ln, b_ln = w_ln.float(), b_ln.float()
        W_O = model.W_O.detach().float()  # [layer head d_head d_model]
        W_U = model.W_U.detach().float()
        b_U = model.b_U.detach().float() if getattr(model, "b_U", None) is not None else torch.zeros(W_U.shape[1])
        b_O = _b_O(model).float().to(device)
        lengths = [len(p.prompt_ids) + len(p.answer_ids) for p in items]
        results: list[Attribution | None] = [None] * len(items)
        groups = list(scoring.chunks(lengths, cfg.max_batch_tokens))
        with progress(total=len(groups), desc="heads") as bar:
            for group in groups:
                preps = [items[i] for i in group]
                packed = scoring.pack([p.seq for p in preps], pad).to(device)
                for j, res in enumerate(self._batch(model, preps, packed, L, H, kind, w_ln, b_ln, W_O, W_U, b_U, b_O)):
                    results[group[j]] = res
                bar.update()
        return results  # type: ignore[return-value]

    def _batch(self, model, preps, packed, L, H, kind, w_ln, b_ln, W_O, W_U, b_U, b_O):
        store: dict[str, torch.Tensor] = {}

        def keep(name, detach):
            def hook(act, hook=None):
                store[name] = act.detach() if detach else act
                return act
            return hook

        names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
        grad_names = ["hook_embed"]
        for l in range(L):
            names += [act_name("pattern", l), act_name("v", l)]
            grad_names += [act_name("attn_out", l), act_name("mlp_out", l)]
        hook_points = set(model.hook_dict) if hasattr(model, "hook_dict") else set(names + grad_names)
        fwd = [(n, keep(n, True)) for n in names if n in hook_points and n != "hook_embed"]
        fwd += [(n, keep(n, False)) for n in grad_names]
        ids, tmask = packed.input_ids, packed.target_mask
        with torch.enable_grad():
            window = scoring.answer_window(tmask)  # unembed only where an answer token is predicted
            logits = scoring.forward_logits(model, ids, fwd, keep=window)
            tok_lp = scoring.token_logprobs(logits, ids, tmask)
            lp = scoring.reduce_logprobs(tok_lp, tmask)
            grads = torch.autograd.grad(lp.sum(), [store[n] for n in grad_names])
        g = {n: gr.detach().float() for n, gr in zip(grad_names, grads)}
        acts = {n: store[n].detach().float() for n in grad_names}
        store = {n: t.detach().float() for n, t in store.items()}
        logits = logits.detach().float()
        B, T = ids.shape
        # u[b, t]: d(mean answer logit)/d(final residual at t) with the final-norm scale frozen
        pred = tmask.clone()
        pred[:, 0] = False
        pred = torch.roll(pred, -1, dims=1)  # positions t that predict an answer token at t+1
        pred[:, -1] = False
        n_ans = tmask.sum(-1).clamp(min=1).to(W_U.dtype)
        nxt = torch.roll(ids, -1, dims=1)
        a = (w_ln[:, None] * W_U)[:, nxt].permute(1, 2, 0)  # [B T d]
        if kind == "LN":
            a = a - a.mean(-1, keepdim=True)
        scale = store["ln_final.hook_scale"]
        scale = scale[..., 0] if scale.dim() == 3 else scale
        u = a / scale[..., None] * (pred / n_ans[:, None])[..., None]
        const_t = (b_ln @ W_U)[nxt] + b_U[nxt]
        constant = (const_t * pred).sum(-1) / n_ans
        w0 = T - logits.shape[1]
        logit_mean = (logits.detach().gather(-1, nxt[:, w0:, None])[..., 0] * pred[:, w0:]).sum(-1) / n_ans

        def direct(x):  # [B T d] -> [B]
            return (x * u).sum((-1, -2))

        def total(x, gr):
            return (x * gr).sum((-1, -2))

        head_direct = torch.zeros(B, L, H, T, dtype=torch.float64)
        head_total = torch.zeros(B, L, H, T, dtype=torch.float64)
        attn_direct, mlp_direct = torch.zeros(B, L), torch.zeros(B, L)
        attn_total, mlp_total = torch.zeros(B, L), torch.zeros(B, L)
        bias_direct, bias_total = torch.zeros(B, L), torch.zeros(B, L)
        for l in range(L):
            pat = store[act_name("pattern", l)]  # [B H q k]
            v = store[act_name("v", l)]  # [B k H' d_head]
            if v.shape[2] != H:  # grouped-query attention: repeat the kv heads
                v = v.repeat_interleave(H // v.shape[2], dim=2)
            ga = g[act_name("attn_out", l)]
            ou = torch.einsum("hdm,btm->bthd", W_O[l], u[:, w0:])  # u is 0 before the answer window
            og = torch.einsum("hdm,btm->bthd", W_O[l], ga)
            vd = torch.einsum("bshd,bthd->bhts", v, ou)
            vt = torch.einsum("bshd,bthd->bhts", v, og)
            head_direct[:, l] = (pat[:, :, w0:] * vd).sum(2).double()
            head_total[:, l] = (pat * vt).sum(2).double()
            ao, mo = acts[act_name("attn_out", l)], acts[act_name("mlp_out", l)]
            attn_direct[:, l], mlp_direct[:, l] = direct(ao), direct(mo)
            attn_total[:, l] = total(ao, ga)
            mlp_total[:, l] = total(mo, g[act_name("mlp_out", l)])
            bo = b_O[l].expand_as(ao)
            bias_direct[:, l], bias_total[:, l] = direct(bo), total(bo, ga)
        emb = acts["hook_embed"]
        embed_direct, embed_total = direct(emb), total(emb, g["hook_embed"])
        pos = store.get("hook_pos_embed")
        pos_direct = direct(pos) if pos is not None else torch.zeros(B)
        options = self.options
        out = []
        for j, p in enumerate(preps):
            n = len(p.prompt_ids) + len(p.answer_ids)
            npr = len(p.prompt_ids)
            hd, ht = head_direct[j, :, :, :n], head_total[j, :, :, :n]
            scores = ht[:, :, :npr].sum((0, 1)).clone()
            scores[: p.first] = 0.0
            extras = {
                "answer_logit": float(logit_mean[j]),
                "constant": float(constant[j]),
                "embed_direct": float(embed_direct[j]),
                "pos_embed_direct": float(pos_direct[j]),
                "embed_total": float(embed_total[j]),
                "attn_direct": attn_direct[j].tolist(),
                "mlp_direct": mlp_direct[j].tolist(),
                "attn_bias_direct": bias_direct[j].tolist(),
                "attn_total": attn_total[j].tolist(),
                "mlp_total": mlp_total[j].tolist(),
                "attn_bias_total": bias_total[j].tolist(),
                "head_direct": hd.tolist(),
                "head_total": ht.tolist(),
                "n_sources": n,
                "score_definition": "sum over layers and heads of head_total at each prompt token",
            }
            out.append(make_result(model, p, scores.tolist(), float(lp[j].detach()), self.name, options, extras))
        return out
