"""The figures every unpact page shares: token heatmaps, matrix heatmaps, one colour meaning.

One colour meaning everywhere a contribution is drawn (the report's too): **blue
raises the answer's log-prob, red lowers it** (white is 0), on a scale symmetric around 0 that is
drawn beside each heatmap. Quantities that are not contributions get a
sequential palette of their own: attention weights in grey (0 = white), shares
of items (recovery rates) in green (more recovered = greener, i.e. more of the
answer came back). Every heatmap carries its colour scale.

Everything here returns strings or PNG bytes and never prints. Images go into
pages as base64 ``data:`` URIs (:func:`data_uri`), so a page written with
:func:`page` opens from disk with no network: no script, no stylesheet link, no
external image.

Example:
    >>> html = token_heatmap_html(["<bos>", " Ana", " Lind"], [0.0, 0.4, -0.1], key=[False, True, False])
    >>> 'rgba(38,139,210,1.00)' in html and 'class="tok kw"' in html  # the strongest token: full blue
    True
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from unpact.emphasis.table import RecoveryTable

#: matplotlib colour map of signed contributions: blue = raises the answer's log-prob, red = lowers it
#: (as unpact.report.CMAP).
DIVERGING = "RdBu"
#: colour map of attention weights (non-negative, not a contribution).
ATTENTION = "Greys"
#: colour map of shares of items (recovery rates, 0..1).
RATE = "Greens"
#: The RGB ends of the token heatmaps (the ends of ``DIVERGING``'s palette, as the report draws them).
RED_RGB = "220,50,47"
BLUE_RGB = "38,139,210"
#: Line/bar colours of the models in a before/after chart (neither red nor blue, which mean a sign).
MODEL_COLOURS = ("#4d4d4d", "#d08c00", "#2a9d8f", "#8e44ad")

# ------------------------------------------------------------------ helpers


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _mpl().close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI (embedded in the page, no file, no network)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_html(png: bytes, alt: str) -> str:
    return f"<figure><img alt='{html.escape(alt, quote=True)}' src='{data_uri(png)}'></figure>"


def fmt_value(v: Any) -> str:
    """A number for a table cell: 4 decimals, or 3 significant digits when tiny; ``–`` for None."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4f}"
    return html.escape(str(v))


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain HTML table (numbers formatted by :func:`fmt_value`)."""
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt_value(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def fmt_number(v: float) -> str:
    """``0.087``, ``0.0025``, ``7.6e-07``, ``0.000``: decimals for ordinary numbers, significant figures for small ones.

    Example:
        >>> [fmt_number(v) for v in (0.0867, 0.00249, 7.6e-07, 0.0)]
        ['0.087', '0.0025', '7.6e-07', '0.000']
    """
    if v != 0 and abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3f}"


def cell_html(v: Any) -> str:
    """A cell of the report's tables: ``–`` for None, a float by :func:`fmt_number` (7.6e-07 is not
    0.000), anything else as escaped text."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return fmt_number(v)
    return html.escape(str(v))


class RawHtml(str):
    """A table cell that is already HTML (:func:`report_table_html` puts it in as it is)."""


