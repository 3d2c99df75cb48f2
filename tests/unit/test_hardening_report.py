"""The report and the verdicts (issue 17): one colour meaning with a scale on every heatmap,
significant figures for small numbers, degenerate numbers marked, a verdict line with
its test and sample size for each finding, and no clipped colour-bar label."""

from __future__ import annotations

import json
import re

import pytest

from unpact.analyses import collapse_analysis, keyword_focus, recovery_analysis
from unpact.figures import head_heatmap_fig, token_heatmap_html
from unpact.report import _fmt, build_report


def _rgb(html: str, i: int) -> tuple[int, int, int]:
    spans = re.findall(r"background:rgba\((\d+),(\d+),(\d+),", html)
    return tuple(int(x) for x in spans[i])


def test_one_colour_meaning_tokens_and_heads():
    # tokens: a positive contribution (raises the answer) and a negative one
    h = token_heatmap_html(["a", "b"], [1.0, -1.0])
    pos, neg = _rgb(h, 0), _rgb(h, 1)
    # heads: a positive change and a negative one, from the figure's colour map
    fig, im, _ = head_heatmap_fig("m", [[1.0, -1.0]])
    hpos, hneg = (tuple(int(255 * c) for c in im.cmap(im.norm(v))[:3]) for v in (1.0, -1.0))
    # the same hue for the same sign: blue (b > r) for positive, red (r > b) for negative
    assert pos[2] > pos[0] and hpos[2] > hpos[0]
    assert neg[0] > neg[2] and hneg[0] > hneg[2]


def test_every_token_heatmap_has_a_colour_scale():
    h = token_heatmap_html(["a", "b"], [0.25, -0.5])
    assert 'class="scale"' in h and "-0.5<" in h and "+0.5<" in h


def test_colour_bar_label_fits_its_bar():
    import matplotlib

    matplotlib.use("Agg", force=True)
    for shape in ([[0.1, -0.2, 0.3, 0.0], [0.05, 0.2, -0.1, 0.0]], [[0.3, -0.1]]):  # 2 layers; 1 layer, 2 heads
        fig, im, cbar = head_heatmap_fig("ga_gdr", shape)
        r = fig.canvas.get_renderer()
        label = cbar.ax.yaxis.label.get_window_extent(r)
        title = fig.axes[0].title.get_window_extent(r)
        assert label.y1 <= title.y0 + 1, "the colour-bar label runs into the title"
        assert label.y0 >= 0 and label.y1 <= fig.bbox.y1


@pytest.mark.parametrize(
    "v, s",
    [(7.6e-07, "7.6e-07"), (0.0867, "0.087"), (0.0, "0.000"), (1.0, "1.000"), (0.00249, "0.0025"), (-0.792, "-0.792")],
)
def test_significant_figures(v, s):
    assert _fmt(v) == s


def test_keyword_focus_verdict_says_which_condition_failed():
    # keywords lose more than other tokens on forget items, consistently, but retain KeyTokens lose even more
    items = [{"group": "forget", "before": [1.0, 1.0], "after": [0.5, 1.0], "key": [True, False]} for _ in range(8)]
    items += [{"group": "retain", "before": [1.0, 1.0], "after": [0.0, 1.0], "key": [True, False]} for _ in range(8)]
    r = keyword_focus(items)
    assert r["holds"] is False
    v = r["verdict"]
    assert v.startswith("not supported")
    assert "but" in v and "retain" in v  # the failed condition, not a bare list of numbers
    assert "sign test" in v and "n = 8" in v


def test_recovery_and_collapse_verdicts_name_test_and_sample_size():
    r = recovery_analysis(
        {
            "a": {"prompt_best": 0.5, "activation_best": 0.1, "n_forgotten": 10},
            "b": {"prompt_best": 0.0, "activation_best": 0.0, "n_forgotten": 6},
        }
    )
    assert r["verdict"].startswith("supported for 1 of 2 methods")
    assert "n = 10" in r["verdict"] and "sign test" in r["verdict"]
    r = recovery_analysis({"b": {"prompt_best": 0.0, "activation_best": 0.0, "n_forgotten": 6}})
    assert r["verdict"].startswith("not supported")
    items = [{"before": [1.0, 1.0], "after": [0.0, 1.0], "tokens": ["x", "y"]}]
    c = collapse_analysis({m: {"utility_drop": d, "items": items} for m, d in (("a", 0.1), ("b", 0.2), ("c", 0.3))})
    assert "n = 3 methods" in c["verdict"] and "Spearman" in c["verdict"]


def _results(**summary_changes):
    row = {
        "method": "original",
        "forget_rouge": 1.0,
        "retain_rouge": 1.0,
        "general_accuracy": 1.0,
        "forget_quality": 7.6e-07,
        "model_utility": 0.0,
        "recovery_prompt": None,
        "recovery_activation": None,
        "model_utility_degenerate": "retain truth_ratio is 0",
        "n_items": {"forget": 8, "retain": 8, "general": 8},
    }
    row.update(summary_changes)
    return {
        "config": {"model": "m", "benchmark": "b", "max_items": 8},
        "summary": [row],
        "methods": {},
        "analyses": {
            "precondition": {"holds": False, "reason": "the original model answers 0% of the forget items"},
            "recovery": {"verdict": "not applicable: x"},
        },
        "examples": [],
    }


def test_report_marks_degenerate_numbers_and_precondition_first(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    html = build_report(tmp_path).read_text()
    assert "7.6e-07" in html and ">0.000<" not in html
    assert "degenerate" in html and "retain truth_ratio is 0" in html
    body = html[html.index("<body") :].lower()
    assert body.index("not applicable") < body.index("settings")  # the precondition is said first
    assert "8 forget" in html and "unpact unlearn" in html  # item counts and why unlearn's numbers differ
