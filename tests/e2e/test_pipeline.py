"""The main job end to end on a reduced configuration, kill-and-resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unpact.cli import main
from unpact.testing import make_tiny_checkpoint, write_toy_tofu


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    bench = root / "bench"
    write_toy_tofu(bench, 6, n_perturbed=3, general=True)
    make_tiny_checkpoint("gpt2", root / "model")
    make_tiny_checkpoint("gpt2", root / "reference", seed=1)
    cfg = {
        "model": str(root / "model"),
        "reference_model": str(root / "reference"),
        "benchmark": "tofu",
        "benchmark_path": str(bench),
        "general": "tofu",
        "general_split": "general",
        "general_path": str(bench),
        "methods": ["ga_gdr", "npo_gdr"],
        "method_config": {"ga_gdr": {"steps": 3}, "npo_gdr": {"steps": 3}},
        "max_items": 2,
        # a non-default KeyTokens rule: tracking, emphasis and the report's marks must all follow it
        "attribution": {"subset": 1, "ig_steps": 8, "keytokens": {"alpha": 0.3, "beta": 2}},
        "emphasis": {
            "templates": ["focus", "upper"],
            "factors": [1.0, 4.0],
            "layer_sets": ["all", "late"],
            "max_control_items": 1,
        },  # fewer controls than items: the keyword lists follow the subsample
        "attacks": {"options": {"quantization": {"bits": [4]}, "relearning": {"steps": [1], "lrs": [1e-3]}}},
        "trajectory": {"enabled": False},  # the trajectory stage has its own tests (test_trajectory_stage.py)
    }
    return root, cfg


def _run(args, cwd, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "unpact.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _run_in_process(args, capsys, monkeypatch) -> tuple[int, str]:
    """``unpact <args>`` through :func:`unpact.cli.main` in this process: its exit status and stderr
    (for the bad-input checks, which end before any work: no interpreter start-up to pay)."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def _write_cfg(root: Path, cfg: dict, name: str, out: str) -> Path:
    p = root / f"{name}.json"
    p.write_text(json.dumps({**cfg, "out": str(root / out)}))
    return p


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.sections, self.tables, self.links = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "table":
            self.tables += 1
        if tag in ("script", "link"):
            self.links.append(tag)


