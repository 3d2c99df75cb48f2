"""Inspect one prompt: tokens, layers and heads, before and after unlearning.

:func:`inspect_item` attributes one item's answer on a model (and, with
``against``, on a second model, typically the unlearned one) with the chosen
attribution methods and reads the model layer by layer. Its result, an
:class:`Inspection`, holds:

* per method, the :class:`~unpact.attribution.Attribution` of each model, exactly
  as :func:`~unpact.attribution.attribute` returns it, and with ``against`` their
  differences (``after - before``) and a :func:`~unpact.attribution.compare`;
* the KeyTokens of the first model (from ``loo`` when it is among the methods);
* the **logit lens** of each model (:func:`read_layers`): the answer's log-prob
  LP(x, y) read from the residual stream after each layer through the model's
  own final norm and unembedding (the row after the last layer is the model's
  LP), and the rank of the answer's first token there. It says *where* the
  answer appears; the ``heads`` method's per-layer attention/MLP contributions
  say *which component writes it*;
* the top heads (by the size of their ``heads`` total contribution, or of its
  change with ``against``) and the attention pattern of chosen heads from the
  position that predicts the answer's first token (the prompt's last token) onto
  the prompt.

It renders as text (:meth:`Inspection.to_text`, what ``unpact inspect`` prints),
as HTML (:meth:`Inspection.to_html`, a self-contained page; in a notebook the
object displays itself) and as JSON (:meth:`Inspection.to_dict`).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact import load_model
    >>> from unpact.inspection import inspect_item
    >>> ins = inspect_item(load_model("embedded:gpt2"), ("Question: Where was Ana Lind born?\\nAnswer:", " Lima"),
    ...                    against=load_model("embedded:gpt2-retain"))                      # doctest: +SKIP
    >>> print(ins.to_text())                                                              # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from unpact import figures, scoring
from unpact import figures as F
from unpact.attribution import ATTRIBUTION_METHODS, Attribution, Comparison, attribute, compare, key_tokens
from unpact.attribution.prepare import Prepared, prepare_items
from unpact.attribution.result import plain_data
from unpact.data import PLAIN, PromptFormat, chat_format
from unpact.errors import ConfigError, InputError
from unpact.hooks.names import act_name
from unpact.progress import ProgressFactory, null_progress

#: Prompt formats ``unpact inspect`` accepts: the plain format, or the tokenizer's own chat template.
PROMPT_FORMATS = ("plain", "chat")
#: Attribution methods of an inspection by default: the paper's measure and the layer/head flow.
DEFAULT_METHODS = ("loo", "heads")


def prompt_format(model, name: str | PromptFormat | None) -> PromptFormat:
    """``"plain"`` -> the plain format; ``"chat"`` -> the model tokenizer's chat template
    (:func:`unpact.data.chat_format`, a :class:`ConfigError` when the tokenizer has none)."""
    if name is None or name == "plain":
        return PLAIN
    if isinstance(name, PromptFormat):
        return name
    if name == "chat":
        return chat_format(model.tokenizer)
    raise ConfigError(f"unknown prompt format {name!r}; choose from {', '.join(PROMPT_FORMATS)}")


def canonical_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names (or aliases such as ``ig``), comma-separated or a list -> registry names, in order, once each."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    out: list[str] = []
    for m in methods:
        name = ATTRIBUTION_METHODS.resolve(m)
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("give at least one attribution method, e.g. loo,heads")
    return out


# --------------------------------------------------------------- logit lens


@dataclass
class LayerReadout:
    """One item read layer by layer on one model (one forward pass).

    Attributes:
        layers: ``"embed"`` (the residual before block 0), then ``"0"`` .. ``"L-1"``
            (the residual after each block).
        lens_logprob: LP(x, y) read from that residual through the model's final norm
            and unembedding (teacher forcing, mean over answer tokens as everywhere in
            unpact); the last entry is the model's own LP.
        lens_rank: rank (1 = top) of the answer's first token among the vocabulary there.
        attention: ``[layer][head][s]``: the attention weight from ``query_position`` to
            each prompt position s.
        query_position: the position that predicts the answer's first token (the prompt's last token).
        lp: the model's LP(x, y) from its own logits (equals ``lens_logprob[-1]`` within float error).
    """

    layers: list[str]
    lens_logprob: list[float]
    lens_rank: list[int]
    attention: list[list[list[float]]]
    query_position: int
    lp: float

    def to_dict(self) -> dict[str, Any]:
        return plain_data(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerReadout:
        d = dict(d)
        d["lens_logprob"] = [float("nan") if v is None else float(v) for v in d["lens_logprob"]]
        return cls(**d)


def _readout(model, p: Prepared) -> LayerReadout:
    L = model.cfg.n_layers
    device = next(iter(model.parameters())).device
    packed = scoring.pack([p.seq], scoring.pad_id(model.tokenizer)).to(device)
    ids: Int[Tensor, "1 pos"] = packed.input_ids
    tmask = packed.target_mask
    resid_names = [act_name("resid_pre", 0)] + [act_name("resid_post", l) for l in range(L)]
    pattern_names = [act_name("pattern", l) for l in range(L)]
    store: dict[str, Tensor] = {}

    def keep(name):
        def hook(act, hook=None):
            store[name] = act.detach()
            return act

        return hook

    window = scoring.answer_window(tmask)
    npr = len(p.prompt_ids)
    q = npr - 1
    T = ids.shape[1]
    first_answer = int(p.answer_ids[0])
    with torch.no_grad():
        logits = scoring.forward_logits(model, ids, [(n, keep(n)) for n in resid_names + pattern_names], keep=window)
        lp = float(scoring.reduce_logprobs(scoring.token_logprobs(logits, ids, tmask), tmask)[0])
        lens_lp, lens_rank = [], []
        for name in resid_names:
            resid: Float[Tensor, "1 window d_model"] = store[name][:, T - window :]
            lg = model.unembed(model.ln_final(resid))
            lens_lp.append(float(scoring.reduce_logprobs(scoring.token_logprobs(lg, ids, tmask), tmask)[0]))
            row = lg[0, q - (T - window)].float()
            lens_rank.append(int((row > row[first_answer]).sum()) + 1)
        attention = [store[n][0, :, q, :npr].float().tolist() for n in pattern_names]
    return LayerReadout(["embed"] + [str(l) for l in range(L)], lens_lp, lens_rank, attention, q, lp)


def read_layers(
    model, items: Any, *, fmt: str | PromptFormat | None = None, truncate: bool = False
) -> LayerReadout | list[LayerReadout]:
    """The logit lens and the answer-position attention of each item (one forward each).

    ``items`` as for :func:`unpact.attribution.attribute` (one item gives one result).

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> r = read_layers(model, ("Question: Where was Ana Lind born?\\nAnswer:", " Lima"))   # doctest: +SKIP
        >>> r.layers, [round(x, 2) for x in r.lens_logprob]                                 # doctest: +SKIP
        (['embed', '0', '1', '2', '3'], [-9.1, -7.5, -3.2, -0.4, -0.01])
    """
    prepared, single = prepare_items(model, items, fmt=fmt, truncate=truncate)
    out = [_readout(model, p) for p in prepared]
    return out[0] if single else out


# ------------------------------------------------------------------ result


def _head_sums(a: Attribution, key: str) -> list[list[float]] | None:
    arr = a.extras.get(key)
    if arr is None:
        return None
    return [[float(sum(src)) for src in layer] for layer in arr]


def _sub(x, y):
    """Elementwise ``x - y`` over nested lists (None where either is None)."""
    if isinstance(x, list):
        return [_sub(a, b) for a, b in zip(x, y)]
    if x is None or y is None:
        return None
    return float(x) - float(y)


_LAYER_KEYS = ("attn_direct", "mlp_direct", "attn_total", "mlp_total")


@dataclass
class Inspection:
    """One item inspected on one model, or on two (``before`` = the model, ``after`` = ``against``).

    ``before[method]`` / ``after[method]`` are the attributions as
    :func:`~unpact.attribution.attribute` returns them; ``readout_before`` /
    ``readout_after`` the :class:`LayerReadout` of each model; ``key_tokens`` the
    first model's KeyTokens (positions, from ``key_from``); ``heads`` the
    ``(layer, head)`` pairs whose attention pattern is shown; ``top_heads`` the
    ranked heads with their contributions; ``comparison[method]`` the
    :func:`~unpact.attribution.compare` of the two models.
    """

    model: str
    item: dict[str, Any]
    prompt_format: str
    methods: list[str]
    before: dict[str, Attribution]
    readout_before: LayerReadout
    key_tokens: list[int]
    key_from: str
    heads: list[tuple[int, int]]
    top_heads: list[dict[str, Any]]
    against: str | None = None
    after: dict[str, Attribution] | None = None
    readout_after: LayerReadout | None = None
    comparison: dict[str, Comparison] | None = None
    head_ranking: str = ""

    # ------------------------------------------------------------ numbers
    @property
    def tokens(self) -> list[str]:
        return next(iter(self.before.values())).tokens

    @property
    def special(self) -> list[bool]:
        return next(iter(self.before.values())).special

    def delta(self) -> dict[str, Any] | None:
        """``after - before`` of every number of both models (None without ``against``).

        ``{"lp", "lens_logprob", "lens_rank", "attention", "attributions": {method: {"lp", "scores",
        and for heads "attn_direct", "mlp_direct", "attn_total", "mlp_total", "head_total", "head_direct"
        (each head summed over its sources)}}}``.
        """
        if self.after is None or self.readout_after is None:
            return None
        rb, ra = self.readout_before, self.readout_after
        out: dict[str, Any] = {
            "lp": ra.lp - rb.lp,
            "lens_logprob": _sub(ra.lens_logprob, rb.lens_logprob),
            "lens_rank": [int(a - b) for a, b in zip(ra.lens_rank, rb.lens_rank)],
            "attention": _sub(ra.attention, rb.attention),
            "attributions": {},
        }
        for m in self.methods:
            b, a = self.before[m], self.after[m]
            d: dict[str, Any] = {"lp": a.lp - b.lp, "scores": _sub(a.scores, b.scores)}
            for k in _LAYER_KEYS:
                if k in b.extras and k in a.extras:
                    d[k] = _sub(a.extras[k], b.extras[k])
            for k in ("head_total", "head_direct"):
                hb, ha = _head_sums(b, k), _head_sums(a, k)
                if hb is not None and ha is not None:
                    d[k] = _sub(ha, hb)
            out["attributions"][m] = d
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: every number of both models (the attributions exactly as ``attribute`` gives them)."""
        models = {
            "before": {
                "model": self.model,
                "attributions": {m: a.to_dict() for m, a in self.before.items()},
                "readout": self.readout_before.to_dict(),
            }
        }
        if self.after is not None:
            models["after"] = {
                "model": self.against,
                "attributions": {m: a.to_dict() for m, a in self.after.items()},
                "readout": self.readout_after.to_dict() if self.readout_after else None,
            }
        return plain_data(
            {
                "model": self.model,
                "against": self.against,
                "item": self.item,
                "prompt_format": self.prompt_format,
                "methods": self.methods,
                "key_tokens": self.key_tokens,
                "key_from": self.key_from,
                "heads": [list(h) for h in self.heads],
                "head_ranking": self.head_ranking,
                "top_heads": self.top_heads,
                "models": models,
                "delta": self.delta(),
                "comparison": {m: c.to_dict() for m, c in self.comparison.items()} if self.comparison else None,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inspection:
        """Inverse of :meth:`to_dict` (the comparisons are recomputed from the attributions)."""
        b = d["models"]["before"]
        a = d["models"].get("after")
        before = {m: Attribution.from_dict(x) for m, x in b["attributions"].items()}
        after = {m: Attribution.from_dict(x) for m, x in a["attributions"].items()} if a else None
        return cls(
            model=d["model"],
            item=d["item"],
            prompt_format=d["prompt_format"],
            methods=list(d["methods"]),
            before=before,
            readout_before=LayerReadout.from_dict(b["readout"]),
            key_tokens=list(d["key_tokens"]),
            key_from=d["key_from"],
            heads=[(int(x[0]), int(x[1])) for x in d["heads"]],
            top_heads=d["top_heads"],
            against=d.get("against"),
            after=after,
            readout_after=LayerReadout.from_dict(a["readout"]) if a else None,
            comparison={m: compare([before[m]], [after[m]]) for m in before} if after else None,
            head_ranking=d.get("head_ranking", ""),
        )

    # ------------------------------------------------------------ views
    def to_text(self, width: int = 14) -> str:
        """The compact text view ``unpact inspect`` prints."""
        return _text(self, width)

    def to_html(self, standalone: bool = False) -> str:
        """The HTML view: a fragment (notebook), or a whole self-contained page with ``standalone=True``."""
        body = _html_body(self)
        if standalone:
            return figures.page(f"unpact inspect — {self.item.get('id')}", body)
        return figures.fragment(body)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (
            f"Inspection(model={self.model!r}, against={self.against!r}, item={self.item.get('id')!r}, "
            f"methods={self.methods}, lp={self.readout_before.lp:.4f}"
            + (f", lp_after={self.readout_after.lp:.4f}" if self.readout_after else "")
            + ")"
        )


# ------------------------------------------------------------------ compute


def _rank_heads(
    before: dict[str, Attribution],
    after: dict[str, Attribution] | None,
    rb: LayerReadout,
    ra: LayerReadout | None,
    keys: list[int],
    n: int,
) -> tuple[list[dict], str]:
    """The ``n`` top heads: by |sum over sources of head_total| (its change with ``after``), or, without
    ``heads``, by the attention from the answer position onto the KeyTokens (its change)."""
    L = len(rb.attention)
    H = len(rb.attention[0]) if L else 0
    hb = _head_sums(before["heads"], "head_total") if "heads" in before else None
    rows = []
    for l in range(L):
        for h in range(H):
            r: dict[str, Any] = {
                "layer": l,
                "head": h,
                "key_attention_before": float(sum(rb.attention[l][h][i] for i in keys)),
            }
            if hb is not None:
                r["total_before"] = hb[l][h]
                r["direct_before"] = _head_sums(before["heads"], "head_direct")[l][h]
            if ra is not None:
                r["key_attention_after"] = float(sum(ra.attention[l][h][i] for i in keys))
                r["key_attention_delta"] = r["key_attention_after"] - r["key_attention_before"]
                if hb is not None and after is not None and "heads" in after:
                    r["total_after"] = _head_sums(after["heads"], "head_total")[l][h]
                    r["direct_after"] = _head_sums(after["heads"], "head_direct")[l][h]
                    r["total_delta"] = r["total_after"] - r["total_before"]
            rows.append(r)
    if hb is not None:
        key, how = (
            ("total_delta", "|change in the head's total contribution|")
            if ra is not None
            else ("total_before", "|the head's total contribution (heads, summed over sources)|")
        )
    else:
        key, how = (
            ("key_attention_delta", "|change in attention onto the KeyTokens|")
            if ra is not None
            else ("key_attention_before", "attention onto the KeyTokens")
        )
    rows.sort(key=lambda r: -abs(r[key]))
    return rows[:n], how


def _check_heads(model, heads: Sequence[tuple[int, int]] | None) -> None:
    """ConfigError for a ``(layer, head)`` the model does not have."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for l, h in heads or []:
        if not (0 <= l < L and 0 <= h < H):
            raise ConfigError(
                f"head {l}.{h} is out of range: the model has {L} layers of {H} heads "
                f"(layers 0..{L - 1}, heads 0..{H - 1})"
            )


def _attribute_both(
    model, against, item: Any, names: list[str], f: PromptFormat, truncate: bool, progress: ProgressFactory
) -> tuple[dict[str, Attribution], dict[str, Attribution] | None]:
    """Every method's attribution of ``item`` on ``model`` and, when given, on ``against``
    (InputError where the two tokenise the prompt differently)."""
    before: dict[str, Attribution] = {}
    after: dict[str, Attribution] | None = {} if against is not None else None
    with progress(total=len(names) * (2 if against is not None else 1), desc="inspect") as bar:
        for m in names:
            before[m] = attribute(model, item, method=m, fmt=f, truncate=truncate)
            bar.update()
            if after is not None:
                after[m] = attribute(against, item, method=m, fmt=f, truncate=truncate)
                if after[m].token_ids != before[m].token_ids:
                    raise InputError(
                        "the two models tokenise the prompt differently; inspect models that share "
                        "a tokenizer (an unlearned model and its original)"
                    )
                bar.update()
    return before, after


def inspect_item(
    model,
    item: Any,
    *,
    against=None,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    fmt: str | PromptFormat | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    top_heads: int = 5,
    n_patterns: int = 3,
    truncate: bool = False,
    model_name: str | None = None,
    against_name: str | None = None,
    source: str | None = None,
    key_options: dict[str, Any] | None = None,
    progress: ProgressFactory = null_progress,
) -> Inspection:
    """Attribute and read one item on ``model`` (and on ``against``), for :class:`Inspection`'s views.

    Args:
        model: the model (a bridge from :func:`unpact.load_model`), typically the original.
        item: one item as :func:`~unpact.attribution.attribute` takes it (a record or a
            ``(prompt, answer)`` pair).
        against: a second model with the same tokenizer (typically the unlearned one).
        methods: attribution methods (names or aliases; default ``loo`` and ``heads``).
        fmt: prompt format of records: ``"plain"``, ``"chat"`` (the tokenizer's chat
            template) or a :class:`~unpact.data.PromptFormat`.
        heads: ``(layer, head)`` pairs whose attention pattern to show; default the
            first ``n_patterns`` of the top heads.
        top_heads: how many heads to rank.
        truncate: drop prompt tokens from the left when the item exceeds the context.
        model_name, against_name, source: labels (default: the models' specs).
        key_options: ``alpha``/``beta``/``normalize`` of the KeyTokens rule.

    Raises:
        ConfigError: an unknown method or format, a head out of range.
        InputError: an empty answer, an item longer than the context, models whose tokenizers disagree.
    """
    names = canonical_methods(methods)
    f = prompt_format(model, fmt)
    key_options = dict(key_options or {})
    _check_heads(model, heads)
    (prep,), _ = prepare_items(model, [item], fmt=f, truncate=truncate)
    before, after = _attribute_both(model, against, item, names, f, truncate, progress)
    rb = _readout(model, prep)
    ra = None
    if against is not None:
        (prep_a,), _ = prepare_items(against, [item], fmt=f, truncate=truncate)
        ra = _readout(against, prep_a)
    key_from = "loo" if "loo" in before else names[0]
    keys = key_tokens(before[key_from], **key_options)
    ranked, how = _rank_heads(before, after, rb, ra, keys, max(top_heads, n_patterns))
    shown = [tuple(h) for h in heads] if heads else [(r["layer"], r["head"]) for r in ranked[:n_patterns]]
    comparison = {m: compare([before[m]], [after[m]], **key_options) for m in names} if after is not None else None
    return Inspection(
        model=model_name or str(getattr(model, "unpact_spec", "model")),
        item={
            "id": prep.item_id,
            "prompt": prep.prompt,
            "answer": prep.answer,
            "question": getattr(item, "question", None),
            "source": source,
        },
        prompt_format=f.name,
        methods=names,
        before=before,
        readout_before=rb,
        key_tokens=keys,
        key_from=key_from,
        heads=shown,
        top_heads=ranked[:top_heads],
        against=_against_label(model_name or str(getattr(model, "unpact_spec", "model")), against, against_name),
        after=after,
        readout_after=ra,
        comparison=comparison,
        head_ranking=how,
    )


def _against_label(model_label: str, against, against_name: str | None) -> str | None:
    """The second model's label: ``against_name``, else its spec (``"<spec> (against)"`` when it is the
    first model's spec too, as for an in-memory unlearned copy)."""
    if against is None:
        return None
    if against_name:
        return against_name
    spec = str(getattr(against, "unpact_spec", "against"))
    return f"{spec} (against)" if spec == model_label else spec


# ------------------------------------------------------------------- text


#: Short method names for the text view's columns.
_SHORT = {"integrated_gradients": "ig"}


def _n(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:+.2e}"
    return f"{v:+.4f}"


def _tok(t: str, width: int) -> str:
    s = repr(t)[1:-1]
    return s if len(s) <= width else s[: width - 1] + "…"


def _grid(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = [indent + "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    out.append(indent + "  ".join("-" * w for w in widths))
    for r in rows:
        out.append(
            indent + "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))
        )
    return out


def _layer_values(a: Attribution, j: int) -> tuple[float | None, ...]:
    """(attn direct, mlp direct, attn total, mlp total) of readout row ``j`` (0 = the embeddings)."""
    x = a.extras
    if j == 0:
        return x["embed_direct"] + x["pos_embed_direct"], None, x["embed_total"], None
    l = j - 1
    return x["attn_direct"][l], x["mlp_direct"][l], x["attn_total"][l], x["mlp_total"][l]


def _text(ins: Inspection, width: int) -> str:
    """The plain-text page: the item and LP, then the tokens, layers and top heads tables."""
    sections = [_text_header(ins), _text_tokens(ins, width), _text_layers(ins), _text_heads(ins)]
    return "\n\n".join("\n".join(lines) for lines in sections)


def _text_header(ins: Inspection) -> list[str]:
    rb, ra = ins.readout_before, ins.readout_after
    lines = [f"unpact inspect: {ins.model}" + (f"  vs  {ins.against}" if ra is not None else "")]
    src = f" ({ins.item['source']})" if ins.item.get("source") else ""
    lines.append(f"item {ins.item['id']}{src}, prompt format {ins.prompt_format}")
    lines.append("prompt: " + repr(ins.item["prompt"]))
    lines.append("answer: " + repr(ins.item["answer"]))
    if ra is not None:
        lines.append(
            f"LP(x, y) = {rb.lp:.4f} before, {ra.lp:.4f} after (Δ {_n(ra.lp - rb.lp)})   "
            "[mean log-prob of the answer tokens]"
        )
    else:
        lines.append(f"LP(x, y) = {rb.lp:.4f}   [mean log-prob of the answer tokens]")
    return lines


def _text_tokens(ins: Inspection, width: int) -> list[str]:
    two = ins.after is not None
    rb, ra = ins.readout_before, ins.readout_after
    keyset = set(ins.key_tokens)
    shown = ins.heads[0] if ins.heads else None
    lines = [
        f"Tokens: contribution of each prompt token to LP (* = KeyToken of {ins.model}, from {ins.key_from}; "
        "special tokens in brackets)"
    ]
    header = ["pos", "token"]
    for m in ins.methods:
        m = _SHORT.get(m, m)
        header += [f"{m} before", f"{m} after", f"{m} Δ"] if two else [m]
    if shown:
        header += [f"attn {shown[0]}.{shown[1]}"] + ([f"attn {shown[0]}.{shown[1]} after"] if two else [])
    rows = []
    for i, token in enumerate(ins.tokens):
        mark = "*" if i in keyset else ""
        name = f"[{_tok(token, width)}]" if ins.special[i] else _tok(token, width) + mark
        row = [str(i), name]
        for m in ins.methods:
            before = ins.before[m].scores[i]
            if two:
                after = ins.after[m].scores[i]
                row += [_n(before), _n(after), _n(after - before)]
            else:
                row.append(_n(before))
        if shown:
            layer, head = shown
            row.append(f"{rb.attention[layer][head][i]:.3f}")
            if two:
                row.append(f"{ra.attention[layer][head][i]:.3f}")
        rows.append(row)
    lines += _grid(header, rows)
    if shown:
        lines.append(
            f"  attn {shown[0]}.{shown[1]}: attention of layer {shown[0]} head {shown[1]} from the position "
            f"that predicts the answer's first token (position {rb.query_position})"
        )
    return lines


def _text_layers(ins: Inspection) -> list[str]:
    two = ins.after is not None
    rb, ra = ins.readout_before, ins.readout_after
    lines = [
        "Layers: logit lens = LP read after the layer through the final norm and unembedding "
        "(rank of the answer's first token in brackets)"
    ]
    heads_before = ins.before.get("heads")
    heads_after = ins.after.get("heads") if two else None
    if heads_before is not None:
        lines.append(
            "        attn/mlp direct = the block's output read as the mean answer logit (exact split); "
            "total = first-order contribution to LP"
        )
    else:
        lines.append("        (add heads to --method for the attention/MLP contribution of each layer)")
    header = ["layer", "lens"] + (["lens after", "lens Δ"] if two else [])
    if heads_before is not None:
        header += ["attn direct", "mlp direct"] + (
            ["attn direct after", "mlp direct after"] if two else ["attn total", "mlp total"]
        )
    rows = []
    for j, name in enumerate(rb.layers):
        row = [name, f"{rb.lens_logprob[j]:+.4f} ({rb.lens_rank[j]})"]
        if two:
            row += [f"{ra.lens_logprob[j]:+.4f} ({ra.lens_rank[j]})", _n(ra.lens_logprob[j] - rb.lens_logprob[j])]
        if heads_before is not None:
            values_before = _layer_values(heads_before, j)
            if two:
                values_after = _layer_values(heads_after, j) if heads_after is not None else (None,) * 4
                row += [_n(values_before[0]), _n(values_before[1]), _n(values_after[0]), _n(values_after[1])]
            else:
                row += [_n(v) for v in values_before]
        rows.append(row)
    return lines + _grid(header, rows)


def _text_heads(ins: Inspection) -> list[str]:
    two = ins.after is not None
    has_heads = ins.before.get("heads") is not None
    header = ["head"]
    if has_heads:
        header += ["total", "direct"] + (["total after", "direct after", "total Δ"] if two else [])
    header += ["attn→keys"] + (["attn→keys after"] if two else [])
    rows = []
    for r in ins.top_heads:
        row = [f"{r['layer']}.{r['head']}"]
        if has_heads:
            row += [_n(r.get("total_before")), _n(r.get("direct_before"))]
            if two:
                row += [_n(r.get("total_after")), _n(r.get("direct_after")), _n(r.get("total_delta"))]
        row.append(f"{r['key_attention_before']:.3f}")
        if two:
            row.append(f"{r['key_attention_after']:.3f}")
        rows.append(row)
    return [f"Top heads by {ins.head_ranking}"] + _grid(header, rows)


# ------------------------------------------------------------------- html


def _html_body(ins: Inspection) -> str:
    """The HTML view's body: the item and LP, then the tokens, layers, heads and attention parts."""
    esc = html.escape
    two = ins.after is not None
    parts = [f"<h2>unpact inspect: {esc(ins.model)}" + (f" vs {esc(ins.against)}" if two else "") + "</h2>"]
    src = f" ({esc(str(ins.item['source']))})" if ins.item.get("source") else ""
    parts.append(
        f"<p>Item <b>{esc(str(ins.item['id']))}</b>{src}, prompt format <code>{esc(ins.prompt_format)}</code>."
        f"<br>Prompt: <code>{esc(repr(ins.item['prompt']))}</code><br>Answer: <code>{esc(repr(ins.item['answer']))}</code></p>"
    )
    before, after = ins.readout_before, ins.readout_after
    lp_rows = [["LP(x, y) (mean answer log-prob)", before.lp] + ([after.lp, after.lp - before.lp] if two else [])]
    parts.append(F.table_html(["", ins.model] + ([ins.against, "Δ (after − before)"] if two else []), lp_rows))
    parts += _tokens_html(ins) + _layers_html(ins) + _heads_html(ins) + _attention_html(ins)
    return "\n".join(parts)


def _tokens_html(ins: Inspection) -> list[str]:
    """Per attribution method, the token heatmap (before, after and the change when comparing)."""
    esc = html.escape
    key = [i in set(ins.key_tokens) for i in range(len(ins.tokens))]
    parts = [
        "<h3>Tokens</h3><p class='note'>Contribution of each prompt token to LP: blue raises it, red lowers it "
        f"(outlined: the KeyTokens of {esc(ins.model)}, from {esc(ins.key_from)}). Before and after share one "
        "colour scale per method; the change has its own.</p>"
    ]
    for m in ins.methods:
        before = ins.before[m]
        parts.append(f"<div><b>{esc(m)}</b></div>")
        if ins.after is None:
            parts.append(F.token_heatmap_html(before.tokens, before.scores, key))
            continue
        after = ins.after[m]
        lim = max(F.score_limit(before.scores), F.score_limit(after.scores))
        parts.append(
            f"<div><span class='lbl'>{esc(ins.model)}</span>"
            + F.token_heatmap_html(before.tokens, before.scores, key, lim=lim)
            + "</div>"
        )
        parts.append(
            f"<div><span class='lbl'>{esc(ins.against)}</span>"
            + F.token_heatmap_html(after.tokens, after.scores, key, lim=lim)
            + "</div>"
        )
        change = [y - x for x, y in zip(before.scores, after.scores)]
        parts.append(
            "<div><span class='lbl'>change (after − before)</span>"
            + F.token_heatmap_html(before.tokens, change, key, label="change in contribution")
            + "</div>"
        )
    return parts


def _layers_html(ins: Inspection) -> list[str]:
    """The logit lens per layer (and each block's contribution with the heads method), plotted and tabled."""
    two = ins.after is not None
    before, after = ins.readout_before, ins.readout_after
    heads_before = ins.before.get("heads")
    heads_after = ins.after.get("heads") if two else None
    parts = [
        "<h3>Layers</h3><p class='note'>Logit lens: the answer's LP read from the residual stream after each "
        "layer through the model's own final norm and unembedding (the last one is the model's LP). "
        + (
            "Direct: each block's output read as the mean answer logit (an exact split of the logit); total: "
            "its first-order contribution to LP (heads method)."
            if heads_before is not None
            else "Add the heads method for each layer's attention/MLP contribution."
        )
        + "</p>"
    ]
    lens = {ins.model: before.lens_logprob}
    if two:
        lens[ins.against] = after.lens_logprob
    comps = None
    if heads_before is not None:
        comps = {ins.model: {"attention": heads_before.extras["attn_total"], "MLP": heads_before.extras["mlp_total"]}}
        if heads_after is not None:
            comps[ins.against] = {"attention": heads_after.extras["attn_total"], "MLP": heads_after.extras["mlp_total"]}
    parts.append(F.img_html(F.layers_png(before.layers, lens, comps), "logit lens and per-layer contributions"))
    rows = [
        [f"logit lens LP ({ins.model})", *before.lens_logprob],
        [f"first-token rank ({ins.model})", *before.lens_rank],
    ]
    if two:
        rows += [
            [f"logit lens LP ({ins.against})", *after.lens_logprob],
            [f"first-token rank ({ins.against})", *after.lens_rank],
            ["logit lens Δ", *[y - x for y, x in zip(after.lens_logprob, before.lens_logprob)]],
        ]
    for name, heads in [(ins.model, heads_before)] + ([(ins.against, heads_after)] if heads_after is not None else []):
        if heads is None:
            continue
        x = heads.extras
        rows += [
            [f"attn direct ({name})", x["embed_direct"] + x["pos_embed_direct"], *x["attn_direct"]],
            [f"mlp direct ({name})", None, *x["mlp_direct"]],
            [f"attn total ({name})", x["embed_total"], *x["attn_total"]],
            [f"mlp total ({name})", None, *x["mlp_total"]],
        ]
    parts.append(F.table_html(["", *before.layers], rows))
    parts.append(
        "<p class='note'>Column <i>embed</i>: the residual before block 0 (for the direct and total rows, "
        "the token and position embeddings' contribution).</p>"
    )
    return parts


def _heads_html(ins: Inspection) -> list[str]:
    """The layer x head total contributions (with the heads method) and the top heads' table."""
    esc = html.escape
    two = ins.after is not None
    heads_before = ins.before.get("heads")
    heads_after = ins.after.get("heads") if two else None
    parts = [f"<h3>Heads</h3><p class='note'>Ranked by {esc(ins.head_ranking)}.</p>"]
    if heads_before is not None:
        sums_before = np.array(_head_sums(heads_before, "head_total"))
        if heads_after is not None:
            sums_after = np.array(_head_sums(heads_after, "head_total"))
            lim = float(max(np.abs(sums_before).max(), np.abs(sums_after).max())) or 1.0
            parts.append(
                F.img_html(
                    F.layer_head_png(sums_before, f"{ins.model}: head total contribution", lim=lim), "heads before"
                )
            )
            parts.append(
                F.img_html(
                    F.layer_head_png(sums_after, f"{ins.against}: head total contribution", lim=lim), "heads after"
                )
            )
            parts.append(
                F.img_html(
                    F.layer_head_png(
                        sums_after - sums_before, "change (after − before)", label="change in contribution"
                    ),
                    "heads change",
                )
            )
        else:
            parts.append(F.img_html(F.layer_head_png(sums_before, f"{ins.model}: head total contribution"), "heads"))
    has_heads = heads_before is not None
    cols = (
        ["head"]
        + (["total", "direct"] if has_heads else [])
        + (["total after", "direct after", "total Δ"] if has_heads and two else [])
        + ["attention → KeyTokens"]
        + (["after"] if two else [])
    )
    rows = []
    for r in ins.top_heads:
        row = [f"{r['layer']}.{r['head']}"]
        if has_heads:
            row += [r.get("total_before"), r.get("direct_before")]
            if two:
                row += [r.get("total_after"), r.get("direct_after"), r.get("total_delta")]
        row.append(r["key_attention_before"])
        if two:
            row.append(r["key_attention_after"])
        rows.append(row)
    parts.append(F.table_html(cols, rows))
    return parts


def _attention_html(ins: Inspection) -> list[str]:
    """The chosen heads' attention from the prompt's last position onto the prompt."""
    two = ins.after is not None
    before, after = ins.readout_before, ins.readout_after
    n = len(ins.tokens)
    parts = [
        "<h3>Attention from the answer's first position</h3><p class='note'>Attention weights of the chosen "
        f"heads from position {before.query_position} (the prompt's last token, whose output predicts the answer's "
        "first token) onto the prompt (grey: 0 = white).</p>"
    ]
    labels = [ins.model] + ([ins.against] if two else [])
    for layer, head in ins.heads:
        weights = [before.attention[layer][head][:n]] + ([after.attention[layer][head][:n]] if two else [])
        parts.append(
            F.img_html(
                F.heatmap_png(
                    weights,
                    title=f"layer {layer} head {head}",
                    label="attention weight",
                    xticklabels=ins.tokens,
                    yticklabels=labels,
                    kind="attention",
                ),
                f"attention of head {layer}.{head}",
            )
        )
    return parts
