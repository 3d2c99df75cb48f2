"""Seeds: verdicts pooled over seeds (finding 1's stratified rank test, finding 2's and the dilemma's
cluster bootstraps, seed-dependent claims) and seeds as an axis of the grid and of ``unpact run``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unpact.analyses import keyword_focus_vs_null
from unpact.analyses.dilemma import finding2_verdict
from unpact.analyses.seeds import pool_seeds, pooled_finding2, pooled_keyword_null, seed_marks
from unpact.errors import ConfigError
from unpact.stats import stratified_rank_test

# ------------------------------------------------------------------ synthetic finding 1 inputs


def _items(rng, n_items: int, key_loss: float, noise: float = 0.3) -> list[dict]:
    """Forget items in finding 1's shape: 4 prompt tokens (the second and third KeyTokens), the
    contributions before, and after a model that moves each by noise and the KeyTokens by ``key_loss``."""
    out = []
    for i in range(n_items):
        before = [float(x) for x in rng.uniform(0.5, 1.5, size=4)]
        key = [False, True, True, False]
        after = [b + rng.normal(0, noise) - (key_loss if k else 0.0) for b, k in zip(before, key)]
        out.append(
            {"id": f"f{i}", "group": "forget", "before": before, "after": after, "key": key, "special": [False] * 4}
        )
    return out


def _seed_test(seed: int, key_loss: float, n_items: int = 12, k: int = 19) -> dict:
    """One seed's keyword_focus_vs_null: the "method" and its k null draws (noise models, no key loss)."""
    rng = np.random.default_rng(1000 + seed)
    method = _items(rng, n_items, key_loss)
    nulls = [_items(np.random.default_rng(10_000 * (seed + 1) + d), n_items, 0.0) for d in range(k)]
    for draw in nulls:  # the same items (ids and contributions before) as the method's
        for it, m in zip(draw, method):
            it["before"] = m["before"]
    return keyword_focus_vs_null(method, nulls, seed=0)


def test_pooled_finding1_on_noise_null_seeds_is_not_supported():
    """Three seeds of a "method" that is one more noise model: the pooled rank test must not call it
    supported; the same pooling calls a method whose KeyTokens really lose supported, with p below
    the one-seed floor of 1/20."""
    noise = {k: _seed_test(k, key_loss=0.0) for k in (0, 1, 2)}
    pooled = pooled_keyword_null(noise)
    assert pooled["n_null_draws"] == 57 and pooled["n_seeds_pooled"] == 3
    assert pooled["supported"] is False and pooled["p_value"] > 0.05, pooled["verdict"]
    assert pooled["verdict"].startswith("not supported over 3 seeds")

    real = {k: _seed_test(k, key_loss=0.8) for k in (0, 1, 2)}
    pooled = pooled_keyword_null(real)
    assert pooled["supported"] is True and pooled["p_value"] < 0.05 / 20, pooled["verdict"]
    assert pooled["seeds"]["consistency"] == "holds on every seed"
    # through pool_seeds, from results.json-shaped seeds
    res = pool_seeds({k: {"methods": {"noise": {"keyword_nulls": {"test": t}}}} for k, t in noise.items()})
    assert res["finding1"]["noise"]["supported"] is False


def test_stratified_rank_test_is_calibrated():
    """Observed and null statistics from one distribution: the exact pooled test rejects about 5% at 0.05."""
    rng = np.random.default_rng(0)
    p = [
        stratified_rank_test(list(rng.normal(size=3)), [list(rng.normal(size=19)) for _ in range(3)])["p_value"]
        for _ in range(400)
    ]
    rate = float(np.mean(np.asarray(p) <= 0.05))
    assert 0.025 <= rate <= 0.08, rate
    # one stratum is the one-seed rank test: p = (1 + #null <= T) / (K + 1)
    t = _seed_test(0, key_loss=0.2)
    one = stratified_rank_test([t["statistic"]], [t["null_statistics"]])
    assert math.isclose(one["p_value"], t["p_value"])
    # above the exact limit, the Monte Carlo p agrees with the exact one
    obs, nulls = [0.1, -0.2, 0.0], [list(np.random.default_rng(s).normal(size=19)) for s in range(3)]
    exact = stratified_rank_test(obs, nulls)["p_value"]
    mc = stratified_rank_test(obs, nulls, max_exact=10)
    assert not mc["exact"] and abs(mc["p_value"] - exact) < 0.01


