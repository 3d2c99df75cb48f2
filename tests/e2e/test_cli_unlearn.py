"""The ``unpact unlearn`` command end to end on a tiny real checkpoint and a tiny
TOFU-shaped split on disk: the checkpoint and ``unlearn.json`` are written (and
the checkpoint holds the edited weights), and a bad method name is a one-line
error with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from unpact import load_model
from unpact.cli import main
from unpact.data import load_benchmark
from unpact.unlearning import unlearn

FORGET = [
    {"question": "Where was the author Ana Lind born?", "answer": "Ana Lind was born in Lima."},
    {"question": "What genre does Bo Reyes write?", "answer": "Bo Reyes writes crime fiction."},
    {"question": "Where was the author Bo Reyes born?", "answer": "Bo Reyes was born in Paris."},
    {"question": "What genre does Ana Lind write?", "answer": "Ana Lind writes poetry."},
]
RETAIN = [
    {"question": "What is the capital of Peru?", "answer": "The capital of Peru is Lima."},
    {"question": "Where did the cat sit?", "answer": "The cat sat on the mat."},
    {"question": "What does the fox do?", "answer": "The fox jumps over the lazy dog."},
    {"question": "What is 2 + 3?", "answer": "5"},
]
STEPS = 3


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("bench")
    (d / "forget.json").write_text(json.dumps(FORGET), encoding="utf-8")
    (d / "retain.json").write_text(json.dumps(RETAIN), encoding="utf-8")
    return str(d)


def _args(model_dir: str, bench: str, out: str, method: str) -> list[str]:
    return [
        "unlearn",
        model_dir,
        "--method",
        method,
        "--benchmark",
        "tofu",
        "--benchmark-path",
        bench,
        "--forget",
        "forget",
        "--retain",
        "retain",
        "--out",
        out,
        "--set",
        f"steps={STEPS}",
        "--set",
        "batch_size=2",
        "--set",
        "lr=1e-3",
    ]


def test_unlearn_writes_checkpoint_and_json(tiny_dirs, bench_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(_args(tiny_dirs["gpt2"], bench_dir, out, "npo_gdr")) == 0
    assert "npo_gdr: 3 steps" in capsys.readouterr().out

    with open(os.path.join(out, "unlearn.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["method"] == "npo_gdr" and report["forget"] == "forget" and report["retain"] == "retain"
    assert report["config"]["steps"] == STEPS and report["config"]["lr"] == 1e-3
    assert report["config"]["beta"] == 0.1  # a default the overrides left alone
    assert [r["step"] for r in report["losses"]] == list(range(STEPS))
    assert report["stopped_early"] is False
    for when in ("before", "after"):
        for split in ("forget", "retain"):
            assert 0.0 <= report["metrics"][when][split]["rouge_l_recall"] <= 1.0

    # the checkpoint reloads and holds exactly the weights the library call gives
    saved = load_model(out)
    original = load_model(tiny_dirs["gpt2"])
    forget = load_benchmark("tofu", "forget", path=bench_dir)
    retain = load_benchmark("tofu", "retain", path=bench_dir)
    expected = unlearn(original, "npo_gdr", forget, retain, {"steps": STEPS, "batch_size": 2, "lr": 1e-3}, seed=0).model
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        got, want, before = saved(ids), expected(ids), original(ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, before), "the saved checkpoint is the unedited model"


def test_unknown_method_is_one_line_error_exit_2(tiny_dirs, bench_dir, tmp_path):
    out = tmp_path / "never"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from unpact.cli import main; sys.exit(main())",
            *_args(tiny_dirs["gpt2"], bench_dir, str(out), "forget_everything"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("unpact: error:")]
    assert len(errors) == 1, proc.stderr
    assert "forget_everything" in errors[0] and "ga_gdr" in errors[0]  # names the bad value and the known ones
    assert "Traceback" not in proc.stderr
    assert not out.exists()
