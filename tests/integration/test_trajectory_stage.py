"""The trajectory stage of the main job (on by default, ``trajectory.enabled``): one checkpoint stage file per
step, in step order, read back (not recomputed) on a rerun; the dilemma and finding 2 per checkpoint in
results.json; the dilemma figure and the per-checkpoint table in the report; and a run with it off
unchanged (no trajectory keys)."""

from __future__ import annotations

import json

import pytest

from unpact.config import config_from_dict
from unpact.pipeline import run_study
from unpact.results import summary_table
from unpact.testing import make_tiny_checkpoint, write_toy_tofu


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("traj")
    bench = root / "bench"
    write_toy_tofu(bench, 4, n_perturbed=2, general=True)  # 4 forget items
    make_tiny_checkpoint("gpt2", root / "model")
    make_tiny_checkpoint("gpt2", root / "reference", seed=1)
    base = {
        "model": str(root / "model"),
        "reference_model": str(root / "reference"),
        "benchmark": "tofu",
        "benchmark_path": str(bench),
        "general": "tofu",
        "general_split": "general",
        "general_path": str(bench),
        "holdout_split": None,
        "methods": ["ga_gdr"],
        "method_config": {"ga_gdr": {"steps": 2}},
        "max_items": 4,
        "max_new_tokens": 6,
        "attribution": {"methods": ["loo"], "subset": 0},
        "emphasis": {
            "templates": ["focus"],
            "factors": [2.0],
            "layer_sets": ["all"],
            "kinds": ["attention"],
            "max_control_items": 2,
        },
        "attacks": {"names": []},
        "presence": {"probes": ["choice", "logit_lens"], "positive_control": False, "null_draws": 0},
    }
    return root, base


def _traj(enabled: bool) -> dict:
    # a 3-step run: the tiny model knows nothing, so the 0.5 target is met at step 0 (the original)
    return {
        "enabled": enabled,
        "max_steps": 3,
        "warmup_steps": 0,
        "marks": [1, 2],
        "targets": [0.5],
        "monitor_items": 2,
        "check_every": 1,
        "templates": ["repeat"],
        "activations": [["attention", 2.0, "all"]],
    }


def _run(root, base, out, traj):
    seen: list[tuple[str, bool]] = []
    cfg = config_from_dict({**base, "out": str(root / out), "trajectory": traj})
    res = run_study(cfg, on_stage=lambda name, computed: seen.append((name, computed)))
    return res, seen


@pytest.fixture(scope="module")
def with_trajectory(world):
    root, base = world
    res, seen = _run(root, base, "run-traj", _traj(True))
    return root / "run-traj", res, seen


def test_checkpoints_are_stage_files_in_step_order(with_trajectory):
    run_dir, res, seen = with_trajectory
    ckpts = [(n, c) for n, c in seen if n.startswith("ga_gdr/checkpoint/")]
    steps = [int(n.rsplit("_", 1)[1]) for n, _ in ckpts]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) >= 3, steps
    assert steps[0] == 0  # the target met before any update: the original is the checkpoint
    assert all(c for _, c in ckpts)  # measured, the first time
    for n, _ in ckpts:
        assert (run_dir / "stages" / f"{n}.json").is_file()
    assert [n for n, _ in seen].index("ga_gdr/trajectory") > [n for n, _ in seen].index(ckpts[-1][0])
    assert not list((run_dir / "models").glob("ga_gdr/checkpoint*"))  # no model files for checkpoints
    traj = res["methods"]["ga_gdr"]["trajectory"]
    assert [c["step"] for c in traj["checkpoints"]] == steps
    names = [n for c in traj["checkpoints"] for n in c["names"]]
    assert {"forget_below_0.5", "step_1", "step_2", "final"} <= set(names)
    measured = traj["measured"]
    assert [c["step"] for c in measured] == steps
    for c in measured:
        assert c["evaluate"]["forget"]["rouge_l_recall_per_item"] and c["utility"] is not None
        assert c["presence"]["counts"] and c["controlled"]["summary"]["settings"]
        assert "negative" in c["controlled"]["raw"]["runs"]  # the reference model is the negative control
    # the original's runs are measured once and reused at every later checkpoint
    runs = [c["controlled"]["raw"]["runs"]["original"] for c in measured]
    assert all(r == runs[0] for r in runs)


def test_results_carry_the_dilemma_and_the_report_shows_it(with_trajectory):
    run_dir, res, _ = with_trajectory
    an = json.loads((run_dir / "results.json").read_text())["analyses"]
    assert an["dilemma"]["verdict"] and "erasure_costs_utility" in an["dilemma"]
    assert an["dilemma"]["points"] and an["dilemma"]["points"][0]["method"] == "ga_gdr"
    assert set(an["finding2_checkpoints"]["per_method"]["ga_gdr"]) == {
        f"step_{c['step']}" for c in res["methods"]["ga_gdr"]["trajectory"]["checkpoints"]
    }
    # the tiny model does not know the forget set: every verdict is gated, the trajectory's too
    assert an["precondition"]["holds"] is False
    assert an["dilemma"]["verdict"].startswith("not applicable")
    assert an["dilemma"]["erasure_costs_utility"]["supported"] is None
    assert all(
        v["verdict"].startswith("not applicable") for v in an["finding2_checkpoints"]["per_method"]["ga_gdr"].values()
    )
    html = (run_dir / "report.html").read_text()
    assert 'id="trajectory"' in html and "alt='the dilemma" in html and (run_dir / "figures" / "dilemma.png").is_file()
    table = summary_table(res)
    assert "trajectory, ga_gdr: monitored forget accuracy < 0.5 first at step 0" in table and "dilemma:" in table


def test_a_rerun_reads_the_checkpoints(world, with_trajectory):
    root, base = world
    run_dir, first, _ = with_trajectory
    (run_dir / "results.json").unlink()
    (run_dir / "stages" / "ga_gdr" / "trajectory.json").unlink()  # the trajectory trains again ...
    (run_dir / "stages" / "analyses.json").unlink()
    res, seen = _run(root, base, "run-traj", _traj(True))
    ckpts = [(n, c) for n, c in seen if n.startswith("ga_gdr/checkpoint/")]
    assert ckpts and not any(c for _, c in ckpts)  # ... and reads every checkpoint instead of measuring it
    assert dict(seen)["ga_gdr/trajectory"] is True
    assert res["methods"]["ga_gdr"]["trajectory"] == first["methods"]["ga_gdr"]["trajectory"]


def test_on_by_default_and_unchanged_when_turned_off(world):
    root, base = world
    assert config_from_dict({}).trajectory.enabled is True
    assert config_from_dict({"trajectory": {"enabled": False}}).trajectory.enabled is False
    res, seen = _run(root, base, "run-off", _traj(False))
    assert not [n for n, _ in seen if "trajectory" in n or "checkpoint" in n]
    assert "trajectory" not in res["methods"]["ga_gdr"]
    assert not {"dilemma", "finding2_checkpoints"} & set(res["analyses"])
    assert (
        "trajectory" not in summary_table(res)
        and 'id="trajectory"' not in (root / "run-off" / "report.html").read_text()
    )
