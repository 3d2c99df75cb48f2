"""A small real run of the main job under umask 022: every file of the run directory is 0644 and every
directory 0755 (issue 24, item 5: the atomic writes used to leave results.json, report.html, config.json
and the stage files 0600), and its evaluations carry the checkpoint metrics (MIA AUC, privleak, exact
memorization, extraction strength) where they apply."""

from __future__ import annotations

import json
import os
import stat

import pytest

from unpact.config import config_from_dict
from unpact.pipeline import run_study
from unpact.rundir import stage_timings, write_json_atomic, write_text_atomic
from unpact.testing import TOY_PLACES, make_tiny_checkpoint, toy_tofu_rows, write_toy_tofu


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    bench = root / "bench"
    write_toy_tofu(bench, 4, n_perturbed=2, general=True)  # forget: 2 authors, retain: 2 authors
    holdout = toy_tofu_rows([("Ed Vale", "Quito"), ("Fa Quin", "Perth")], TOY_PLACES, n_perturbed=2)
    (bench / "holdout.json").write_text(json.dumps(holdout))
    make_tiny_checkpoint("gpt2", root / "model")
    make_tiny_checkpoint("gpt2", root / "reference", seed=1)
    cfg = config_from_dict(
        {
            "model": str(root / "model"),
            "reference_model": str(root / "reference"),
            "benchmark": "tofu",
            "benchmark_path": str(bench),
            "general": "tofu",
            "general_split": "general",
            "general_path": str(bench),
            "holdout_split": "holdout",
            "methods": ["ga_gdr"],
            "method_config": {"ga_gdr": {"steps": 1}},
            "max_items": 3,
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
            "presence": {"probes": ["choice"], "positive_control": False, "null_draws": 0},
            "trajectory": {"enabled": False},
            "out": str(root / "run"),
        }
    )
    old = os.umask(0o022)
    try:
        results = run_study(cfg)
    finally:
        os.umask(old)
    return root / "run", results


def test_every_file_of_a_run_directory_follows_the_umask(small_run):
    run_dir, _ = small_run
    files, dirs = [], []
    for base, dnames, fnames in os.walk(run_dir):
        dirs += [os.path.join(base, d) for d in dnames]
        files += [os.path.join(base, f) for f in fnames]
    names = {os.path.relpath(f, run_dir) for f in files}
    for must in (
        "config.json",
        "results.json",
        "report.html",
        "stages/original/evaluate.json",
        "models/ga_gdr/model.safetensors",
        "models/ga_gdr/config.json",
    ):
        assert must in names, must
    modes = {os.path.relpath(f, run_dir): oct(stat.S_IMODE(os.stat(f).st_mode)) for f in files}
    assert {k: v for k, v in modes.items() if v != "0o644"} == {}
    dir_modes = {os.path.relpath(d, run_dir): oct(stat.S_IMODE(os.stat(d).st_mode)) for d in dirs}
    assert {k: v for k, v in dir_modes.items() if v != "0o755"} == {}


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_take_the_mode_of_a_plain_open(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        a = write_text_atomic(tmp_path / "report.html", "<html></html>")
        b = write_json_atomic(tmp_path / "results.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == mode
    assert stat.S_IMODE(a.stat().st_mode) == mode and stat.S_IMODE(b.stat().st_mode) == mode
    assert json.loads(b.read_text()) == {"x": 1} and a.read_text() == "<html></html>"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_the_run_reports_the_checkpoint_metrics(small_run):
    run_dir, results = small_run
    res = json.loads((run_dir / "results.json").read_text())
    for ev in (res["original"]["evaluate"], res["methods"]["ga_gdr"]["evaluate"]):
        forget = ev["forget"]
        for key in ("mia_loss_auc", "mia_zlib_auc", "mia_min_k_auc", "mia_min_k_plus_plus_auc"):
            assert 0.0 <= forget[key] <= 1.0, key
        assert forget["mia_forget_n"] == 3 and forget["mia_holdout_n"] == 3
        # privleak against the reference model's Min-K% AUC on the same items (its own stage file)
        ref = json.loads((run_dir / "stages" / "reference" / "mia_forget_holdout.json").read_text())
        expected = ((1 - forget["mia_min_k_auc"]) - (1 - ref["mia_min_k_auc"])) / (1 - ref["mia_min_k_auc"]) * 100
        assert forget["privleak"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert forget["privleak_reference_auc"] == ref["mia_min_k_auc"]
        for g in ("forget", "retain"):
            assert 0.0 <= ev[g]["exact_memorization"] <= 1.0 and 0.0 <= ev[g]["extraction_strength"] <= 1.0
        assert "mia_loss_auc" not in ev["retain"]  # the attacks run on the forget split only
    rows = {r["method"]: r for r in res["summary"]}
    for name, ev in (("original", res["original"]["evaluate"]), ("ga_gdr", res["methods"]["ga_gdr"]["evaluate"])):
        assert rows[name]["privleak"] == ev["forget"]["privleak"]
        assert rows[name]["forget_mia_min_k_auc"] == ev["forget"]["mia_min_k_auc"]
        assert rows[name]["forget_extraction_strength"] == ev["forget"]["extraction_strength"]
        assert rows[name]["forget_exact_memorization"] == ev["forget"]["exact_memorization"]


def test_every_stage_file_of_a_run_has_its_cost_recorded(small_run):
    """stages/timings.jsonl: one line per computed stage, the wall seconds adding up to no more
    than the run took."""
    run_dir, _ = small_run
    stages = {str(p.relative_to(run_dir / "stages"))[: -len(".json")] for p in (run_dir / "stages").rglob("*.json")}
    rows = stage_timings(run_dir)
    assert {r["stage"] for r in rows} == stages and len(rows) == len(stages)
    assert all(r["seconds"] >= 0 and r["peak_rss_gb"] > 0 for r in rows)