def test_pooling_two_identical_seeds_gives_the_one_seed_statistic_with_twice_the_draws():
    t = _seed_test(0, key_loss=0.5)
    pooled = pooled_keyword_null({0: t, 1: t})
    assert pooled["statistic"] == t["statistic"]
    assert pooled["n_null_draws"] == 2 * t["n_null_draws"] == 38
    assert math.isclose(pooled["null_mean"], float(np.mean(t["null_statistics"])))
    assert pooled["interval"] == t["interval"]  # items x seeds clustered by item: the copies add nothing
    assert pooled["n_rows"] == 2 * t["n_items"] and pooled["n_items"] == t["n_items"]
    # finding 2: the same per setting (the one-seed interval, twice the rows)
    ctrl = _controlled(np.random.default_rng(3))
    one = finding2_verdict(ctrl)
    two = pooled_finding2({0: ctrl, 1: ctrl})
    assert one["settings"] and set(two["settings"]) == set(one["settings"])
    for name, r in one["settings"].items():
        assert two["settings"][name]["interval"] == r["interval"], name
        assert math.isclose(two["settings"][name]["mean"], r["mean"])
        assert two["settings"][name]["n_rows"] == 2 * r["n"] and two["settings"][name]["n_items"] == r["n"]
    assert two["supported"] == one["supported"]


def test_a_verdict_that_flips_between_seeds_is_seed_dependent():
    flip = {0: _seed_test(0, key_loss=1.0), 1: _seed_test(1, key_loss=0.0), 2: _seed_test(2, key_loss=1.0)}
    assert [flip[k]["supported"] for k in (0, 1, 2)] == [True, False, True]
    steady = {k: _seed_test(k, key_loss=1.0) for k in (0, 1, 2)}
    res = pool_seeds(
        {
            k: {
                "methods": {
                    "flip": {"keyword_nulls": {"test": flip[k]}},
                    "steady": {"keyword_nulls": {"test": steady[k]}},
                }
            }
            for k in (0, 1, 2)
        }
    )
    f = res["finding1"]["flip"]
    assert f["seeds"]["consistency"] == "seed-dependent" and f["seeds"]["n_holds"] == 2 and f["seeds"]["n_seeds"] == 3
    assert "seed-dependent: holds on 2 of 3 seeds (seed 0 yes, seed 1 no, seed 2 yes)" in f["verdict"]
    assert res["finding1"]["steady"]["seeds"]["consistency"] == "holds on every seed"
    assert res["seed_dependent"] == ["finding 1, flip"]
    assert seed_marks({0: False, 1: False})["consistency"] == "holds on no seed"


# ------------------------------------------------------------------ synthetic finding 2 inputs


