"""docs/architecture.md's "Adding things", tried: a toy unlearning method, split metric, recovery
attack and probe, each added the documented way (one class or function, one registration), then
accepted where the guide says: its registry's ``get_*``/``make_*``, the run config's validation,
the defaults built from the registries, the command line's help, and a run on a real embedded
model (embedded:gpt2, nothing mocked).

Each component is registered inside its registry's ``scoped()`` block, so the built-in
registries are as they were for the other tests.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from unpact.attacks import ATTACKS, Attack, Attacked, get_attack, make_attack, register_attack, run_attack
from unpact.cli import main
from unpact.config import RunConfig, config_from_dict
from unpact.data import load_benchmark
from unpact.errors import ConfigError
from unpact.metrics import METRICS, evaluate, get_metric, register_metric
from unpact.models import load_model
from unpact.presence import PresenceSettings, probe_model
from unpact.probes import PROBES, Probe, ProbeResult, probe, register_probe
from unpact.scoring import answer_logprobs
from unpact.unlearning import METHODS, UnlearnConfig, UnlearningMethod, get_method, make_method, register, unlearn
from unpact.unlearning.base import answer_logprobs_of
from unpact.unlearning.losses import nll

# ------------------------------------------------------------ the four components, as the guide writes them


@dataclass
class ToyAscentConfig(UnlearnConfig):
    """Every hyperparameter with its default."""

    lr: float = 1e-5
    steps: int = 2


class ToyAscent(UnlearningMethod):
    """Gradient ascent on the forget answers (a toy: the guide's one class)."""

    name = "toy_ascent"
    config_class = ToyAscentConfig
    description = "a toy gradient ascent"

    def loss(self, model, batch):
        _, lp = answer_logprobs_of(model, batch.forget)
        forget_nll = nll(lp, batch.forget.target_mask)
        return -forget_nll, {"forget_nll": forget_nll}


def n_question_words(inputs, out: dict[str, Any]) -> dict[str, Any]:
    """Mean number of words per question of the split's QA items (a toy split metric)."""
    return {"question_words": sum(len(it.question.split()) for it in inputs.qa) / len(inputs.qa)}


@dataclass
class ShoutConfig:
    """The toy attack's settings."""

    prefixes: tuple[str, ...] = ("Answer now.",)


class Shout(Attack):
    """Put a prefix before each forget question (a toy prompt attack)."""

    name = "shout"
    config_class = ShoutConfig
    description = "a prefix before the question"

    def settings(self) -> list[dict[str, Any]]:
        return [{"name": f"prefix{i}", "prefix": p} for i, p in enumerate(self.config.prefixes)]

    def apply(self, model, items, setting, *, fmt, pool, seed: int = 0) -> Attacked:
        return Attacked(
            model, [fmt.prompt(f"{setting['prefix']} {it.question}") for it in items], list(range(len(items)))
        )


@dataclass
class AnswerLogprobProbe(Probe):
    """Present when the answer's mean log-prob is above ``floor`` (a toy probe)."""

    floor: float = -3.0
    name: ClassVar[str] = "answer_logprob"

    @classmethod
    def study_settings(cls, study) -> dict[str, Any] | None:
        return {"floor": -2.0}

    def run(self, model, items, fmt) -> ProbeResult:
        lps = answer_logprobs(
            model, [fmt.prompt(it.question) for it in items], [fmt.answer(it.answer) for it in items]
        ).tolist()
        return ProbeResult(
            self.name,
            [str(it.id) for it in items],
            [lp > self.floor for lp in lps],
            lps,
            settings={"floor": self.floor},
        )


@pytest.fixture
def registered():
    """The four toys, each registered with its one registration, for one test."""
    with ExitStack() as stack:
        for reg in (METHODS, METRICS, ATTACKS, PROBES):
            stack.enter_context(reg.scoped())
        register(ToyAscent)
        register_metric("question_words", lambda x: bool(x.qa))(n_question_words)
        register_attack(Shout)
        register_probe(AnswerLogprobProbe)
        yield


@pytest.fixture(scope="module")
def gpt2():
    return load_model("embedded:gpt2")


@pytest.fixture(scope="module")
def items():
    forget = load_benchmark("embedded:tofu", "forget10")
    retain = load_benchmark("embedded:tofu", "retain90")
    return forget[:3], retain[:3]


# ------------------------------------------------------------------------------------- the tries


def test_the_registries_and_get_functions_accept_them(registered):
    assert get_method("toy_ascent") is ToyAscent and make_method("toy-ascent", {"steps": 1}).config.steps == 1
    assert get_metric("question_words").compute is n_question_words
    assert (
        get_attack("shout") is Shout and make_attack("shout", {"prefixes": ("Now.",)}).settings()[0]["prefix"] == "Now."
    )
    assert PROBES.get("answer_logprob") is AnswerLogprobProbe
    for reg, name in (
        (METHODS, "toy_ascent"),
        (METRICS, "question_words"),
        (ATTACKS, "shout"),
        (PROBES, "answer_logprob"),
    ):
        assert name in reg and name in sorted(reg)


def test_the_run_config_accepts_them_and_the_defaults_take_the_attack(registered):
    cfg = config_from_dict(
        {
            "methods": ["toy_ascent", "ga_gdr"],
            "method_config": {"toy_ascent": {"steps": 1}},
            "attacks": {"names": ["shout"], "options": {"shout": {"prefixes": ["Now."]}}},
            "presence": {"probes": ["answer_logprob", "choice"]},
        }
    )
    assert cfg.methods == ["toy_ascent", "ga_gdr"] and cfg.attacks.names == ["shout"]
    assert cfg.presence.probe_settings("answer_logprob") == {"floor": -2.0}
    assert "shout" in RunConfig().attacks.names  # the default attack list is every registered attack
    with pytest.raises(ConfigError, match="unknown option"):
        config_from_dict({"methods": ["toy_ascent"], "method_config": {"toy_ascent": {"beta": 1}}})


def test_unregistered_they_are_refused():
    for data, what in (
        ({"methods": ["toy_ascent"]}, "unlearning method"),
        ({"attacks": {"names": ["shout"]}}, "attack"),
        ({"presence": {"probes": ["answer_logprob"]}}, "probe"),
    ):
        with pytest.raises(ConfigError, match=f"unknown {what} "):
            config_from_dict(data)


@pytest.mark.parametrize(
    "command, names",
    [
        (["unlearn", "--help"], ["toy_ascent"]),
        (["run", "--help"], ["toy_ascent", "shout", "answer_logprob"]),
        (["attack", "--help"], ["shout"]),
    ],
)
def test_the_command_line_help_lists_them(registered, capsys, command, names):
    with pytest.raises(SystemExit):
        main(command)
    text = " ".join(capsys.readouterr().out.split())
    for name in names:
        assert name in text


def test_they_run_on_an_embedded_model(registered, gpt2, items):
    forget, retain = items
    res = unlearn(gpt2, "toy_ascent", forget, retain, seed=0)
    assert res.method == "toy_ascent" and len(res.losses) == 2
    scores = evaluate(gpt2, forget, metrics=["question_words", "rouge_l_recall"])
    assert scores["question_words"] == pytest.approx(sum(len(it.question.split()) for it in forget) / len(forget))
    assert "question_words" in evaluate(gpt2, forget)  # every registered metric that applies, by default
    table = run_attack("shout", res.model, forget, original=gpt2)
    assert set(table["settings"]) == {"prefix0"}
    found = probe(gpt2, list(forget), "answer_logprob")
    assert len(found.present) == len(forget) and found.settings == {"floor": -3.0}
    study = probe_model(gpt2, list(forget), PresenceSettings(probes=["answer_logprob"]))
    assert study["answer_logprob"]["settings"] == {"floor": -2.0}  # the probe's own study settings


class ToyShrink(ToyAscent):
    """A toy method that edits its weights after training and does not say how its checkpoints look."""

    name = "toy_shrink"

    def finish(self, run) -> None:
        pass


def test_a_method_that_edits_after_training_says_how_its_checkpoints_look(gpt2):
    assert ToyAscent(ToyAscentConfig()).checkpoint_model(gpt2, gpt2) is gpt2  # the trained model itself
    with pytest.raises(ConfigError, match="toy_shrink.*checkpoint_model"):
        ToyShrink(ToyAscentConfig()).checkpoint_model(gpt2, gpt2)
    tv = make_method("task_vector", {"alpha": 1.0})
    assert tv.checkpoint_model(gpt2, gpt2) is not gpt2  # the negation, on a copy
