"""Unlearning methods against their reference repositories (issue 13): presets, SimNPO's
margin inside beta, RMU's output-projection-only update."""

from __future__ import annotations

import math

import pytest
import torch

from unpact import load_model
from unpact.data import QAItem
from unpact.errors import ConfigError
from unpact.models import hf_state_dict
from unpact.unlearning import get_method, unlearn
from unpact.unlearning.base import resolve_preset
from unpact.unlearning.losses import simnpo_loss

FORGET = [
    QAItem("Where was the author Ana Lind born?", "Lima"),
    QAItem("What genre does Bo Reyes write?", "crime fiction"),
]
RETAIN = [QAItem("What is 2 + 3?", "5"), QAItem("What is the capital of Peru?", "Lima")]


def test_simnpo_margin_sits_inside_beta_as_in_the_simnpo_repository():
    # Unlearn-Simple: forget_loss = NLL/|y| - gamma; loss = -(2/beta) logsigmoid(beta * forget_loss)
    mean_lp, beta, gamma = torch.tensor([-1.5, -0.5]), 2.5, 0.4
    want = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * (-lp - gamma)))) for lp in mean_lp.tolist()) / 2
    assert float(simnpo_loss(mean_lp, beta, gamma)) == pytest.approx(want, rel=1e-6)


def test_presets_pick_reference_defaults_for_models_that_are_not_embedded(tiny_dirs):
    tiny = load_model(tiny_dirs["gpt2"])
    emb = load_model("embedded:gpt2")
    rmu = get_method("rmu").config_class
    assert resolve_preset(rmu(), emb).preset == "embedded" and resolve_preset(rmu(), emb).param_set == "mlp"
    ref = resolve_preset(rmu(), tiny)
    assert (ref.preset, ref.param_set, ref.steering_coef, ref.alpha, ref.lr) == (
        "reference",
        "down_proj",
        20.0,
        100.0,
        5e-5,
    )
    assert resolve_preset(rmu(alpha=7.0), tiny).alpha == 7.0  # an explicit option wins
    assert resolve_preset(rmu(preset="reference"), emb).param_set == "down_proj"
    assert resolve_preset(get_method("ga_gdr").config_class(), tiny).retain_weight == 1.0
    assert resolve_preset(get_method("simnpo").config_class(), tiny).forget_weight == 0.1375
    with pytest.raises(ConfigError):
        resolve_preset(rmu(preset="bogus"), tiny)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_rmu_reference_trains_only_the_mlp_output_projection(tiny_dirs, arch):
    model = load_model(tiny_dirs[arch])
    before = {k: v.detach().clone() for k, v in hf_state_dict(model).items()}
    res = unlearn(model, "rmu", FORGET, RETAIN, {"steps": 2, "batch_size": 2, "lr": 1e-2, "layer": 1})
    assert res.config.param_set == "down_proj"
    after = hf_state_dict(res.model)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed, "nothing was trained"
    out_name = "c_proj" if arch == "gpt2" else "down_proj"
    assert all("mlp" in k and out_name in k and k.endswith("weight") for k in changed), changed


def test_an_explicit_override_equal_to_the_embedded_default_still_wins(tiny_dirs):
    from unpact.unlearning.base import make_config

    tiny = load_model(tiny_dirs["gpt2"])
    cls = get_method("npo_gdr").config_class
    assert cls().lr == 1e-3
    assert resolve_preset(make_config(cls, {"lr": 1e-3}), tiny).lr == 1e-3  # set: kept
    assert resolve_preset(make_config(cls, {}), tiny).lr == 1e-5  # not set: the reference's