def report_table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table of the report (cells by :func:`cell_html`, :class:`RawHtml` cells as they are).

    Example:
        >>> report_table_html(["model", "forget"], [["ga", 0.25], ["npo", RawHtml("<i>none</i>")]])[-76:]
        '<td>0.250</td></tr><tr><td>npo</td><td><i>none</i></td></tr></tbody></table>'
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, RawHtml) else cell_html(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def clean_token(t: str, newline: str = "⏎") -> str:
    """A token as shown: byte-level markers and newlines made visible."""
    return t.replace("Ġ", " ").replace("Ċ", newline).replace("\n", newline)


def score_limit(values: Sequence[float | None]) -> float:
    """The largest finite absolute value of ``values`` (1.0 when there is none): a symmetric colour scale's end."""
    lim = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    return lim or 1.0


# ----------------------------------------------------------- token heatmaps


def colour_scale_html(lim: float, label: str = "contribution to the answer's log-prob") -> str:
    """A small legend: red at -lim, white at 0, blue at +lim."""
    return (
        f'<span class="scale"><span class="sv">{-lim:+.3g}</span>'
        f'<span class="bar" style="background:linear-gradient(90deg,rgb({RED_RGB}),#fff,rgb({BLUE_RGB}))"></span>'
        f'<span class="sv">{lim:+.3g}</span> <span class="sl">{html.escape(label)}</span></span>'
    )


def token_heatmap_html(
    tokens: Sequence[str],
    scores: Sequence[float | None],
    key: Sequence[bool] | None = None,
    *,
    lim: float | None = None,
    scale: bool = True,
    label: str = "contribution to the answer's log-prob",
) -> str:
    """One prompt as coloured token spans: blue raises the answer's log-prob, red lowers it.

    Args:
        tokens, scores: one score per token (None counts as 0).
        key: True for the tokens to outline (the KeyTokens).
        lim: the score drawn at full colour (default: the largest |score|); give the
            same ``lim`` to rows that should be compared by colour.
        scale: draw the colour scale after the tokens.
        label: what the scale measures.
    """
    lim = float(lim) if lim else score_limit(scores)
    spans = []
    for i, (t, s) in enumerate(zip(tokens, scores)):
        s = 0.0 if s is None or not math.isfinite(s) else float(s)
        alpha = min(1.0, abs(s) / lim)
        rgb = BLUE_RGB if s > 0 else RED_RGB
        border = " kw" if key and key[i] else ""
        text = html.escape(clean_token(t))
        spans.append(
            f'<span class="tok{border}" style="background:rgba({rgb},{alpha:.2f})" '
            f'title="{s:+.4g}">{text or "&nbsp;"}</span>'
        )
    legend = colour_scale_html(lim, label) if scale else ""
    return '<div class="toks">' + "".join(spans) + legend + "</div>"


def attention_heatmap_html(tokens: Sequence[str], weights: Sequence[float], *, scale: bool = True) -> str:
    """One row of attention weights over the prompt's tokens, grey (0 = white, 1 = black text on grey)."""
    spans = []
    for t, w in zip(tokens, weights):
        w = max(0.0, min(1.0, float(w or 0.0)))
        spans.append(
            f'<span class="tok" style="background:rgba(90,90,90,{w:.2f});color:{"#fff" if w > 0.55 else "#222"}" '
            f'title="{w:.3f}">{html.escape(clean_token(t)) or "&nbsp;"}</span>'
        )
    legend = (
        (
            '<span class="scale"><span class="sv">0</span><span class="bar" '
            'style="background:linear-gradient(90deg,#fff,rgb(90,90,90))"></span><span class="sv">1</span> '
            '<span class="sl">attention weight</span></span>'
        )
        if scale
        else ""
    )
    return '<div class="toks">' + "".join(spans) + legend + "</div>"


# ---------------------------------------------------------------- matrices


def heatmap_png(
    arr,
    *,
    title: str,
    label: str,
    xlabel: str = "",
    ylabel: str = "",
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    kind: str = "signed",
    lim: float | None = None,
    marks: Any = None,
) -> bytes:
    """A matrix as a heatmap PNG with its colour bar.

    ``kind="signed"``: :data:`DIVERGING` centred on 0 (blue = raises the answer's
    log-prob), symmetric scale ±``lim`` (default the largest |value|);
    ``"attention"``: :data:`ATTENTION` from 0 to ``lim`` (default 1);
    ``"rate"``: :data:`RATE` from 0 to 1. ``marks``: a boolean matrix of cells to
    mark with a cross (for example settings whose controls collapsed).
    """
    plt = _mpl()
    a = np.asarray(arr, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if kind == "signed":
        m = lim or (float(np.nanmax(np.abs(a))) if a.size and np.isfinite(a).any() else 1.0) or 1.0
        cmap, vmin, vmax = DIVERGING, -m, m
    elif kind == "attention":
        cmap, vmin, vmax = ATTENTION, 0.0, lim or 1.0
    elif kind == "rate":
        cmap, vmin, vmax = RATE, 0.0, 1.0
    else:
        raise ValueError(f"kind must be 'signed', 'attention' or 'rate', got {kind!r}")
    h, w = a.shape
    fig, ax = plt.subplots(figsize=(min(16.0, 1.6 + 0.5 * w), 1.0 + 0.42 * h))
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    if xticklabels is not None:
        ax.set_xticklabels([clean_token(str(x), "\\n") for x in xticklabels], rotation=60, ha="right", fontsize=8)
    if yticklabels is not None:
        ax.set_yticklabels([str(y) for y in yticklabels], fontsize=8)
    if marks is not None:
        mk = np.asarray(marks, dtype=bool).reshape(a.shape)
        for i, j in zip(*np.nonzero(mk)):
            ax.text(j, i, "×", ha="center", va="center", fontsize=11, color="black")
    fig.colorbar(im, ax=ax, shrink=0.85, label=label, pad=0.02)
    return png_bytes(fig)


def layer_head_png(
    arr, title: str, label: str = "contribution to the answer's log-prob", lim: float | None = None
) -> bytes:
    """Layer x head heatmap of a signed contribution (blue raises the answer's log-prob)."""
    a = np.asarray(arr, dtype=float)
    return heatmap_png(
        a,
        title=title,
        label=label,
        xlabel="head",
        ylabel="layer",
        xticklabels=[str(i) for i in range(a.shape[1])],
        yticklabels=[str(i) for i in range(a.shape[0])],
        kind="signed",
        lim=lim,
    )


def layers_png(
    layers: Sequence[str],
    lens: Mapping[str, Sequence[float]],
    components: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    title: str = "Where the answer appears, and which component writes it",
) -> bytes:
    """Left: the logit lens (answer log-prob read after each layer), one line per model.
    Right (when given): per-layer contributions (``{model: {"attention": [...], "MLP": [...]}}``) as bars."""
    plt = _mpl()
    ncols = 2 if components else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.3), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(layers))
    for k, (name, vals) in enumerate(lens.items()):
        ax.plot(x, vals, marker="o", label=name, color=MODEL_COLOURS[k % len(MODEL_COLOURS)])
    ax.set_xticks(x, layers)
    ax.set_xlabel("read after layer")
    ax.set_ylabel("answer log-prob (logit lens)")
    ax.set_title("logit lens", fontsize=10)
    ax.legend(fontsize=8)
    if components:
        ax = axes[0][1]
        series = [
            (i, m, j, c, v) for i, (m, comp) in enumerate(components.items()) for j, (c, v) in enumerate(comp.items())
        ]
        n_l = len(series[0][4]) if series else 0
        xl = np.arange(n_l)
        width = 0.8 / max(1, len(series))
        for k, (i, m, j, c, v) in enumerate(series):  # colour = model, hatch = component
            ax.bar(
                xl - 0.4 + width * (k + 0.5),
                v,
                width,
                color=MODEL_COLOURS[i % len(MODEL_COLOURS)],
                hatch=("", "//", "..", "xx")[j % 4],
                edgecolor="white",
                label=f"{c} ({m})" if len(components) > 1 else c,
            )
        ax.axhline(0, color="#888", lw=0.6)
        ax.set_xticks(xl, [str(i) for i in range(n_l)])
        ax.set_xlabel("layer")
        ax.set_ylabel("first-order contribution to LP")
        ax.set_title("attention / MLP contribution per layer", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


def head_heatmap_fig(method: str, head_delta: list[list[float]]):
    """(figure, image, colour bar) of the layer x head change in contribution (after - before),
    in :data:`DIVERGING` (red = drop, blue = gain), as the report draws it.

    The figure is at least 3 inches tall, so the colour bar's label fits beside its bar
    whatever the number of layers.
    """
    plt = _mpl()
    arr = np.asarray(head_delta, dtype=float)
    lim = float(np.nanmax(np.abs(arr))) if arr.size else 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + 0.55 * arr.shape[1]), max(3.0, 1.2 + 0.45 * arr.shape[0])))
    im = ax.imshow(arr, cmap=DIVERGING, vmin=-lim or -1, vmax=lim or 1, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(arr.shape[1]))
    ax.set_yticks(range(arr.shape[0]))
    ax.set_title(f"{method}: change in head contribution\n(forget items; red = drop, blue = gain)", fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04)
    cbar.set_label("Δ contribution (log-prob)", fontsize=9)
    return fig, im, cbar