def _controlled(rng, n: int = 12) -> dict:
    """A controlled recovery in ControlledRecovery.to_dict()'s shape: the original knows every item under
    every emphasis, the unlearned model forgets them plainly, keyword emphasis brings the fact's
    log-prob back more than placebo on average."""
    from unpact.emphasis.controlled import ControlledSettings, summarise

    cfg = ControlledSettings(templates=("repeat",), activations=(("attention", 4.0, "all"),))
    settings = cfg.setting_list()
    ids = [f"f{i}" for i in range(n)]

    def run(rouge, lp):
        return {
            "rouge": [float(x) for x in rouge],
            "logprob": [float(x) for x in lp],
            "rank": [1 if r >= 0.9 else 3 for r in rouge],
            "answers": [""] * len(rouge),
        }

    def model(unlearned: bool):
        runs = {
            "plain": {
                "forget": run([0.2 if unlearned else 1.0] * n, rng.normal(-3 if unlearned else -0.5, 0.2, n)),
                "retain": run([1.0] * 4, [-0.5] * 4),
            }
        }
        for s in settings:
            gain = rng.normal(1.0, 0.5, n) if unlearned else rng.normal(0.0, 0.1, n)
            base = runs["plain"]["forget"]["logprob"]
            rouge = [1.0 if i < n // 2 else 0.2 for i in range(n)] if unlearned else [1.0] * n  # half come back
            runs[f"{s['name']}|keyword"] = {
                "forget": run(rouge, np.add(base, gain)),
                "retain": run([1.0] * 4, [-0.5] * 4),
            }
            runs[f"{s['name']}|placebo"] = {
                "forget": run([0.2 if unlearned else 1.0] * n, np.add(base, rng.normal(0.0, 0.1, n)))
            }
        return runs

    raw = {
        "ids": {"forget": ids, "retain": ["r0", "r1", "r2", "r3"]},
        "usable": [True] * n,
        "settings": settings,
        "runs": {"unlearned": model(True), "original": model(False)},
    }
    return {"method": "synthetic", "settings": cfg.to_dict(), "raw": raw, "summary": summarise(raw, cfg)}


# ------------------------------------------------------------------ the grid and unpact run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from unpact.testing import make_tiny_checkpoint, write_toy_tofu

    root = tmp_path_factory.mktemp("seeds")
    bench = root / "bench"
    write_toy_tofu(bench, 4, genre=False, n_perturbed=2)
    model = make_tiny_checkpoint("gpt2", root / "tiny-gpt2")
    run = {
        "reference_model": "none",
        "max_items": 2,
        "max_new_tokens": 8,
        "method_config": {"ga_gdr": {"steps": 2, "batch_size": 2}},
        "attribution": {"methods": ["loo"], "subset": 1},
        "emphasis": {"templates": ["focus"], "factors": [1.0, 4.0], "layer_sets": ["all"], "max_control_items": 1},
        "trajectory": {"enabled": False},
        # every attack runs, relearning at one step and one rate (its default sweep is most of a run's
        # time): no assertion here reads an attack's numbers
        "attacks": {"options": {"relearning": {"steps": [1], "lrs": [1e-3]}}},
    }
    grid = {
        "models": [str(model)],
        "benchmarks": [
            {
                "name": "toy",
                "benchmark": "tofu",
                "benchmark_path": str(bench),
                "holdout_split": "none",
                "general": "none",
            }
        ],
        "methods": ["ga_gdr"],
        "run": run,
        "executor": "local",
    }
    return root, grid


def test_grid_with_seeds_runs_every_cell_once_per_seed_and_resumes(world):
    from unpact.grid import expand, grid_from_dict, run_grid

    root, data = world
    assert [c.name for c in expand(grid_from_dict({**data, "out": str(root / "plain")}))] == ["tiny-gpt2__toy__ga_gdr"]
    with pytest.raises(ConfigError, match="'seed'"):
        grid_from_dict({**data, "seeds": [0, 1], "run": {**data["run"], "seed": 3}})
    with pytest.raises(ConfigError, match="distinct"):
        grid_from_dict({**data, "seeds": [1, 1]})
    grid = grid_from_dict({**data, "seeds": [0, 1], "out": str(root / "g")})
    cells = expand(grid)
    assert [(c.name, c.seed, c.config.seed) for c in cells] == [
        ("tiny-gpt2__toy__ga_gdr__seed0", 0, 0),
        ("tiny-gpt2__toy__ga_gdr__seed1", 1, 1),
    ]
    started = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run_grid(grid, on_start=lambda cells, todo: started.append([c.name for c in todo]))
        assert started[-1] == [c.name for c in cells] and report["n_done"] == 2
        for c in cells:
            cfg = json.loads((c.dir / "config.json").read_text())
            assert cfg["seed"] == c.seed and cfg["methods"] == ["ga_gdr"]
        assert [f["seed"] for f in report["findings"]] == [0, 1]
        pooled = report["pooled"][0]
        assert pooled["seeds"] == [0, 1] and pooled["summary"][0]["method"] == "original"
        assert "ga_gdr" in pooled["finding1"] and len(pooled["finding1"]["ga_gdr"]["seeds"]["per_seed"]) == 2
        md = (root / "g" / "grid.md").read_text()
        assert "| tiny-gpt2 | toy | ga_gdr | 1 |" in md and "2 seeds pooled" in md
        assert "Pooled over seeds" in (root / "g" / "grid.html").read_text()
        # resume: a finished grid runs nothing; a cell without its results runs again, from its stage files
        kept = {p: p.stat().st_mtime_ns for p in (cells[1].dir / "stages").rglob("*.json")}
        run_grid(grid, on_start=lambda cells, todo: started.append([c.name for c in todo]))
        assert started[-1] == []
        (cells[1].dir / "results.json").unlink()
        again = run_grid(grid, on_start=lambda cells, todo: started.append([c.name for c in todo]))
        assert started[-1] == ["tiny-gpt2__toy__ga_gdr__seed1"] and again["n_done"] == 2
        assert {p: p.stat().st_mtime_ns for p in kept} == kept  # no stage recomputed
        assert again["pooled"][0]["summary"] == report["pooled"][0]["summary"]
    finally:
        torch.set_num_threads(threads)


def test_run_with_seeds_writes_a_run_per_seed_and_the_pooled_report(world, capsys):
    from unpact.cli import main

    root, data = world
    cfg = root / "study.json"
    study = {
        **data["run"],
        "model": data["models"][0],
        **{k: v for k, v in data["benchmarks"][0].items() if k != "name"},
        "methods": ["ga_gdr"],
    }
    cfg.write_text(json.dumps(study))
    out = root / "seeded"
    assert main(["run", "--config", str(cfg), "--out", str(out), "--seeds", "0,1", "--seed", "2"]) == 2
    assert "--seed and --seeds" in capsys.readouterr().err
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--config", str(cfg), "--out", str(out), "--seeds", "0,1"]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "pooled over seeds 0, 1: mean [min-max] over seeds" in printed and "seed-dependent claims" in printed
    for k in (0, 1):
        assert json.loads((out / f"seed{k}" / "results.json").read_text())["config"]["seed"] == k
    pooled = json.loads((out / "pooled.json").read_text())
    assert pooled["seeds"] == [0, 1] and Path(pooled["dirs"]["1"]) == out / "seed1"
    row = next(r for r in pooled["summary"] if r["method"] == "ga_gdr")
    per = [json.loads((out / f"seed{k}" / "results.json").read_text())["summary"][1]["forget_rouge"] for k in (0, 1)]
    assert row["forget_rouge"]["min"] == min(per) and row["forget_rouge"]["max"] == max(per)
    assert (out / "pooled.md").is_file() and (out / "pooled.html").is_file()


def test_the_dilemma_pooled_over_seeds_keeps_each_seeds_strata_apart():
    """Part (a) shuffles within seed x target strata (two copies of one seed: twice the points, the same
    rho per stratum); part (b) counts items x seeds with an interval clustered by item."""
    from unpact.analyses.dilemma import checkpoint_point, dilemma_verdict

    pts = [
        checkpoint_point(
            m,
            "forget_below_0.5",
            ["hidden"] * (4 - e) + ["erased"] * e,
            list("abcd"),
            utility_drop=0.1 * e + 0.01 * i,
            stratum=f"forget_below_{t}",
        )
        for t in (0.5, 0.25)
        for i, (m, e) in enumerate(zip("vwxyz", (0, 1, 2, 3, 4)))
    ]
    one = dilemma_verdict(pts)
    ctrl = _controlled(np.random.default_rng(5))
    methods = {
        "ga": {
            "trajectory": {
                "measured": [
                    {
                        "step": 4,
                        "names": ["forget_below_0.5"],
                        "controlled": ctrl,
                        "presence": {"ids": [f"f{i}" for i in range(12)], "calls": ["hidden"] * 9 + ["erased"] * 3},
                    }
                ]
            }
        }
    }
    from unpact.analyses.seeds import pooled_dilemma, recovered_rows

    rows = recovered_rows(methods)  # keyword emphasis brings back f0-f5 (placebo none): all six probe-present
    assert rows == [(f"f{i}", 1.0) for i in range(6)]
    rows = [(f"f{i}", 1.0 if i < 9 else 0.0) for i in range(12)]

    pooled = pooled_dilemma({0: pts, 1: pts}, {0: rows, 1: rows}, {0: one, 1: one})
    a = pooled["erasure_costs_utility"]
    assert a["n"] == 2 * one["erasure_costs_utility"]["n"] and a["n_strata_used"] == 4
    assert set(a["rho_per_stratum"]) == {
        "seed0:forget_below_0.5",
        "seed0:forget_below_0.25",
        "seed1:forget_below_0.5",
        "seed1:forget_below_0.25",
    }
    b = pooled["recoverable_is_present"]
    assert b["n_rows"] == 24 and b["n_items"] == 12 and b["share"] == 0.75 and b["supported"] is False
    assert pooled["seeds"]["consistency"] in ("holds on every seed", "holds on no seed")
