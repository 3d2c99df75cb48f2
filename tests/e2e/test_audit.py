"""``unpact audit`` (issue 24): the stages after unlearning on checkpoints unpact did not make.

* auditing a checkpoint made by ``unpact unlearn`` gives, key by key, the numbers ``unpact run``
  gives for the same method and seed (one code path);
* every bad input ends before any work with one ``unpact: error:`` line, exit status 2 and
  no run directory; a checkpoint identical to the original is a warning and the audit runs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from unpact.checkpoints import MAX_RELATIVE_DISTANCE, name_checkpoints, read_header
from unpact.cli import main
from unpact.errors import InputError
from unpact.models import resolve_model_spec
from unpact.stages import stage_seed
from unpact.testing import one_line_exit_2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import compare_results  # noqa: E402

#: the smallest study that still runs every stage after unlearning except the attacks and nulls (the
#: positive control's fine-tune at 2 steps: its default 30 are most of a small study's time)
SMALL = [
    "--max-items",
    "4",
    "--attribution",
    "loo",
    "--seed",
    "0",
    "--set",
    "attacks.names=[]",
    "--set",
    "presence.null_draws=0",
    "--set",
    'emphasis.templates=["focus"]',
    "--set",
    "emphasis.factors=[4]",
    "--set",
    "presence.hide_steps=2",
]
ORIGINAL = "embedded:gpt2"
#: ga's steps, in ``unpact unlearn`` and in ``unpact run`` alike (a checkpoint 2 steps from the original
#: is unlearned enough for every check here: not identical, well under the distance limit)
GA_STEPS = 2


def _dir(spec: str) -> Path:
    return Path(resolve_model_spec(spec)[1])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A checkpoint made by ``unpact unlearn`` with the seed ``unpact run`` gives the ga stage, and broken copies."""
    root = tmp_path_factory.mktemp("audit")
    ga = root / "ga"  # named as the method, so its stages have the run's stage names and seeds
    rc = main(
        [
            "unlearn",
            ORIGINAL,
            "--method",
            "ga",
            "--forget",
            "forget10",
            "--retain",
            "retain90",
            "--out",
            str(ga),
            "--seed",
            str(stage_seed(0, "ga/unlearn")),
            "--no-eval",
            "--set",
            f"steps={GA_STEPS}",
        ]
    )
    assert rc == 0
    (ga / "unlearn.json").unlink()  # not a checkpoint file

    def copy(name: str, src: Path = ga) -> Path:
        d = root / name
        shutil.copytree(src, d)
        return d

    out = {"root": root, "ga": ga}
    t = copy("truncated")
    data = (t / "model.safetensors").read_bytes()
    (t / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = t
    c = copy("corrupt")
    (c / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + data[24:])
    out["corrupt"] = c
    n = copy("nan")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(n / "model.safetensors"))
    key = sorted(sd)[0]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, str(n / "model.safetensors"), metadata={"format": "pt"})
    out["nan"] = n
    tok = copy("tokenizer")
    tj = json.loads((tok / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = sorted(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens swap ids: the same size, another tokenizer
    (tok / "tokenizer.json").write_text(json.dumps(tj))
    out["tokenizer"] = tok
    out["identical"] = copy("copy-of-original", _dir(ORIGINAL))
    return out


def test_audit_of_an_unlearn_checkpoint_equals_the_run(ckpts, tmp_path, capsys):
    run_dir, audit_dir = tmp_path / "run", tmp_path / "audit"
    steps = f'method_config={{"ga": {{"steps": {GA_STEPS}}}}}'
    assert (
        main(
            [
                "run",
                "--methods",
                "ga",
                "--out",
                str(run_dir),
                "--set",
                "trajectory.enabled=false",
                "--set",
                steps,
                *SMALL,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "audit",
                "--original",
                ORIGINAL,
                "--unlearned",
                str(ckpts["ga"]),
                "--reference",
                "embedded:gpt2-retain",
                "--out",
                str(audit_dir),
                *SMALL,
            ]
        )
        == 0
    )
    run = json.loads((run_dir / "results.json").read_text())
    audit = json.loads((audit_dir / "results.json").read_text())
    # the settings differ by construction (methods vs checkpoints, out); every number must not
    for r in (run, audit):
        for k in ("config", "unpact_version"):
            r.pop(k)
    out = {"numbers": 0, "diff": [], "only_before": set(), "only_after": set(), "rtol": 0.0}
    compare_results.walk(run, audit, "", out)
    assert out["numbers"] > 1000
    # where the checkpoint came from necessarily differs; nothing else
    assert {p for p, _, _ in out["diff"]} == {"methods.ga.lineage.source", "methods.ga.lineage.spec"}, out["diff"]
    assert out["only_before"] == {"methods.ga.unlearn"} and not out["only_after"]
    assert 0 < audit["methods"]["ga"]["lineage"]["relative_distance"] < MAX_RELATIVE_DISTANCE
    assert (audit_dir / "report.html").is_file() and not (audit_dir / "models").exists()
    assert "trajectory" not in audit["methods"]["ga"]
    # the audit's stage files are the run's (atomic, resumable): a second audit keeps them all
    capsys.readouterr()
    assert (
        main(
            [
                "audit",
                "--original",
                ORIGINAL,
                "--unlearned",
                str(ckpts["ga"]),
                "--reference",
                "embedded:gpt2-retain",
                "--out",
                str(audit_dir),
                *SMALL,
            ]
        )
        == 0
    )
    assert "  done  " not in capsys.readouterr().err


@pytest.mark.parametrize(
    "which, needle",
    [
        ("tokenizer", "has a different tokenizer from the original"),
        ("embedded:llama", "is a 'llama' model but the original 'embedded:gpt2' is a 'gpt2' model"),
        ("embedded:gpt2-retain", "does not look unlearned from the original"),
        ("truncated", "is truncated"),
        ("corrupt", "is corrupt: its safetensors header is not valid JSON"),
        ("nan", "NaN or infinite weights"),
    ],
)
def test_bad_checkpoint_one_line_exit_2_no_run_dir(ckpts, tmp_path, capsys, which, needle):
    out = tmp_path / "audit"
    spec = which if which.startswith("embedded:") else str(ckpts[which])
    rc = main(["audit", "--original", ORIGINAL, "--unlearned", str(ckpts["ga"]), spec, "--out", str(out), *SMALL])
    one_line_exit_2(rc, capsys, needle)
    assert not out.exists()


def test_bad_shapesone_line_exit_2(ckpts, tmp_path, capsys):
    from unpact.testing import make_tiny_checkpoint

    tiny = make_tiny_checkpoint("gpt2", tmp_path / "tiny")  # gpt2 too, other sizes
    capsys.readouterr()
    out = tmp_path / "audit"
    rc = main(["audit", "--original", ORIGINAL, "--unlearned", str(tiny), "--out", str(out), *SMALL])
    one_line_exit_2(rc, capsys, "have different architectures")
    assert not out.exists()


def test_trajectory_is_a_run_feature(ckpts, tmp_path, capsys):
    out = tmp_path / "audit"
    rc = main(
        [
            "audit",
            "--original",
            ORIGINAL,
            "--unlearned",
            str(ckpts["ga"]),
            "--out",
            str(out),
            "--set",
            "trajectory.enabled=true",
            *SMALL,
        ]
    )
    one_line_exit_2(rc, capsys, "`unpact run` feature")
    assert not out.exists()


def test_the_retain_twin_is_audited_when_the_distance_check_is_off(ckpts, tmp_path):
    from unpact.checkpoints import check_audit_inputs

    lin = check_audit_inputs(ORIGINAL, {"twin": "embedded:gpt2-retain"}, None, None)
    assert lin["twin"]["relative_distance"] > MAX_RELATIVE_DISTANCE * 1.5 and not lin["twin"]["identical"]


def test_identical_checkpoint_is_a_warning_and_the_audit_runs(ckpts, tmp_path, capsys):
    out = tmp_path / "audit"
    rc = main(
        [
            "audit",
            "--original",
            ORIGINAL,
            "--unlearned",
            str(ckpts["identical"]),
            "--out",
            str(out),
            *SMALL,
            "--set",
            "presence.positive_control=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    warns = [ln for ln in err.splitlines() if ln.startswith("unpact: warning:")]
    assert len(warns) == 1 and "exactly the original's weights" in warns[0]
    res = json.loads((out / "results.json").read_text())
    ck = res["methods"]["copy-of-original"]["lineage"]
    assert ck["identical"] is True and ck["relative_distance"] == 0.0 and ck["warnings"]
    assert res["summary"][1]["forget_rouge"] == res["summary"][0]["forget_rouge"]


def test_read_header_and_names(ckpts):
    assert "transformer.wte.weight" in read_header(ckpts["ga"] / "model.safetensors")
    with pytest.raises(InputError, match="truncated"):
        read_header(ckpts["truncated"] / "model.safetensors")
    assert name_checkpoints(["x/ga", "y/ga/", "embedded:gpt2-retain"]) == {
        "ga": "x/ga",
        "ga-2": "y/ga/",
        "gpt2-retain": "embedded:gpt2-retain",
    }
    assert torch.isfinite(torch.tensor(MAX_RELATIVE_DISTANCE))


def test_grid_cells_with_given_checkpoints(ckpts, tmp_path):
    from unpact.grid import expand, grid_from_dict

    grid = grid_from_dict(
        {
            "models": [{"name": "g", "model": ORIGINAL, "unlearned": [str(ckpts["ga"]), "embedded:gpt2-retain"]}],
            "methods": ["npo"],
            "out": str(tmp_path / "grid"),
        }
    )
    cells = {c.name: c for c in expand(grid)}
    assert set(cells) == {"g__embedded-tofu__npo", "g__embedded-tofu__ga", "g__embedded-tofu__gpt2-retain"}
    ga = cells["g__embedded-tofu__ga"].config
    assert ga.methods == [] and ga.checkpoints == {"ga": str(ckpts["ga"])} and not ga.trajectory.enabled
    assert cells["g__embedded-tofu__npo"].config.methods == ["npo"]