def head_heatmap_png(method: str, head_delta: list[list[float]]) -> bytes:
    """Layer x head heatmap of the change in contribution to the answer (after - before), as PNG."""
    fig, _im, _cbar = head_heatmap_fig(method, head_delta)
    return png_bytes(fig)


# ----------------------------------------------------------------- dilemma

#: line colours of the methods in the dilemma plot (never red or blue, which mean a sign)
METHOD_COLOURS = MODEL_COLOURS + ("#6b8e23", "#a0522d", "#17becf", "#7f7f7f")
#: bar colours of keyword and placebo emphasis: recovery is green (as ``RATE``), the placebo grey
KEYWORD_COLOUR, PLACEBO_COLOUR = "#2e8b57", "#b0b0b0"


def checkpoint_state(point: Mapping[str, Any]) -> str:
    """``point["state"]`` when given, else from its shares: ``"erased"`` when most forgotten items are
    found by no probe, ``"hidden"`` when most are, ``"known"`` when the plain prompt forgot none.

    Example:
        >>> checkpoint_state({"hidden_share": 0.25, "erased_share": 0.75}), checkpoint_state({})
        ('erased', 'known')
    """
    if point.get("state"):
        return str(point["state"])
    e = point.get("erased_share")
    if e is None:
        return "known"
    return "erased" if e > 0.5 else "hidden"


