"""Stages as objects: a stage registered through the documented route (a ``Stage`` subclass
decorated with ``register_stage``) runs on a real small run, is written to
``stages/<subject>/<name>.json`` and appears under its results key; the built-in stages keep
their names, keys and order."""

from __future__ import annotations

import json

import pytest

from unpact import stages
from unpact.config import RunConfig, config_from_dict
from unpact.pipeline import run_study
from unpact.stages import STAGES, Stage, register_stage, subject_stages
from unpact.testing import make_tiny_checkpoint, write_toy_tofu

BUILT_IN = [
    ("lineage", "lineage"),
    ("evaluate", "evaluate"),
    ("attribute", "attribution"),
    ("track", "tracking"),
    ("recovery", "recovery"),
    ("controlled", "controlled"),
    ("collapse", "collapse"),
    ("attacks", "attacks"),
    ("presence", "presence"),
    ("keyword_nulls", "keyword_nulls"),
    ("trajectory", "trajectory"),
]


@pytest.fixture
def scoped_stages(monkeypatch):
    """The stage registry, back to what it held once the test ends."""
    monkeypatch.setattr(STAGES, "_items", dict(STAGES._items))
    monkeypatch.setattr(STAGES, "_aliases", dict(STAGES._aliases))
    return STAGES


def test_built_in_stages_keep_their_names_keys_and_order():
    assert [(s.name, s.key) for _, s in STAGES.items()] == BUILT_IN
    assert [name for name, s in STAGES.items() if s.unlearning_only] == ["trajectory"]
    cfg = RunConfig()
    assert "trajectory" in [s.name for s in subject_stages(cfg, is_method=True)]
    assert "trajectory" not in [s.name for s in subject_stages(cfg, is_method=False)]


def test_a_registered_stage_runs_is_written_and_appears_under_its_key(tmp_path, scoped_stages):
    seen: dict = {}

    @register_stage
    class LayerCount(Stage):
        """The measured model's layer count and its forget accuracy from the evaluate stage."""

        name, key = "layer_count", "layers"

        def applies(self, cfg):
            return cfg.max_items > 0

        def run(self, study, subject):
            seen["earlier"] = sorted(subject.done)
            return {
                "subject": subject.name,
                "n_layers": int(subject.model().cfg.n_layers),
                "forget_accuracy": subject.done["evaluate"]["forget"].get("accuracy"),
                "original_layers": int(study.original().cfg.n_layers),
            }

    bench = tmp_path / "bench"
    write_toy_tofu(bench, 4, n_perturbed=2, general=True)
    make_tiny_checkpoint("gpt2", tmp_path / "model")
    cfg = config_from_dict(
        {
            "model": str(tmp_path / "model"),
            "benchmark": "tofu",
            "benchmark_path": str(bench),
            "general": None,
            "holdout_split": None,
            "methods": ["ga_gdr"],
            "method_config": {"ga_gdr": {"steps": 1}},
            "max_items": 2,
            "max_new_tokens": 4,
            "attribution": {"methods": ["loo"], "subset": 0},
            "emphasis": {
                "templates": ["focus"],
                "factors": [2.0],
                "layer_sets": ["all"],
                "kinds": ["attention"],
                "max_control_items": 1,
            },
            "attacks": {"names": []},
            "presence": {"probes": [], "positive_control": False, "null_draws": 0},
            "trajectory": {"enabled": False, "controlled": False},
            "out": str(tmp_path / "run"),
        }
    )
    order: list[str] = []
    results = run_study(cfg, on_stage=lambda name, computed: order.append(name))

    stage_file = tmp_path / "run" / "stages" / "ga_gdr" / "layer_count.json"
    assert stage_file.is_file()
    written = json.loads(stage_file.read_text())
    assert results["methods"]["ga_gdr"]["layers"] == written
    assert written["subject"] == "ga_gdr" and written["n_layers"] == written["original_layers"] >= 1
    assert seen["earlier"] == ["attribution", "collapse", "evaluate", "lineage", "recovery", "tracking", "unlearn"]
    assert order.index("ga_gdr/layer_count") == order.index("ga_gdr/collapse") + 1  # after the built-ins
    assert list(results["methods"]["ga_gdr"])[-1] == "layers"

    # a rerun reads the stage back from its file instead of running it again
    seen.clear()
    again = run_study(cfg)
    assert not seen and again["methods"]["ga_gdr"]["layers"] == written


def test_stages_see_the_study_read_only():
    assert not hasattr(stages.StudyView, "stage") and not hasattr(stages.StudyView, "rd")
    assert not hasattr(stages, "UNLEARNING_ONLY") and not hasattr(stages, "METHOD_STAGES")
