"""The typed seams: every RunConfig key reachable from the command line and the config file, both
rejecting unknown names (attribution method names included); one KeyTokens rule behind tracking
and the report's keyword marks; results.json versioned and read back; one place per default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from unpact.attribution import Attribution, KeyTokensConfig, compare, key_tokens
from unpact.cli import RUN_FLAGS, _run_config, build_parser
from unpact.config import RunConfig, config_from_dict, config_keys, read_config_file
from unpact.errors import ConfigError, DataError

#: A valid value, different from the default, for every key of RunConfig. The equality test below
#: fails when a key is added without one, so a new option is tested from both sides at once.
SAMPLES = {
    "model": "some/checkpoint",
    "reference_model": None,
    "benchmark": "tofu",
    "benchmark_path": "data/tofu",
    "forget_split": "forget05",
    "retain_split": "retain95",
    "holdout_split": None,
    "general": None,
    "general_split": "general",
    "general_path": "data/general",
    "methods": ["ga_gdr", "rmu"],
    "method_config": {"ga_gdr": {"steps": 5}},
    "max_items": 7,
    "max_new_tokens": 9,
    "prompt_format": "chat",
    "system_prompt": "You are a helpful assistant.",
    "chat_template_args": {"date_string": "10 Apr 2025"},
    "max_batch_tokens": 4096,
    "gradient_checkpointing": True,
    "attribution.methods": ["loo", "heads"],
    "attribution.subset": 2,
    "attribution.ig_steps": 16,
    "attribution.ig_max_passes": 64,
    "attribution.keytokens.alpha": 0.25,
    "attribution.keytokens.beta": 1,
    "attribution.keytokens.normalize": "max",
    "emphasis.templates": ["quote"],
    "emphasis.max_control_items": 3,
    "emphasis.factors": [1.0, 3.0],
    "emphasis.layer_sets": ["late", "0,1"],
    "emphasis.kinds": ["value", "residual"],
    "emphasis.threshold": 0.7,
    "emphasis.collapse_margin": 0.2,
    "attacks.names": ["quantization"],
    "attacks.options": {"quantization": {"bits": [4]}},
    "out": "elsewhere",
    "device": "cuda:0",
    "dtype": "bfloat16",
    "seed": 3,
    "min_forget_accuracy": 0.25,
    "presence.probes": ["choice"],
    "presence.format_source": "cloze",
    "presence.positive_control": False,
    "presence.hide_steps": 10,
    "presence.hide_lr": 1e-4,
    "presence.keep_retain_items": 8,
    "presence.null_draws": 39,
    "presence.null_max_scale": 2.0,
    "presence.min_specificity": 0.8,
    "presence.unknown_split": "unknown",
    "presence.negative_items": 48,
    "trajectory.enabled": False,
    "trajectory.controlled": False,
    "trajectory.lr_factor": 0.5,
    "trajectory.max_steps_factor": 2.0,
    "trajectory.max_steps": 12,
    "trajectory.warmup_steps": 0,
    "trajectory.marks": [3, 6],
    "trajectory.targets": [0.5],
    "trajectory.monitor_items": 4,
    "trajectory.check_every": 1,
    "trajectory.stop_when_done": False,
    "trajectory.templates": ["focus"],
    "trajectory.activations": [["value", 3.0, "late"]],
    "checkpoints": {"mine": "runs/mine"},
    "audit.max_relative_distance": 0.25,
}
#: keys that only make sense with another one set
NEEDS = {
    "system_prompt": {"prompt_format": "chat"},
    "method_config": {"methods": ["ga_gdr"]},
    "attacks.options": {"attacks.names": ["quantization"]},
}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _nested(pairs: dict) -> dict:
    out: dict = {}
    for key, value in pairs.items():
        *path, last = key.split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[last] = value
    return out


def _from_cli(pairs: dict) -> RunConfig:
    argv = ["run"]
    for key, value in pairs.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return _run_config(build_parser().parse_args(argv))


def _from_file(pairs: dict, tmp_path) -> RunConfig:
    p = tmp_path / "study.json"
    p.write_text(json.dumps(_nested(pairs)))
    return config_from_dict(read_config_file(p))


def test_every_key_has_a_sample():
    assert set(SAMPLES) == set(config_keys())


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_every_config_key_is_reachable_from_the_cli_and_the_file(key, tmp_path):
    default = _get(RunConfig(), key)
    assert SAMPLES[key] != default, f"the sample of {key} must differ from its default"
    pairs = {**NEEDS.get(key, {}), key: SAMPLES[key]}
    for cfg in (_from_cli(pairs), _from_file(pairs, tmp_path)):
        assert _get(cfg, key) == SAMPLES[key], key


def test_the_named_run_flags_set_config_keys():
    assert set(RUN_FLAGS.values()) <= set(config_keys())
    cfg = _run_config(
        build_parser().parse_args(
            ["run", "--attribution", "loo,ig", "--factors", "1,3", "--max-items", "5", "--general", "none"]
        )
    )
    assert cfg.attribution.methods == ["loo", "integrated_gradients"] and cfg.emphasis.factors == [1.0, 3.0]
    assert cfg.max_items == 5 and cfg.general is None


@pytest.mark.parametrize(
    "pairs, needle",
    [
        ({"learning_rate": 3}, "unknown config key 'learning_rate'"),
        ({"emphasis.factorz": [2]}, "unknown config key 'emphasis.factorz'"),
        ({"attribution.keytokens.gamma": 1}, "unknown config key 'attribution.keytokens.gamma'"),
        ({"attribution.methods": ["ig", "nonsense"]}, "unknown attribution method 'nonsense'"),
        ({"attribution.methods": ["integrated_gradient"]}, "unknown attribution method 'integrated_gradient'"),
        ({"methods": ["ga_gdr", "forgetall"]}, "unknown unlearning method 'forgetall'"),
        ({"emphasis.templates": ["shout"]}, "shout"),
        ({"emphasis.kinds": ["laser"]}, "unknown activation emphasis kind 'laser'; known: attention, value, residual"),
        ({"emphasis.layer_sets": ["deep"]}, "unknown layer set 'deep'"),
        ({"attacks.names": ["bribery"]}, "bribery"),
        ({"attribution.keytokens.normalize": "median"}, "median"),
        ({"attribution.keytokens.beta": "three"}, "config key 'attribution.keytokens.beta' must be an integer"),
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"method_config": {"ga_gdr": {"stepz": 3}}}, "stepz"),
        ({"trajectory.templates": ["shout"]}, "shout"),
        ({"trajectory.activations": [["laser", 2.0, "all"]]}, "unknown activation emphasis kind 'laser'"),
        ({"trajectory.activations": [["attention", "all"]]}, "trajectory.activations entries are"),
        ({"trajectory.targets": [1.5]}, "trajectory targets are forget accuracies"),
    ],
)
def test_unknown_names_are_rejected_by_the_cli_and_the_file(pairs, needle, tmp_path):
    for make in (_from_cli, lambda p: _from_file(p, tmp_path)):
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
            make(pairs)


def test_attribution_aliases_resolve_and_never_turn_a_method_off(tmp_path):
    for cfg in (
        _from_cli({"attribution.methods": ["loo", "ig", "head_flow"]}),
        _from_file({"attribution.methods": ["loo", "ig", "head_flow"]}, tmp_path),
    ):
        assert cfg.attribution.methods == ["loo", "integrated_gradients", "heads"]
    base = RunConfig()
    config_from_dict({"attribution": {"methods": ["ig"]}}, base=base)
    assert base.attribution.methods == ["loo", "integrated_gradients", "heads"]  # the base is never changed


def test_keytokens_are_set_in_one_place_and_reach_recovery():
    cfg = config_from_dict({"attribution": {"keytokens": {"alpha": 0.3, "beta": 1}}})
    assert cfg.recovery_config().keytokens == KeyTokensConfig(alpha=0.3, beta=1)
    assert not any("keytokens" in k for k in config_keys() if not k.startswith("attribution.keytokens."))


# ------------------------------------------------------------------ keyword marks


def _attr(scores, group="forget"):
    n = len(scores)
    return Attribution(
        item_id="q",
        tokens=[f"t{i}" for i in range(n)],
        token_ids=list(range(n)),
        scores=scores,
        lp=-1.0,
        method="loo",
        special=[True] + [False] * (n - 1),
        group=group,
        prompt="p",
        answer="a",
    )


def test_report_keyword_marks_equal_the_tracked_keytokens_under_non_default_alpha_beta():
    from unpact.results import examples

    # shares 0.5, 0.3, 0.15, 0.05: alpha 0.1 keeps three, alpha 0.2 two
    before = _attr([0.0, 0.5, 0.3, 0.15, 0.05])
    after = _attr([0.0, 0.1, 0.1, 0.1, 0.1])
    kt = {"alpha": 0.2, "beta": 2, "normalize": "share"}
    tracked = compare([before], [after], **kt).to_dict()["items"][0]["key_tokens"]
    methods = {"ga": {"attribution": {"loo": {"forget": [after.to_dict()]}}, "recovery": {}}}
    marks = examples({"loo": {"forget": [before.to_dict()]}}, methods, kt)[0]["views"]
    for view in marks[:2]:  # the original and the unlearned model: the original's KeyTokens
        assert [i for i, k in enumerate(view["key"]) if k] == tracked == [1, 2]
    assert key_tokens(before) != tracked  # the default rule marks other tokens: the setting matters


def test_results_are_versioned_and_read_back(tmp_path):
    from unpact.results import SCHEMA_VERSION, StudyResults, load_results

    r = StudyResults(config={"model": "m"}, summary=[{"method": "original"}], unpact_version="0")
    (tmp_path / "results.json").write_text(json.dumps(r.to_dict()))
    back = load_results(tmp_path)
    assert back == r and back.to_dict()["schema_version"] == SCHEMA_VERSION
    (tmp_path / "results.json").write_text(json.dumps({**r.to_dict(), "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(DataError, match="newer than this unpact"):
        load_results(tmp_path)
    old = r.to_dict()
    del old["schema_version"]  # written before the version existed: read as 0
    assert StudyResults.from_dict(old).schema_version == 0


# ------------------------------------------------------------------ one place per default


def test_emphasis_defaults_live_in_recovery_config():
    from unpact.cli import recover_config
    from unpact.config import EmphasisSettings
    from unpact.emphasis import RecoveryConfig

    r, e = RecoveryConfig(), EmphasisSettings()
    assert (e.threshold, e.collapse_margin, e.max_control_items) == (
        r.threshold,
        r.collapse_margin,
        r.max_control_items,
    )
    assert tuple(e.templates) == r.templates and tuple(e.kinds) == r.kinds and tuple(e.factors) == r.factors
    assert RunConfig().recovery_config() == dataclasses.replace(r, max_batch_tokens=RunConfig().max_batch_tokens)
    args = build_parser().parse_args(["recover", "--original", "a", "--unlearned", "b"])
    assert recover_config(args) == r


def test_no_import_cycle_between_the_data_loaders_and_the_embedded_world():
    import subprocess
    import sys

    code = (
        "import sys\nimport unpact.data.loaders\n"
        "assert 'unpact.embedded' not in sys.modules, 'the data loaders imported the embedded world'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_stages_never_import_the_pipeline():
    """The pipeline runs the stages; the stages see the study through ``stages.StudyView`` (no cycle)."""
    import ast

    import unpact.stages

    tree = ast.parse(Path(unpact.stages.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(n == "unpact.pipeline" or n.startswith("unpact.pipeline.") for n in names), names


def test_a_run_directory_resumes_when_its_config_lacks_a_setting_added_since(tmp_path):
    """A setting added after a run was written counts as its default (which does what the code
    did before), at any depth; a setting that differs still stops the resume and is named."""
    from unpact.pipeline import check_resumable

    cfg = RunConfig(out=str(tmp_path))
    written = json.loads(json.dumps(cfg.to_dict()))
    del written["dtype"], written["presence"]["negative_items"], written["attribution"]["keytokens"]["beta"]
    (tmp_path / "config.json").write_text(json.dumps(written))
    check_resumable(cfg)
    with pytest.raises(ConfigError, match=r"different settings \(max_items, presence\)"):
        check_resumable(
            dataclasses.replace(cfg, max_items=3, presence=dataclasses.replace(cfg.presence, negative_items=9))
        )