_STATE_MARKER = {"hidden": ("o", True), "erased": ("X", True), "known": ("o", False)}


def dilemma_png(
    points: Sequence[Mapping[str, Any]],
    recovery: Sequence[Mapping[str, Any]] | None = None,
    *,
    title: str = "The dilemma: forgetting, utility, and what is left",
    recovery_label: str = "share of eligible items recovered",
) -> bytes:
    """Left: each method's trajectory in (forget accuracy, utility) space, a line through its
    checkpoints in step order, each checkpoint marked hidden (filled circle: most forgotten items
    still found by a probe), erased (cross: found by none) or known (open circle: nothing forgotten),
    labelled with its step. Right (when ``recovery`` is given): keyword (green) vs placebo (grey)
    recovery per checkpoint, with intervals when given.

    ``points``: dicts with ``method``, ``forget_accuracy``, ``utility`` and optionally ``step``,
    ``state`` or ``erased_share`` (:func:`unpact.analyses.dilemma.checkpoint_point` makes them).
    ``recovery``: dicts with ``method``, ``checkpoint``, ``keyword``, ``placebo`` and optionally
    ``keyword_interval``/``placebo_interval`` (``[lo, hi]``).

    Example:
        >>> png = dilemma_png([{"method": "ga", "step": 10, "forget_accuracy": 0.5, "utility": 0.8, "erased_share": 0.2}])
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    plt = _mpl()
    ncols = 2 if recovery else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.4), squeeze=False)
    _trajectory_panel(axes[0][0], points)
    if recovery:
        _checkpoint_recovery_panel(axes[0][1], list(recovery), recovery_label)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


def _trajectory_panel(ax, points: Sequence[Mapping[str, Any]]) -> None:
    """The dilemma's left panel: each method's checkpoints in (forget accuracy, utility) space."""
    from matplotlib.lines import Line2D

    methods = list(dict.fromkeys(str(p["method"]) for p in points))
    for k, m in enumerate(methods):
        colour = METHOD_COLOURS[k % len(METHOD_COLOURS)]
        pts = sorted(
            [
                p
                for p in points
                if str(p["method"]) == m and p.get("forget_accuracy") is not None and p.get("utility") is not None
            ],
            key=lambda p: (p.get("step") is None, p.get("step") or 0),
        )
        if not pts:
            continue
        ax.plot(
            [p["forget_accuracy"] for p in pts], [p["utility"] for p in pts], color=colour, lw=1.2, alpha=0.8, label=m
        )
        for p in pts:
            _checkpoint_marker(ax, p, colour)
    ax.set_xlabel("forget accuracy (plain prompt)")
    ax.set_ylabel("utility")
    ax.invert_xaxis()  # unlearning moves right: from knowing (left) to forgetting (right)
    ax.set_title("trajectories (numbers: steps)", fontsize=10)
    handles = [Line2D([], [], color=METHOD_COLOURS[k % len(METHOD_COLOURS)], label=m) for k, m in enumerate(methods)]
    handles += [
        Line2D([], [], ls="", marker="o", color="#555", label="hidden (a probe finds most)"),
        Line2D([], [], ls="", marker="X", color="#555", label="erased (no probe finds most)"),
        Line2D([], [], ls="", marker="o", markerfacecolor="white", color="#555", label="nothing forgotten"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="best")


def _checkpoint_marker(ax, p: Mapping[str, Any], colour: str) -> None:
    """One checkpoint: its state's marker (filled: hidden, cross: erased, open: known) and its step."""
    marker, filled = _STATE_MARKER.get(checkpoint_state(p), ("o", False))
    ax.scatter(
        [p["forget_accuracy"]],
        [p["utility"]],
        marker=marker,
        s=60,
        zorder=3,
        facecolors=colour if filled else "white",
        edgecolors=colour,
        linewidths=1.4,
    )
    if p.get("step") is not None:
        ax.annotate(
            str(p["step"]),
            (p["forget_accuracy"], p["utility"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color=colour,
        )


def _checkpoint_recovery_panel(ax, rows: list[Mapping[str, Any]], recovery_label: str) -> None:
    """The dilemma's right panel: keyword vs placebo recovery per checkpoint, grouped by method."""
    # checkpoints grouped by method, a gap between methods; ticks: the step, the method below
    group = list(dict.fromkeys(str(r["method"]) for r in rows))
    x = np.array([i + group.index(str(r["method"])) for i, r in enumerate(rows)], dtype=float)
    w = 0.38
    for off, key, colour, label in (
        (-w / 2, "keyword", KEYWORD_COLOUR, "keyword emphasis"),
        (w / 2, "placebo", PLACEBO_COLOUR, "placebo emphasis"),
    ):
        vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
        err = None
        cis = [r.get(f"{key}_interval") for r in rows]
        if any(c is not None for c in cis):
            lo = [0.0 if c is None or v != v else max(0.0, v - c[0]) for c, v in zip(cis, vals)]
            hi = [0.0 if c is None or v != v else max(0.0, c[1] - v) for c, v in zip(cis, vals)]
            err = np.array([lo, hi])
        ax.bar(
            x + off,
            np.nan_to_num(vals),
            w,
            color=colour,
            label=label,
            yerr=err,
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_xticks(x, [str(r.get("checkpoint", "")).replace("step ", "") for r in rows], fontsize=6)
    for m in group:
        xs = [xi for xi, r in zip(x, rows) if str(r["method"]) == m]
        ax.text(float(np.mean(xs)), -0.07, m, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7)
    ax.set_xlabel("checkpoint step, by method", labelpad=20)
    ax.set_ylabel(recovery_label)
    ax.set_title("keyword vs placebo recovery per checkpoint", fontsize=10)
    ax.legend(fontsize=8)


# ------------------------------------------------------------------- the report's bar charts


def recovery_png(rows: list[dict[str, Any]]) -> bytes:
    """Bars per method: the share of forgotten items the best prompt rewrite and the best
    activation scaling brought back (the summary rows' ``recovery_prompt`` / ``recovery_activation``)."""
    plt = _mpl()
    rows = [r for r in rows if r["method"] != "original"]
    names = [r["method"] for r in rows]
    p = [r.get("recovery_prompt") or 0.0 for r in rows]
    a = [r.get("recovery_activation") or 0.0 for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(names), 3.2))
    ax.bar(x - 0.2, p, 0.4, label="prompt rewrite (best)")
    ax.bar(x + 0.2, a, 0.4, label="activation scaling (best)")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of forgotten items recovered")
    ax.set_title("Emphasis recovery on forget items")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def routes_png(routes: list[dict[str, Any]]) -> bytes:
    """Grouped bars: per method, each recovery route's rate (beyond controls for attacks, raw for emphasis)."""
    plt = _mpl()
    methods = list(dict.fromkeys(r["method"] for r in routes))
    names = list(dict.fromkeys(r["route"] for r in routes))
    x = np.arange(len(methods))
    w = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(2 + 1.3 * len(methods), 3.4))
    for j, name in enumerate(names):
        vals = []
        for m in methods:
            r = next((r for r in routes if r["method"] == m and r["route"] == name), {})
            v = r.get("controlled_rate") if r.get("controlled_rate") is not None else r.get("raw_rate")
            vals.append(v or 0.0)
        hatch = "//" if "emphasis" in name else None
        ax.bar(x - 0.4 + w * (j + 0.5), vals, w, label=name, hatch=hatch)
    ax.set_xticks(x, methods, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of forgotten items recovered")
    ax.set_title("Recovery routes (attacks: beyond original and negative controls; hatched: emphasis, raw)")
    ax.legend(fontsize=7, ncol=2)
    return png_bytes(fig)


def collapse_png(collapse: dict[str, Any]) -> bytes:
    """Per method: the share of control-prompt tokens whose contribution fell against the utility drop."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for m, r in collapse.get("methods", {}).items():
        x, y = r.get("share_tokens_fell"), r.get("utility_drop")
        if x is None or y is None:
            continue
        ax.scatter([x], [y], s=40)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("share of control-prompt tokens whose contribution fell")
    ax.set_ylabel("utility drop")
    ax.set_xlim(-0.02, 1.02)
    ax.set_title("Collapse: spread of the contribution drop vs utility drop")
    return png_bytes(fig)


# ------------------------------------------------------------------- pages

#: Styles of every unpact fragment, scoped under ``.unpact`` (a notebook cell or a page body).
CSS = """
.unpact{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222}
.unpact table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
.unpact td,.unpact th{border:1px solid #ccc;padding:.2em .55em;text-align:right}
.unpact th{background:#f3f3f3} .unpact td:first-child,.unpact th:first-child{text-align:left}
.unpact .toks{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;margin:.2em 0 .5em;line-height:1.9}
.unpact .tok{padding:.1em .05em;border-radius:3px;white-space:pre;color:#222}
.unpact .tok.kw{outline:2px solid #b58900}
.unpact .scale{font-family:system-ui,sans-serif;font-size:.75em;color:#555;margin-left:1.2em;white-space:nowrap}
.unpact .scale .bar{display:inline-block;width:6em;height:.8em;vertical-align:middle;margin:0 .3em;border:1px solid #ccc}
.unpact .lbl{font-size:.8em;color:#666;display:inline-block;min-width:11em}
.unpact .note{font-size:.85em;color:#555}
.unpact figure{display:inline-block;margin:.3em} .unpact img{max-width:100%}
.unpact h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.4em;font-size:1.25em}
.unpact h3{font-size:1.05em;margin:.9em 0 .3em}
"""


def fragment(body: str) -> str:
    """An HTML fragment with its own styles (what a notebook cell shows)."""
    return f'<div class="unpact"><style>{CSS}</style>{body}</div>'


def page(title: str, body: str) -> str:
    """A whole self-contained page: inline styles, images as data URIs, no script, no link."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{margin:2em auto;max-width:1200px;padding:0 1em}}"
        f"{CSS}</style></head><body><div class='unpact'>{body}</div></body></html>"
    )


# ------------------------------------------------- views of the result types
# What ``Attribution``, ``Comparison`` and ``recover``'s table show in a notebook
# (``_repr_html_``) and return from ``.to_html()``: fragment bodies built from the
# figures above. They read the results' fields only.


def _head_source_sums(arr) -> list[list[float]]:
    return [[float(sum(src)) for src in layer] for layer in arr]


def attribution_html(a, **key_options) -> str:
    """The body of one :class:`~unpact.attribution.Attribution`'s view: the token heatmap with its
    KeyTokens outlined, and for ``heads`` the layer x head map and the per-layer contributions."""
    esc = html.escape
    keys = set(a.key_tokens(**key_options))
    key = [i in keys for i in range(len(a.tokens))]
    parts = [
        f"<h3>Attribution of item {esc(str(a.item_id))} ({esc(a.method)})</h3>",
        f"<p>Answer <code>{esc(repr(a.answer))}</code>, LP(x, y) = {fmt_value(float(a.lp))} "
        "(mean log-prob of the answer tokens). Blue raises it, red lowers it; outlined: KeyTokens.</p>",
        token_heatmap_html(a.tokens, a.scores, key),
    ]
    x = a.extras
    if "completeness_gap" in x:
        parts.append(
            f"<p class='note'>Completeness gap |Σ IG − (LP(x) − LP(baseline))| = "
            f"{fmt_value(x['completeness_gap'])} (relative {fmt_value(x.get('relative_gap'))})"
            + (f", {x['steps']} quadrature points" if "steps" in x else "")
            + (f"; the {x['stopped_by']} budget stopped the refinement" if x.get("stopped_by") else "")
            + ".</p>"
        )
    if "head_total" in x:
        parts.append(
            img_html(
                layer_head_png(_head_source_sums(x["head_total"]), "head total contribution (summed over sources)"),
                "layer x head",
            )
        )
        n = len(x["attn_total"])
        parts.append(
            table_html(
                ["layer", *map(str, range(n))],
                [
                    ["attn direct", *x["attn_direct"]],
                    ["mlp direct", *x["mlp_direct"]],
                    ["attn total", *x["attn_total"]],
                    ["mlp total", *x["mlp_total"]],
                ],
            )
        )
    return "".join(parts)


_SUMMARY_ROWS = (
    ("key_mean_delta", "mean change on KeyTokens"),
    ("other_mean_delta", "mean change on other tokens"),
    ("all_mean_delta", "mean change on all tokens"),
    ("lp_mean_delta", "mean change of LP"),
    ("spearman_mean", "Spearman ρ of the rankings"),
    ("n_items", "items"),
)


def comparison_html(c, max_items: int = 12) -> str:
    """The body of a :class:`~unpact.attribution.Comparison`'s view: summaries (overall and per
    group), each item before / after / change, and the per-layer and per-head changes."""
    esc = html.escape
    s = c.summary
    groups = list(s.get("by_group", {}))
    rows = [[label, s.get(k), *[s["by_group"][g].get(k) for g in groups]] for k, label in _SUMMARY_ROWS]
    parts = [
        "<h3>Contribution tracking: before → after</h3>",
        "<p class='note'>Change = after − before; KeyTokens of the model before (outlined). Before and after "
        "share one colour scale per item; the change has its own.</p>",
        table_html(["", "all", *groups], rows),
    ]
    for d in c.items[:max_items]:
        key = [i in set(d.key_tokens) for i in range(len(d.tokens))]
        lim = max(score_limit(d.before), score_limit(d.after))
        parts.append(
            f"<div><b>{esc(str(d.item_id))}</b>{' (' + esc(d.group) + ')' if d.group else ''}: "
            f"LP {fmt_value(d.lp_before)} → {fmt_value(d.lp_after)}, Spearman ρ {fmt_value(d.spearman)}</div>"
        )
        parts.append(
            "<div><span class='lbl'>before</span>" + token_heatmap_html(d.tokens, d.before, key, lim=lim) + "</div>"
        )
        parts.append(
            "<div><span class='lbl'>after</span>" + token_heatmap_html(d.tokens, d.after, key, lim=lim) + "</div>"
        )
        parts.append(
            "<div><span class='lbl'>change</span>"
            + token_heatmap_html(d.tokens, d.delta, key, label="change in contribution")
            + "</div>"
        )
    if len(c.items) > max_items:
        parts.append(f"<p class='note'>… and {len(c.items) - max_items} more items (all of them in to_dict()).</p>")
    if s.get("per_head_head_total_delta"):
        parts.append(
            img_html(
                layer_head_png(
                    np.asarray(s["per_head_head_total_delta"]),
                    "change in head total contribution (mean over items)",
                    label="change in contribution",
                ),
                "per-head change",
            )
        )
        n = len(s["per_layer_attn_total_delta"])
        parts.append(
            table_html(
                ["change per layer", *map(str, range(n))],
                [
                    [k.replace("per_layer_", "").replace("_delta", ""), *s[f"{k}"]]
                    for k in (
                        "per_layer_attn_direct_delta",
                        "per_layer_mlp_direct_delta",
                        "per_layer_attn_total_delta",
                        "per_layer_mlp_total_delta",
                    )
                    if k in s
                ],
            )
        )
    return "".join(parts)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _layers_label(e) -> str:
    return e.layers if isinstance(e.layers, str) else str(list(e.layers))


def recovery_html(table: RecoveryTable) -> str:
    """The body of :func:`unpact.emphasis.recover`'s table: the baseline, every prompt rewrite, the
    activation sweep as a factor x layer-set map of the recovery rate (× = a control collapsed), and the
    answers per item."""
    ctl = table.control_names
    parts = _recovery_summary(table)
    head = ["setting", "recovered", "rate", "Δ log-prob", *[f"{c} accuracy" for c in ctl], "collapse"]
    for kind in ("prompt", "activation"):
        rows = getattr(table, kind)
        if not rows:
            continue
        body = [
            [
                n,
                f"{r.n_recovered}/{r.n_forgotten}",
                _pct(r.forget_rate),
                r.delta_logprob,
                *[r.controls[c].accuracy if c in r.controls else None for c in ctl],
                r.collapse,
            ]
            for n, r in rows.items()
        ]
        if kind == "activation":
            parts += _activation_maps(list(rows.values()))
            parts.append(
                f"<details><summary>every activation setting ({len(body)})</summary>"
                + table_html(head, body)
                + "</details>"
            )
        else:
            parts.append("<div><b>prompt rewrites</b></div>" + table_html(head, body))
    if table.items:
        parts.append(_answers_table(table.items))
    return "".join(parts)


def _recovery_summary(table: RecoveryTable) -> list[str]:
    """The recovery table's heading, its one-paragraph summary and the baseline without emphasis."""
    esc = html.escape
    base = table.baseline
    pb, ab = table.best("prompt"), table.best("activation")
    parts = [
        f"<h3>Emphasis recovery{' — ' + esc(str(table.method)) if table.method else ''}</h3>",
        f"<p>{table.n_forget} forget items, {table.n_forgotten} forgotten (ROUGE-L recall &lt; "
        f"{table.threshold})"
        + (f", {table.n_original_known} known by the original model" if table.n_original_known is not None else "")
        + f". Best prompt rewrite: <b>{esc(str(pb.name))}</b> "
        f"({_pct(pb.rate)}{', collapsed' if pb.collapse else ''}); best "
        f"activation setting: <b>{esc(str(ab.name))}</b> "
        f"({_pct(ab.rate)}{', collapsed' if ab.collapse else ''}). "
        f"A setting collapses when a control's accuracy falls by more than "
        f"{100 * (table.collapse_margin or 0):.0f} points; its recovery does not count.</p>",
    ]
    brow = [
        ["forget accuracy (unlearned)", base.forget_accuracy],
        ["forget accuracy (original)", base.original_forget_accuracy],
    ]
    brow += [[f"{c} accuracy", base.controls[c].accuracy] for c in table.control_names]
    parts.append(table_html(["without emphasis", "value"], brow))
    return parts


def _activation_maps(rows: list) -> list[str]:
    """Per activation kind, the factor x layer-set map of the recovery rate (× where a control collapsed)."""
    parts = []
    for k in dict.fromkeys(r.kind for r in rows):
        sub = [r for r in rows if r.kind == k]
        factors = sorted({r.emphasis.factor for r in sub})
        lsets = list(dict.fromkeys(_layers_label(r.emphasis) for r in sub))
        grid = np.full((len(lsets), len(factors)), np.nan)
        marks = np.zeros_like(grid, dtype=bool)
        for r in sub:
            i, j = lsets.index(_layers_label(r.emphasis)), factors.index(r.emphasis.factor)
            grid[i, j] = np.nan if r.forget_rate is None else r.forget_rate
            marks[i, j] = r.collapse
        parts.append(
            img_html(
                heatmap_png(
                    grid,
                    title=f"{k}: share of forgotten items recovered",
                    label="recovery rate",
                    xlabel="factor",
                    ylabel="layers",
                    xticklabels=[f"x{f:g}" for f in factors],
                    yticklabels=lsets,
                    kind="rate",
                    marks=marks,
                ),
                f"{k} recovery map",
            )
        )
    return parts


def _answers_table(items: list) -> str:
    """The answers per item: original, unlearned, under the best rewrite and the best activation setting."""
    rows = [
        [
            it.id,
            it.question,
            ", ".join(it.keywords),
            it.answer,
            it.original_answer,
            it.baseline_answer,
            it.prompt_best_answer,
            it.activation_best_answer,
        ]
        for it in items
    ]
    return (
        f"<details><summary>answers per item ({len(items)})</summary>"
        + table_html(
            ["id", "question", "keywords", "answer", "original", "unlearned", "best rewrite", "best activation"],
            rows,
        )
        + "</details>"
    )
