"""The report shows each registered analysis through that analysis's own renderer: a toy analysis
registered with ``register_analysis(name, render=...)`` shows in the report (its verdict line, its
verdict in full, its section and its figure) without ``unpact/report.py`` naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unpact import report
from unpact.analyses.assemble import ANALYSES, register_analysis, run_analyses
from unpact.analyses.render import Rendered
from unpact.report import build_report


@pytest.fixture
def scoped_analyses(monkeypatch):
    """The analysis registry, back to what it held once the test ends."""
    monkeypatch.setattr(ANALYSES, "_items", dict(ANALYSES._items))
    monkeypatch.setattr(ANALYSES, "_aliases", dict(ANALYSES._aliases))
    return ANALYSES


def _render_model_count(analyses: dict, results: dict) -> Rendered:
    section = analyses.get("model_count")
    if not section:
        return Rendered()
    return Rendered(
        headlines=[("Models counted", section["verdict"])],
        verdicts=f"<h3>Model count</h3><div class='verdict'>{section['verdict']}</div>",
        section=f"<section id='model_count'><h2>Model count</h2><p>{section['n']} models</p></section>",
        figures={"model_count.png": b"not really a png"},
    )


def _results(analyses: dict) -> dict:
    return {
        "config": {"model": "m", "benchmark": "b", "max_items": 2},
        "methods": {},
        "summary": [
            {"method": "original", "forget_rouge": 1.0, "retain_rouge": 1.0, "n_items": {"forget": 2, "retain": 2}}
        ],
        "analyses": analyses,
        "examples": [],
    }


def test_a_registered_analysis_shows_in_the_report_through_its_renderer(tmp_path, scoped_analyses):
    @register_analysis("model_count", render=_render_model_count)
    def model_count(methods, controls):
        return {"model_count": {"n": len(methods), "verdict": f"counted {len(methods)} models"}}

    analyses = run_analyses({"a": {}, "b": {}}, names=["model_count"])
    (tmp_path / "results.json").write_text(json.dumps(_results(analyses)))
    page = build_report(tmp_path).read_text()

    assert "<b>Models counted</b> counted 2 models" in page  # the first screen's verdict line
    assert "<h3>Model count</h3><div class='verdict'>counted 2 models</div>" in page
    assert "<section id='model_count'><h2>Model count</h2><p>2 models</p></section>" in page
    assert page.index("id='model_count'") < page.index('id="settings"')
    assert (tmp_path / "figures" / "model_count.png").read_bytes() == b"not really a png"
    assert "model_count" not in Path(report.__file__).read_text()


def test_an_analysis_without_a_renderer_does_not_show(tmp_path, scoped_analyses):
    @register_analysis("silent")
    def silent(methods, controls):
        return {"silent": {"verdict": "a verdict nobody renders"}}

    (tmp_path / "results.json").write_text(json.dumps(_results(run_analyses({}, names=["silent"]))))
    assert "nobody renders" not in build_report(tmp_path).read_text()


def test_every_built_in_analysis_has_a_renderer_but_the_nulls():
    # finding 1 against the damage-matched nulls is rendered with finding 1 (keyword_focus)
    assert [name for name, a in ANALYSES.items() if a.render is None] == ["keyword_focus_null"]