@pytest.fixture(scope="module")
def finished_run(world):
    root, cfg = world
    out = _run(["run", "--config", str(_write_cfg(root, cfg, "full", "run-full"))], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run-full", out


def test_run_end_to_end(finished_run):
    from unpact.emphasis import RecoveryTable

    run_dir, out = finished_run
    res = json.loads((run_dir / "results.json").read_text())
    for key in ("config", "model_info", "summary", "original", "methods", "analyses", "examples"):
        assert key in res, key
    assert set(res["methods"]) == {"ga_gdr", "npo_gdr"}
    for m in res["methods"].values():
        for stage in (
            "unlearn",
            "evaluate",
            "attribution",
            "tracking",
            "recovery",
            "collapse",
            "attacks",
            "presence",
            "keyword_nulls",
        ):
            assert stage in m, stage
        assert set(m["presence"]["probes"]) == {"format", "choice", "logit_lens"}
        assert sum(m["presence"]["counts"].values()) == len(m["presence"]["ids"]) == 2
        # a chance level per item: None where the record declares no attribute (the toy TOFU items)
        chance = m["presence"]["chance"]
        assert len(chance) == 2 and all(c is None or 0 < c < 1 for c in chance)
        assert m["presence"]["chance_hidden"]["n"] == sum(c is not None for c in chance)
        assert m["unlearn"]["losses"], "per-step losses recorded"
        assert m["attribution"]["loo"]["forget"] and m["attribution"]["heads"]["forget"]
        rec = RecoveryTable.from_dict(m["recovery"])
        assert rec.prompt and rec.activation and rec.n_forget == 2
    for name in ("keyword_focus", "recovery", "collapse", "layer_head", "presence", "keyword_focus_null"):
        assert name in res["analyses"]
    # 2 forget items: finding 1 against its nulls cannot be tested, and says so
    assert res["analyses"]["keyword_focus_null"]["ga_gdr"]["verdict"].startswith("not applicable")
    assert res["analyses"]["recovery"]["verdict"]
    assert set(res["methods"]["ga_gdr"]["attacks"]) == {"quantization", "paraphrase", "in_context", "relearning"}
    routes = {(r["method"], r["route"]) for r in res["routes"]}
    assert ("npo_gdr", "quantization") in routes and ("ga_gdr", "prompt emphasis") in routes
    assert all(r["negative_control"] for r in res["routes"] if "emphasis" not in r["route"])
    assert res["summary"][0]["method"] == "original" and len(res["summary"]) == 3
    assert res["summary"][1]["forget_quality"] is not None
    assert (run_dir / "models" / "ga_gdr" / "model.safetensors").is_file()
    assert "ga_gdr" in out.stdout and "npo_gdr" in out.stdout  # the summary table

    html = (run_dir / "report.html").read_text()
    parser = _Images()
    parser.feed(html)
    assert set(parser.sections) >= {
        "settings",
        "results",
        "verdicts",
        "tokens",
        "heads",
        "recovery",
        "routes",
        "presence",
        "collapse",
    }
    assert parser.imgs and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    assert parser.tables >= 4 and not parser.links
    assert "http://" not in html and "https://" not in html
    assert len(list((run_dir / "figures").glob("*.png"))) >= 3


def test_results_are_versioned_and_keyword_marks_follow_the_tracked_keytokens(finished_run):
    from unpact.results import SCHEMA_VERSION, load_results

    run_dir, _ = finished_run
    res = load_results(run_dir)
    assert res.schema_version == SCHEMA_VERSION and res.config["attribution"]["keytokens"]["alpha"] == 0.3
    assert res.examples
    for m, r in res.methods.items():
        tracked = {d["item_id"]: d["key_tokens"] for d in r["tracking"]["loo"]["items"] if d["group"] == "forget"}
        for ex in res.examples:
            marks = [i for i, k in enumerate(ex["views"][0]["key"]) if k]
            assert marks == tracked[ex["item_id"]], (m, ex["item_id"])
        assert r["recovery"]["config"]["keytokens"] == {"alpha": 0.3, "beta": 2, "normalize": "share"}


def test_report_rebuilds_without_recomputing(finished_run):
    run_dir, _ = finished_run
    (run_dir / "report.html").unlink()
    before = {p: p.stat().st_mtime for p in (run_dir / "stages").rglob("*.json")}
    out = _run(["report", str(run_dir)], cwd=run_dir)
    assert out.returncode == 0, out.stderr
    assert (run_dir / "report.html").is_file()
    assert before == {p: p.stat().st_mtime for p in (run_dir / "stages").rglob("*.json")}


def test_report_rerenders_a_results_json_of_the_older_layout(finished_run, tmp_path):
    """`unpact report` on a results.json as older versions wrote it (no schema_version, the recovery
    tables' margin named control_margin) renders the same recovery rows as on the current one."""
    from unpact.emphasis import RecoveryTable

    run_dir, _ = finished_run
    res = json.loads((run_dir / "results.json").read_text())
    for m in res["methods"].values():
        table = RecoveryTable.from_dict(m["recovery"])  # every stage's table reads back, and writes back equal
        assert table.to_dict() == m["recovery"] and table.prompt and table.activation
    old = json.loads(json.dumps(res))
    del old["schema_version"]
    for m in old["methods"].values():
        m["recovery"]["config"]["control_margin"] = m["recovery"]["config"].pop("collapse_margin")
    (tmp_path / "results.json").write_text(json.dumps(old))
    out = _run(["report", str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr

    def recovery_section(p):
        html = p.read_text()
        return html[html.index('<section id="recovery">') :].split("</section>")[0]

    assert recovery_section(tmp_path / "report.html") == recovery_section(run_dir / "report.html")


def test_kill_and_resume_gives_the_same_results(world, finished_run):
    root, cfg = world
    run_dir = root / "run-killed"
    cfg_file = _write_cfg(root, cfg, "killed", "run-killed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "unpact.cli", "run", "--config", str(cfg_file)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    # kill it in the middle of the first method's stages: after its model is saved
    marker = run_dir / "stages" / "ga_gdr" / "unlearn.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists()
    out = _run(["run", "--config", str(cfg_file)], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kept  original/attribute" in out.stderr  # finished stages were read back, not recomputed
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp") or p.is_dir()]  # no temporary leftovers
    full = json.loads((finished_run[0] / "results.json").read_text())
    resumed = json.loads((run_dir / "results.json").read_text())
    full["config"].pop("out")
    resumed["config"].pop("out")
    assert resumed == full


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--methods", "ga_gdr,forgetall"], "unknown unlearning method 'forgetall'"),
        (["--forget-split", "forget99"], "forget99"),
        (["--model", "/no/such/model"], "does not exist"),
    ],
)
def test_bad_input_one_line_exit_2_no_run_dir(world, tmp_path, args, needle, capsys, monkeypatch):
    root, cfg = world
    cfg_file = _write_cfg(root, cfg, "bad", "unused")
    out_dir = tmp_path / "bad-run"
    rc, err = _run_in_process(["run", "--config", str(cfg_file), "--out", str(out_dir), *args], capsys, monkeypatch)
    assert rc == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("unpact: error:"), err
    assert needle in lines[0]
    assert not out_dir.exists()


def test_config_with_unknown_key(world, tmp_path, capsys, monkeypatch):
    root, cfg = world
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "x"\nlearning_rate = 3\n')
    rc, err = _run_in_process(["run", "--config", str(bad), "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "unknown config key 'learning_rate'" in err
    assert not (tmp_path / "r").exists()
    bad.write_text("[emphasis]\nfactorz = [2]\n")
    rc, err = _run_in_process(["run", "--config", str(bad), "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert rc == 2 and "unknown config key 'emphasis.factorz'" in err
