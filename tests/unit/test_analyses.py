"""The analyses: numbers in, numbers and a verdict computed from them out."""

from __future__ import annotations

import doctest
import importlib

import pytest

from unpact.analyses import collapse_analysis, keyword_focus, layer_head_analysis, recovery_analysis
from unpact.analyses._stats import gini
from unpact.analyses.assemble import run_analyses


@pytest.mark.parametrize("name", ["keyword_focus", "recovery", "collapse", "layer_head"])
def test_docstring_examples(name):
    mod = importlib.import_module(f"unpact.analyses.{name}")
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0


def _item(group, before, after, key):
    return {"group": group, "before": before, "after": after, "key": key, "special": [False] * len(before)}


def test_keyword_focus_verdict_follows_the_numbers():
    hide = [_item("forget", [0.1, 2.0, 0.2], [0.1, 0.1, 0.2], [False, True, False]) for _ in range(8)]
    ctrl = [_item("retain", [0.1, 2.0], [0.1, 1.9], [False, True]) for _ in range(4)]
    r = keyword_focus(hide + ctrl)
    assert r["holds"] is True and r["verdict"].startswith("supported")
    assert r["groups"]["forget"]["mean_delta_key"] == pytest.approx(-1.9)
    assert r["groups"]["forget"]["share_items_key_lost_more"] == 1.0
    uniform = [_item("forget", [1.0, 1.0], [0.0, 0.0], [False, True]) for _ in range(8)]
    r2 = keyword_focus(uniform + ctrl)
    assert r2["holds"] is False and r2["verdict"].startswith("not supported")


def test_recovery_collapsed_control_does_not_count():
    r = recovery_analysis(
        {
            "a": {"prompt_best": 0.6, "activation_best": 0.9, "prompt_collapse": False, "activation_collapse": True},
            "b": {"prompt_best": 0.0, "activation_best": 0.05, "prompt_collapse": False, "activation_collapse": False},
        }
    )
    assert r["methods"]["a"]["best_valid"] == 0.6 and r["methods"]["a"]["winner"] == "prompt"
    assert r["hidden_methods"] == ["a"]
    assert "1 of 2 methods" in r["verdict"]


def test_collapse_spread_relates_to_utility():
    spread = {"before": [1.0] * 5, "after": [0.0] * 5, "tokens": ["the", "of", "Paris", "is", "a"]}
    focused = {"before": [1.0] * 5, "after": [1.0, 1.0, 0.0, 1.0, 1.0], "tokens": ["the", "of", "Paris", "is", "a"]}
    half = {"before": [1.0] * 5, "after": [0.0, 0.0, 0.0, 1.0, 1.0], "tokens": ["the", "of", "Paris", "is", "a"]}
    three = {
        "ga": {"utility_drop": 0.6, "items": [spread]},
        "npo": {"utility_drop": 0.3, "items": [half]},
        "rmu": {"utility_drop": 0.0, "items": [focused]},
    }
    r = collapse_analysis(three)
    assert r["methods"]["ga"]["share_tokens_fell"] == 1.0
    assert r["methods"]["ga"]["share_function_words_fell"] == 1.0
    assert r["methods"]["rmu"]["share_tokens_fell"] == pytest.approx(0.2)
    assert r["spearman_share_vs_utility_drop"] == pytest.approx(1.0)
    # a perfect order of 3 methods is 1 of 6 pairings: p = 1/6 (the t approximation said p = 0). No
    # data on 3 methods can reach p <= 0.05, so the verdict is "not applicable", not "not supported"
    assert r["p_share_vs_utility_drop"] == pytest.approx(1 / 6)
    assert r["holds"] is None and r["verdict"].startswith("not applicable") and "at least 4" in r["verdict"]

    def fell(k: int) -> dict:  # k of 5 tokens lose their contribution
        return {"before": [1.0] * 5, "after": [0.0] * k + [1.0] * (5 - k), "tokens": ["the", "of", "Paris", "is", "a"]}

    six = {f"m{k}": {"utility_drop": 0.1 * k, "items": [fell(k)]} for k in range(6)}
    r6 = collapse_analysis(six)
    assert r6["spearman_share_vs_utility_drop"] == pytest.approx(1.0)
    assert r6["p_share_vs_utility_drop"] == pytest.approx(1 / 720)
    assert r6["holds"] is True
    r2 = collapse_analysis({f"m{k}": {"utility_drop": 0.1 * (5 - k), "items": [fell(k)]} for k in range(6)})
    assert r2["holds"] is False and r2["verdict"].startswith("not supported")  # the reverse order, on 6
    four = collapse_analysis({f"m{k}": {"utility_drop": 0.1 * k, "items": [fell(k)]} for k in range(4)})
    assert four["p_share_vs_utility_drop"] == pytest.approx(1 / 24) and four["holds"] is True


def test_gini_extremes():
    assert gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert gini([0, 0]) is None


def test_layer_head_ranks_by_size():
    r = layer_head_analysis({"m": {"layer_delta": [0.5, -0.1, -3.0], "head_delta": [[0, 0], [0, 0.2], [-2, 0]]}})
    assert r["methods"]["m"]["layer_ranking"] == [2, 0, 1]
    assert r["methods"]["m"]["top_head"] == [2, 0]
    assert "L2H0" in r["verdict"]


def test_a_registered_analysis_runs_with_the_others(monkeypatch):
    """One registration (unpact.analyses.assemble.register_analysis) and run_analyses runs it,
    under the precondition like every other; an unknown name lists the registered ones."""
    from unpact.analyses.assemble import ANALYSES, register_analysis, run_analyses
    from unpact.errors import ConfigError

    assert list(ANALYSES)[:4] == ["keyword_focus", "recovery", "collapse", "layer_head"]

    with monkeypatch.context() as scope:  # the registry as it was once the block ends
        scope.setattr(ANALYSES, "_items", dict(ANALYSES._items))

        @register_analysis("n_methods")
        def _n_methods(methods, controls):
            return {"n_methods": {"n": len(methods), "verdict": f"{len(methods)} methods"}}

        out = run_analyses({"a": {}, "b": {}}, {"holds": False, "reason": "r"}, names=["n_methods"])
        assert out["n_methods"]["n"] == 2 and out["n_methods"]["verdict"] == "not applicable: r"
        assert set(out) == {"n_methods", "precondition"}
    with pytest.raises(ConfigError, match="unknown analysis 'n_methods'; known: keyword_focus, recovery, "):
        run_analyses({}, names=["n_methods"])


def test_not_applicable_leaves_the_stage_results_as_computed():
    test = {
        "verdict": "supported: ...",
        "supported": True,
        "n_null_draws": 19,
        "statistic": -1.0,
        "p_value": 0.05,
        "interval": [-2.0, -0.5],
    }
    methods = {"ga": {"keyword_nulls": {"test": test}}}
    out = run_analyses(
        methods, precondition={"holds": False, "reason": "the original does not know it"}, names=["keyword_focus_null"]
    )
    assert out["keyword_focus_null"]["ga"]["verdict"].startswith("not applicable")
    assert methods["ga"]["keyword_nulls"]["test"]["verdict"] == "supported: ..."  # a resumed run reads this back
