"""Integrated gradients at a bounded cost, with the error reported (issue 26, item 1).

The refinement is nested (every point already computed is reused and weighted by the finer
rule), so it gives the attributions of a fixed-step run at its final count and costs that
many passes; a per-item budget stops it and the result says so.
"""

from __future__ import annotations

import json

import pytest

from unpact import load_model
from unpact.attribution import Attribution, attribute
from unpact.attribution.gradients import IntegratedGradients, nodes, refined_steps
from unpact.data import load_benchmark
from unpact.report import ig_gaps_html


@pytest.fixture(scope="module")
def gpt2():
    return load_model("embedded:gpt2")


@pytest.fixture(scope="module")
def llama():
    return load_model("embedded:llama")


def _items(n):
    return list(load_benchmark("embedded:tofu", "forget10"))[:n]


@pytest.fixture
def counted(monkeypatch):
    """The rows (forward+backward passes) IG really runs, per call of its batched evaluation."""
    calls: list[int] = []
    orig = IntegratedGradients._points

    def spy(self, model, items, where, rows, bid, bar):
        calls.append(len(rows))
        return orig(self, model, items, where, rows, bid, bar)

    monkeypatch.setattr(IntegratedGradients, "_points", spy)
    return calls


@pytest.mark.parametrize("rule", ["fejer2", "riemann_trapezoid"])
def test_nested_rules_contain_their_points(rule):
    for s in (3, 7, 31):
        assert {k for k, _, _ in nodes(s, rule, 3.0)} <= {k for k, _, _ in nodes(refined_steps(s, rule), rule, 3.0)}
        assert sum(w for _, _, w in nodes(s, rule)) == pytest.approx(1.0)


def test_nested_refinement_equals_a_fixed_run_at_the_final_count(gpt2, counted):
    items = _items(2)
    # a tolerance nothing meets: 7 -> 15 -> 31 points, then the budget (31 passes) stops it
    refined = attribute(gpt2, items, method="ig", steps=7, max_passes=31, tolerance=1e-12, atol=0.0)
    assert counted == [2 * 7, 2 * 8, 2 * 16]  # only the new points of each refinement are evaluated
    counted.clear()
    fixed = attribute(gpt2, items, method="ig", steps=31, max_passes=31)
    assert counted == [2 * 31]
    for r, f in zip(refined, fixed):
        assert r.extras["steps"] == f.extras["steps"] == 31
        assert r.extras["passes"] == 31  # 7 + 8 + 16, not 7 + 15 + 31
        assert r.extras["budget_stopped"] and r.extras["stopped_by"] == "passes"
        assert r.scores == pytest.approx(f.scores, rel=1e-6, abs=1e-9)
        assert r.extras["completeness_gap"] == pytest.approx(f.extras["completeness_gap"], rel=1e-4, abs=1e-9)
    # and the 7-point run differs from them: the comparison above can fail
    coarse = attribute(gpt2, items, method="ig", steps=7, max_passes=7)
    assert max(abs(a - b) for a, b in zip(coarse[0].scores, fixed[0].scores)) > 1e-6


def test_a_tight_budget_stops_the_refinement_and_reports_the_gap(llama, counted):
    items = _items(3)  # on embedded:llama (its pad row is zero) 7 points leave gaps of 10-50%
    res = attribute(llama, items, method="ig", steps=7, max_passes=14)
    assert sum(counted) == 3 * 7  # the next refinement (15 points) would pass 14: not started
    stopped = [a for a in res if a.extras["budget_stopped"]]
    assert stopped
    for a in stopped:
        x = a.extras
        assert x["stopped_by"] == "passes" and x["converged"] is False
        assert x["steps"] == 7 and x["passes"] == 7
        assert x["relative_gap"] > a.options["tolerance"]
        assert x["completeness_gap"] == pytest.approx(abs(sum(a.scores) - (a.lp - x["lp_baseline"])))
    # a time budget no pass fits in stops it too
    res = attribute(llama, items[:1], method="ig", steps=7, max_seconds=1e-9)
    assert res[0].extras["stopped_by"] == "seconds" and res[0].extras["passes"] == 7
    # with the default budget the same items converge, and say so
    for a in attribute(llama, items, method="ig"):
        x = a.extras
        assert x["converged"] and not x["budget_stopped"] and x["stopped_by"] is None
        assert x["relative_gap"] <= 0.05 and x["passes"] == x["steps"] <= a.options["max_passes"]


def test_steps_gap_and_stop_survive_json_and_show_in_the_report(llama):
    res = attribute(llama, _items(2), method="ig", steps=7, max_passes=7, group="forget")
    for a in res:
        back = Attribution.from_dict(json.loads(json.dumps(a.to_dict())))
        assert back == a
        for k in ("steps", "passes", "completeness_gap", "relative_gap", "converged", "budget_stopped", "stopped_by"):
            assert back.extras[k] == a.extras[k]
    over = [a for a in res if not a.extras["converged"]]
    assert over  # 7 points do not add up on llama
    html = ig_gaps_html({"original": {"attribution": {"integrated_gradients": {"forget": [a.to_dict() for a in res]}}}})
    assert f"{len(over)} of {len(res)} items" in html
    for a in over:
        assert f"<td>{a.item_id}</td>" in html
    ok = [a.to_dict() for a in attribute(llama, _items(1), method="ig")]
    assert "all 1 items add up" in ig_gaps_html({"original": {"attribution": {"integrated_gradients": {"forget": ok}}}})
