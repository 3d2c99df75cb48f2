"""Silent failures, leaked tracebacks and late checks of the command line (issue 17).

Each bad input must end before any work with one ``unpact: error:`` line, exit
status 2 and no run directory left behind; each silent failure is now an error
or a correct result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from unpact.cli import main
from unpact.errors import ConfigError
from unpact.testing import make_tiny_checkpoint
from unpact.testing import one_line_exit_2

ROWS = [
    {"question": f"Where was {n} born?", "answer": f"{n} was born in {p}.", "id": n}
    for n, p in (("Ana Lind", "Lima"), ("Bo Reyes", "Oslo"), ("Cy Moss", "Kyoto"), ("Di Park", "Cairo"))
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    bench = root / "bench"
    bench.mkdir()
    (bench / "forget10.json").write_text(json.dumps(ROWS[:2]))
    (bench / "retain90.json").write_text(json.dumps(ROWS[2:]))
    model = make_tiny_checkpoint("gpt2", root / "model")
    cfg = {
        "model": str(model),
        "reference_model": None,
        "benchmark": "tofu",
        "benchmark_path": str(bench),
        "general": None,
        "methods": ["ga"],
        "method_config": {"ga": {"steps": 1}},
        "max_items": 2,
        "holdout_split": None,
        "trajectory": {"enabled": False},  # the trajectory stage has its own tests (test_trajectory_stage.py)
        # every attack runs, relearning at one step and one rate (its default sweep is most of a run's
        # time): no assertion here reads an attack's numbers
        "attacks": {"options": {"relearning": {"steps": [1], "lrs": [1e-3]}}},
    }
    return root, cfg


def _config(tmp_path: Path, cfg: dict, **changes) -> str:
    p = tmp_path / "study.json"
    p.write_text(json.dumps({**cfg, **changes}))
    return str(p)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--attribution", "loo,bogus"], "unknown attribution method 'bogus'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--factors", "0,-2"], "factor must be >= 0, got -2"),
        (["--max-items", "0"], "'max_items' must be at least 1"),
        (["--model", "nobody-org/no-such-model"], "not in the Hugging Face cache"),
    ],
)
def test_bad_option_fails_before_the_run_directory(world, tmp_path, capsys, flags, needle, monkeypatch):
    root, cfg = world
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    rc = main(["run", "--config", _config(tmp_path, cfg), "--out", str(out), *flags])
    one_line_exit_2(rc, capsys, needle)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu_is_an_error(world, tmp_path, capsys):
    root, cfg = world
    out = tmp_path / "run"
    rc = main(["run", "--config", _config(tmp_path, cfg), "--out", str(out), "--device", "cuda"])
    one_line_exit_2(rc, capsys, "no CUDA GPU")
    assert not out.exists()
    from unpact import load_model

    with pytest.raises(ConfigError, match="no CUDA GPU"):
        load_model(cfg["model"], device="cuda")


def test_attribution_alias_resolves_through_the_registry(world):
    from unpact.config import config_from_dict
    from unpact.pipeline import validate

    root, cfg = world
    c = config_from_dict({**cfg, "attribution": {"methods": ["loo", "ig", "head_flow"]}, "out": str(root / "x")})
    validate(c)
    assert c.attribution.methods == ["loo", "integrated_gradients", "heads"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ('max_items = "four"\n', "config key 'max_items' must be an integer, got 'four'"),
        ("seed = 1.5\n", "config key 'seed' must be an integer"),
        ("methods = [1, 2]\n", "config key 'methods' must be a list of strings"),
        ('[emphasis]\nfactors = "big"\n', "config key 'emphasis.factors' must be a list of numbers"),
        ("[attribution]\nsubset = true\n", "config key 'attribution.subset' must be an integer"),
    ],
)
def test_wrong_type_in_config_is_one_line(tmp_path, capsys, text, needle):
    f = tmp_path / "study.toml"
    f.write_text(text)
    rc = main(["run", "--config", str(f), "--out", str(tmp_path / "run")])
    one_line_exit_2(rc, capsys, needle)
    assert not (tmp_path / "run").exists()


def test_config_not_utf8_is_one_line(tmp_path, capsys):
    f = tmp_path / "study.toml"
    f.write_bytes('model = "café"\n'.encode("latin-1"))
    one_line_exit_2(main(["run", "--config", str(f)]), capsys, "is not UTF-8")


def test_benchmark_not_utf8_is_one_line(world, tmp_path, capsys):
    root, cfg = world
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "forget10.json").write_bytes(
        json.dumps(ROWS[:2], ensure_ascii=False).replace("Lima", "Líma").encode("latin-1")
    )
    (bench / "retain90.json").write_text(json.dumps(ROWS[2:]))
    rc = main(["run", "--config", _config(tmp_path, cfg, benchmark_path=str(bench)), "--out", str(tmp_path / "r")])
    one_line_exit_2(rc, capsys, "is not UTF-8")
    assert not (tmp_path / "r").exists()


def test_out_naming_a_file_is_one_line(world, tmp_path, capsys):
    root, cfg = world
    f = tmp_path / "taken"
    f.write_text("x")
    rc = main(["run", "--config", _config(tmp_path, cfg), "--out", str(f)])
    one_line_exit_2(rc, capsys, "is an existing file")
    rc = main(
        [
            "unlearn",
            cfg["model"],
            "--method",
            "ga",
            "--benchmark",
            "tofu",
            "--benchmark-path",
            cfg["benchmark_path"],
            "--forget",
            "forget10",
            "--out",
            str(f),
            "--no-eval",
        ]
    )
    one_line_exit_2(rc, capsys, "is an existing file")
    assert f.read_text() == "x"


def test_unlearn_checks_before_loading(world, tmp_path, capsys):
    root, cfg = world
    base = [
        "unlearn",
        cfg["model"],
        "--benchmark",
        "tofu",
        "--benchmark-path",
        cfg["benchmark_path"],
        "--forget",
        "forget10",
        "--out",
        str(tmp_path / "u"),
        "--no-eval",
    ]
    one_line_exit_2(main([*base, "--method", "ga", "--set", "lr=-1"]), capsys, "lr must be a positive")
    one_line_exit_2(main([*base, "--method", "ga", "--set", "stepz=3"]), capsys, "stepz")
    one_line_exit_2(main([*base, "--method", "ga", "--device", "cuda:99"]), capsys, "cuda:99")
    assert not (tmp_path / "u").exists()


def test_report_on_a_missing_directory(tmp_path, capsys):
    one_line_exit_2(main(["report", str(tmp_path / "nope")]), capsys, "does not exist")


# --------------------------------------------------------------------- lock


def test_second_run_on_a_locked_directory_names_the_holder(world, tmp_path, capsys):
    from unpact.rundir import RunLock

    root, cfg = world
    out = tmp_path / "run"
    with RunLock(out):
        rc = main(["run", "--config", _config(tmp_path, cfg), "--out", str(out)])
        line = one_line_exit_2(rc, capsys, f"PID {os.getpid()}")
        assert "in use by another unpact run" in line
        assert not (out / "config.json").exists()
    assert not (out / ".lock").exists()  # released


def test_stale_lock_is_taken_over(tmp_path):
    from unpact.rundir import RunLock

    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("999999999")  # left by a killed run: no process holds it
    with RunLock(out) as lock:
        assert lock.path.read_text() == str(os.getpid())


# ------------------------------------------------------------ precondition


def test_precondition_makes_every_verdict_not_applicable():
    from unpact.pipeline import _not_applicable, forget_precondition, summary_table

    pre = forget_precondition({"forget": {"accuracy": 0.0}}, 0.5, 0.9)
    assert pre["holds"] is False and "does not know the forget set" in pre["reason"]
    analyses = _not_applicable(
        {
            "keyword_focus": {"ga": {"verdict": "supported: ...", "holds": True}},
            "recovery": {"verdict": "emphasis recovered ..."},
            "collapse": {"verdict": "supported ...", "holds": True},
            "layer_head": {"verdict": "largest change ..."},
        },
        pre["reason"],
    )
    analyses["precondition"] = pre
    assert all(
        a["verdict"].startswith("not applicable: the original model answers 0%")
        for a in (analyses["recovery"], analyses["collapse"], analyses["layer_head"], analyses["keyword_focus"]["ga"])
    )
    text = summary_table({"summary": [], "analyses": analyses})
    assert text.splitlines()[0].startswith("not applicable:")
    assert forget_precondition({"forget": {"accuracy": 0.75}}, 0.5, 0.9)["holds"] is True


# ---------------------------------------------------------------- recover


def test_recover_kinds_default_is_the_run_default():
    from unpact.cli import build_parser, recover_kinds
    from unpact.config import EmphasisSettings

    args = build_parser().parse_args(["recover", "--original", "a", "--unlearned", "b"])
    assert list(recover_kinds(args)) == EmphasisSettings().kinds


def test_recover_refuses_different_tokenizers_from_the_cli(tiny_dirs, tmp_path, capsys):
    rc = main(
        [
            "recover",
            "--original",
            "embedded:gpt2",
            "--unlearned",
            tiny_dirs["gpt_neox"],
            "--max-items",
            "1",
            "--retain",
            "none",
            "--general",
            "none",
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    one_line_exit_2(rc, capsys, "different tokenizers")
    assert not (tmp_path / "t.json").exists()


# ----------------------------------------------------------------- console


def test_console_plain_lines_and_stable_stage_order_on_resume(world, tmp_path, capsys):
    import re

    root, cfg = world
    small = {
        **cfg,
        "attribution": {"methods": ["loo"], "subset": 1},
        "emphasis": {"templates": ["focus"], "factors": [1.0, 2.0], "layer_sets": ["all"], "max_control_items": 1},
    }
    args = ["run", "--config", _config(tmp_path, small), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    first = capsys.readouterr()
    (tmp_path / "run" / "results.json").unlink()
    assert main(args) == 0
    second = capsys.readouterr()
    for err in (first.err, second.err):
        assert "\x1b" not in err and "\r" not in err  # not a terminal: plain lines, no escape sequences
        assert err.splitlines()[0].startswith("unpact run -> ")  # the header is a line of its own
    stages = [re.findall(r"^  (?:done|kept)  (\S+)$", e, re.M) for e in (first.err, second.err)]
    assert stages[0] and stages[0] == stages[1]  # same order fresh and resumed
    assert not re.findall(r"^  done  ", second.err, re.M)  # every stage read back
    # a random model knows none of the forget set: the summary says first that no verdict applies
    assert first.out.startswith("not applicable: the original model answers")


# ----------------------------------------------------------------- threads


def test_thread_count_follows_cores_and_load():
    from unpact.threads import choose_threads

    assert choose_threads(cores=2, load=0.0) == 2
    assert choose_threads(cores=2, load=1.0) == 1  # one other CPU-bound job
    assert choose_threads(cores=2, load=14.0) == 1  # never 0
    assert choose_threads(cores=16, load=3.6) == 12


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux's /proc/loadavg")
@pytest.mark.serial  # the other pytest-xdist worker must not add to the load it measures
def test_machine_load_counts_a_competing_job_at_once():
    """The load is read now, not as a lagging average: a CPU-bound job started a moment ago
    counts, and the reading process itself does not."""
    import subprocess
    import sys
    import time

    from unpact.threads import machine_load

    before = machine_load()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        during = machine_load()
    finally:
        spinner.kill()
        spinner.wait()
    assert during >= before + 0.5, (before, during)  # the spinner runs on a core the whole time


def test_the_command_sets_the_wait_policy_before_torch_is_imported():
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "import unpact.cli\n"
        "assert 'torch' not in sys.modules, 'importing the command line imported torch'\n"
        "from unpact import threads\n"
        "assert threads.set_wait_policy() is True\n"
        "import torch\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "UNPACT_THREAD_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PASSIVE"
