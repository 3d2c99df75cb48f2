"""The study grid: expansion into cells, the same per-cell results on a local Ray with two
workers as in-process, a cell killed mid-way redone on rerun, and the grid report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unpact.errors import ConfigError
from unpact.grid import expand, grid_from_dict, run_grid
from unpact.testing import make_tiny_checkpoint, write_toy_tofu

METHODS = ["ga_gdr", "npo_gdr"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    bench = root / "bench"
    write_toy_tofu(bench, 4, genre=False, n_perturbed=2)
    model = make_tiny_checkpoint("gpt2", root / "tiny-gpt2")
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
        "methods": METHODS,
        "run": {
            "reference_model": "none",
            "max_items": 2,
            "max_new_tokens": 8,
            "method_config": {m: {"steps": 2, "batch_size": 2} for m in METHODS},
            "attribution": {"methods": ["loo"], "subset": 1},
            "emphasis": {"templates": ["focus"], "factors": [1.0, 4.0], "layer_sets": ["all"], "max_control_items": 1},
            "trajectory": {"enabled": False},  # the trajectory stage has its own tests (test_trajectory_stage.py)
            # every attack runs, relearning at one step and one rate (its default sweep is 3 x 2 runs up to
            # 20 steps, most of a cell's time): no assertion here reads an attack's numbers
            "attacks": {"options": {"relearning": {"steps": [1], "lrs": [1e-3]}}},
        },
    }
    return root, grid


def _grid(world, out: str, **kw):
    root, data = world
    return grid_from_dict({**data, "out": str(root / out), **kw})


@pytest.fixture(scope="module")
def local_run(world):
    """The reference: both cells in this process, one torch thread (as the Ray workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run_grid(_grid(world, "local", executor="local"))
    finally:
        torch.set_num_threads(threads)
    return report


def _results(cell_dir) -> dict:
    res = json.loads((Path(cell_dir) / "results.json").read_text())
    res["config"].pop("out")  # the only setting that differs between two grids
    return res


def _same(a, b, path="") -> None:
    """Equal structure and strings; floats equal within 1e-6 (CPU kernels, same thread count)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (path, a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def test_grid_expands_models_benchmarks_methods(world, tmp_path):
    root, data = world
    grid = grid_from_dict(
        {
            **data,
            "models": [data["models"][0], {"name": "twin", "model": data["models"][0]}],
            "out": str(tmp_path / "g"),
        }
    )
    cells = expand(grid)
    assert [c.name for c in cells] == [
        "tiny-gpt2__toy__ga_gdr",
        "tiny-gpt2__toy__npo_gdr",
        "twin__toy__ga_gdr",
        "twin__toy__npo_gdr",
    ]
    c = cells[1]
    assert c.config.methods == ["npo_gdr"] and list(c.config.method_config) == ["npo_gdr"]
    assert c.config.out == str(tmp_path / "g" / "cells" / c.name) and c.config.max_items == 2
    assert c.strength is None
    assert c.config.general is None and c.config.reference_model is None and c.config.holdout_split is None
    with pytest.raises(ConfigError, match="unknown grid key 'model'"):
        grid_from_dict({**data, "model": "x"})
    with pytest.raises(ConfigError, match="strengths are not supported yet"):
        grid_from_dict({**data, "strengths": [1, 2]})
    with pytest.raises(ConfigError, match="both named"):
        expand(grid_from_dict({**data, "models": data["models"] * 2}))
    with pytest.raises(ConfigError, match="tiny-gpt2__toy__ga_gdr: .*max_items"):
        expand(grid_from_dict({**data, "run": {**data["run"], "max_items": 0}}))
    with pytest.raises(ConfigError, match="unknown unlearning method 'gaa'"):
        expand(grid_from_dict({**data, "methods": ["ga_gdr", "gaa"]}))
    with pytest.raises(ConfigError, match="unknown key 'forget'"):
        expand(grid_from_dict({**data, "benchmarks": [{"benchmark": "tofu", "forget": "x"}]}))


def test_local_grid_report(world, local_run):
    root, _ = world
    assert local_run["n_done"] == 2 and local_run["n_failed"] == 0
    assert [r["method"] for r in local_run["table"]] == ["original", *METHODS]
    f = local_run["findings"][0]
    assert f["methods"] == sorted(METHODS) and f["verdicts"]["recovery"]
    assert "2 method(s)" in f["verdicts"]["collapse"]  # analysed across the cells, not one method each
    md = (root / "local" / "grid.md").read_text()
    assert "| tiny-gpt2 | toy | ga_gdr |" in md and "## Findings" in md
    assert "<table>" in (root / "local" / "grid.html").read_text()
    assert json.loads((root / "local" / "grid.json").read_text())["n_done"] == 2


def test_ray_grid_gives_the_same_cells_as_in_process(world, local_run):
    ray = pytest.importorskip("ray")
    root, _ = world
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
            }
        },
    )
    try:
        assert ray.cluster_resources().get("CPU") == 2
        report = run_grid(_grid(world, "ray", executor="ray", cpus_per_cell=1))
    finally:
        ray.shutdown()
    assert report["n_done"] == 2
    for cell in report["cells"]:
        _same(_results(cell["dir"]), _results(root / "local" / "cells" / cell["name"]), cell["name"])


def test_a_killed_cell_is_redone_on_rerun(world, local_run):
    root, data = world
    cfg = root / "kill.json"
    cfg.write_text(json.dumps({**data, "out": str(root / "kill"), "executor": "local"}))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    code = "import torch, sys; torch.set_num_threads(1); from unpact.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "grid", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = root / "kill" / "cells" / "tiny-gpt2__toy__ga_gdr"
    try:
        deadline = time.time() + 600
        while not (first / "stages" / "ga_gdr" / "unlearn.json").is_file():  # killed in the middle of cell 1
            assert proc.poll() is None, "the grid ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (first / "results.json").exists()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run_grid(grid_from_dict(json.loads(cfg.read_text())))
    finally:
        torch.set_num_threads(threads)
    assert report["n_done"] == 2
    for cell in report["cells"]:
        _same(_results(cell["dir"]), _results(root / "local" / "cells" / cell["name"]), cell["name"])


def test_a_failed_cell_is_reported_and_retried(world, capsys):
    """A cell that raises is listed with its error (exit status 1), and a rerun tries it again;
    bad settings are caught before any cell runs (exit status 2)."""
    import shutil

    from unpact.cli import main

    root, data = world
    cfg = root / "bad.json"
    cfg.write_text(
        json.dumps(
            {
                **data,
                "methods": ["ga"],
                "out": str(root / "bad"),
                "executor": "local",
                "run": {**data["run"], "method_config": {"ga": {"lr": -1.0}}},
            }
        )
    )
    assert main(["grid", "--config", str(cfg)]) == 2
    assert "lr must be" in capsys.readouterr().err and not (root / "bad" / "grid.json").exists()
    # a safetensors file that is not one: caught by the input checks before any cell runs (exit status 2)
    corrupt = root / "corrupt" / "tiny-gpt2"
    shutil.copytree(data["models"][0], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    cfg = root / "corrupt.json"
    cfg.write_text(
        json.dumps(
            {
                **data,
                "models": [str(corrupt)],
                "methods": ["ga"],
                "out": str(root / "corrupt-grid"),
                "executor": "local",
            }
        )
    )
    assert main(["grid", "--config", str(cfg)]) == 2
    assert "model.safetensors" in capsys.readouterr().err and not (root / "corrupt-grid" / "grid.json").exists()
    # weights whose shapes do not fit the config: readable files, so the cell fails at run time (loading)
    broken = root / "broken" / "tiny-gpt2"
    shutil.copytree(data["models"][0], broken)
    conf = json.loads((broken / "config.json").read_text())
    conf["n_embd"] = 2 * conf["n_embd"]
    (broken / "config.json").write_text(json.dumps(conf))
    cfg = root / "fail.json"
    cfg.write_text(
        json.dumps({**data, "models": [str(broken)], "methods": ["ga"], "out": str(root / "fail"), "executor": "local"})
    )
    for _attempt in range(2):
        assert main(["grid", "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert "1 to run" in err and "failed tiny-gpt2__toy__ga: " in err, err
        report = json.loads((root / "fail" / "grid.json").read_text())
        assert report["n_failed"] == 1 and report["cells"][0]["status"] == "failed"
        assert report["cells"][0].get("error")
