"""Precision: a tiny model loaded, generated, scored, attributed, unlearned and saved in bfloat16."""

from __future__ import annotations

import pytest
import torch

from unpact import load_model, save_model
from unpact.data import QAItem
from unpact.errors import ModelLoadError
from unpact.generation import greedy_tokens, kv_cache_gap
from unpact.models import resolve_dtype
from unpact.scoring import answer_logprobs, greedy_generate

ITEMS = [
    QAItem("Where was the author Ana Lind born?", "Lima", id="a"),
    QAItem("What genre does Bo Reyes write?", "crime fiction", id="b"),
    QAItem("What is the capital of France?", "Paris", id="c"),
]


@pytest.fixture(scope="module")
def bf16(tiny_dirs):
    return load_model(tiny_dirs["llama"], dtype="bfloat16")


def test_bfloat16_load_generate_score(bf16, tiny_dirs):
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert bf16.unpact_kv_cache["ok"], bf16.unpact_kv_cache
    prompts = [f"Question: {it.question}\nAnswer:" for it in ITEMS]
    texts = greedy_generate(bf16, prompts, max_new_tokens=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    lp = answer_logprobs(bf16, prompts, [" " + it.answer for it in ITEMS])
    assert lp.dtype == torch.float32 and bool(torch.isfinite(lp).all())
    # the bfloat16 numbers are the float32 model's, to bfloat16's precision (not something else)
    fp32 = load_model(tiny_dirs["llama"])
    ref = answer_logprobs(fp32, prompts, [" " + it.answer for it in ITEMS])
    assert torch.allclose(lp, ref, atol=0.1, rtol=0.02)
    assert not torch.equal(lp, ref)
    # the bridge's cache is checked in bfloat16 too: cached and uncached greedy tokens agree here
    seqs = [[0, 5, 6, 7], [0, 9, 10, 11, 12, 13]]
    cached, _ = greedy_tokens(bf16, seqs, max_new_tokens=5, fwd_hooks=[], stop_at_newline=False)
    uncached, _ = greedy_tokens(bf16, seqs, max_new_tokens=5, cache=False, stop_at_newline=False)
    assert cached == uncached
    assert kv_cache_gap(bf16) <= bf16.unpact_kv_cache["tolerance"]


def test_bfloat16_attribution_and_unlearning(bf16, tmp_path):
    from unpact.attribution import attribute
    from unpact.unlearning import unlearn

    attrs = attribute(bf16, ITEMS, method="loo")
    assert all(bool(torch.isfinite(torch.as_tensor(a.scores)).all()) for a in attrs)
    res = unlearn(bf16, "ga_gdr", ITEMS[:2], ITEMS[2:], {"steps": 2, "batch_size": 2, "lr": 1e-2})
    assert not res.stopped_early
    edited = res.model
    assert {p.dtype for p in edited.parameters()} == {torch.bfloat16}
    changed = any(not torch.equal(a, b) for a, b in zip(bf16.parameters(), edited.parameters()))
    assert changed
    out = save_model(edited, tmp_path / "m")
    back = load_model(out, dtype="bfloat16")
    prompts = [f"Question: {it.question}\nAnswer:" for it in ITEMS]
    assert torch.equal(answer_logprobs(back, prompts, [" x"] * 3), answer_logprobs(edited, prompts, [" x"] * 3))


def test_dtype_names():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float16") is torch.float16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("int8")


def test_bfloat16_main_job(tmp_path):
    """`unpact run --dtype bfloat16` on a tiny model: every stage runs, the models stay bfloat16.

    Head attribution is left out: its bfloat16 fix (attribution/heads.py) is another change's.
    """
    import json
    import os
    import subprocess
    import sys

    from unpact.testing import make_tiny_checkpoint

    bench = tmp_path / "bench"
    bench.mkdir()
    rows = [
        {
            "question": f"Where was {n} born?",
            "answer": f"{n} was born in {p}.",
            "id": n,
            "paraphrased_answer": f"{p} is where {n} was born.",
            "perturbed_answer": [f"{n} was born in Rome."],
        }
        for n, p in [("Ana Lind", "Lima"), ("Bo Reyes", "Oslo"), ("Cy Moss", "Kyoto"), ("Di Park", "Cairo")]
    ]
    (bench / "forget10.json").write_text(json.dumps(rows[:2]))
    (bench / "retain90.json").write_text(json.dumps(rows[2:]))
    make_tiny_checkpoint("llama", tmp_path / "model")
    cfg = {
        "model": str(tmp_path / "model"),
        "reference_model": None,
        "general": None,
        "benchmark": "tofu",
        "benchmark_path": str(bench),
        "holdout_split": None,
        "methods": ["ga_gdr"],
        "method_config": {"ga_gdr": {"steps": 2, "lr": 1e-2}},
        "max_items": 2,
        "attribution": {"methods": ["loo", "integrated_gradients"], "subset": 1, "ig_steps": 4},
        "emphasis": {"templates": ["focus"], "factors": [1.0, 4.0], "layer_sets": ["all"], "max_control_items": 1},
        "max_new_tokens": 6,
        "out": str(tmp_path / "run"),
        "trajectory": {"enabled": False},  # the trajectory stage has its own tests (test_trajectory_stage.py)
        # every attack runs in bfloat16, relearning at one step and one rate (its default sweep is most of
        # the run's time)
        "attacks": {"options": {"relearning": {"steps": [1], "lrs": [1e-3]}}},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(
        [sys.executable, "-m", "unpact.cli", "run", "--config", str(tmp_path / "cfg.json"), "--dtype", "bfloat16"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["dtype"] == "bfloat16"
    assert res["model_info"]["dtype"] == "bfloat16"
    saved = json.loads((tmp_path / "run" / "models" / "ga_gdr" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"
