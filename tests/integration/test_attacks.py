"""Recovery attacks (unpact.attacks): each attack does what it says, never touches the given model,
never shows or trains the asked item, and the route table counts only recovery beyond both controls."""

from __future__ import annotations

import json

import pytest
import torch

from unpact import load_model
from unpact.attacks import (
    ATTACKS,
    controlled_row,
    dequantize,
    make_attack,
    quantize_rtn,
    run_attack,
    split_forget,
)
from unpact.attacks.base import RoleRun
from unpact.attacks.quantization import quantizable_layers
from unpact.data import QAItem
from unpact.data.formatting import PLAIN
from unpact.emphasis import RecoveryConfig
from unpact.errors import ConfigError, InputError
from unpact.models import plain_hf_model
from unpact.scoring import forward_logits, tokenize

QS = [
    QAItem(
        "Where was the author Ana Lind born?",
        "Lima",
        paraphrased_question="In which city was Ana Lind born?",
        id="f0",
        meta={"author": "Ana Lind", "attribute": "birthplace"},
    ),
    QAItem(
        "What genre does Bo Reyes write?",
        "crime fiction",
        paraphrased_question="Which genre is Bo Reyes known for?",
        id="f1",
        meta={"author": "Bo Reyes", "attribute": "genre"},
    ),
    QAItem("What genre does Ana Lind write?", "poetry", id="f2", meta={"author": "Ana Lind", "attribute": "genre"}),
    QAItem(
        "Where was the author Bo Reyes born?",
        "Paris",
        paraphrased_question="Bo Reyes was born where?",
        id="f3",
        meta={"author": "Bo Reyes", "attribute": "birthplace"},
    ),
]
RETAIN = [
    QAItem("Where was the author Cy Moor born?", "Oslo", id="r0", meta={"attribute": "birthplace"}),
    QAItem("What genre does Cy Moor write?", "drama", id="r1", meta={"attribute": "genre"}),
    QAItem("What is the capital of France?", "Paris", id="r2", meta={"attribute": "capital"}),
]
FAST = RecoveryConfig(max_new_tokens=3, threshold=0.5)


def _fingerprint(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(model, before) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


# ------------------------------------------------------------------ quantization


def test_rtn_codes_and_scales_are_what_the_quantiser_claims():
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    for bits in (8, 4, 2):
        codes, scales = quantize_rtn(w, bits)
        qmax = 2 ** (bits - 1) - 1
        assert torch.equal(codes, codes.round()) and codes.abs().max() <= qmax
        assert scales.shape == (6, 1)
        # the largest weight of each channel lands exactly on the top code
        assert torch.allclose(codes.abs().amax(1), torch.full((6,), float(qmax)))
        deq = dequantize(codes, scales)
        assert (deq - w).abs().max() <= scales.max() / 2 + 1e-6  # round to nearest: at most half a step
        for row in deq:
            assert len(torch.unique(row)) <= 2 * qmax + 1
    codes, scales = quantize_rtn(w, 4, group_size=4)
    assert scales.shape == (6, 4)
    assert torch.allclose(dequantize(codes, scales).reshape(6, 4, 4).abs().amax(-1), w.reshape(6, 4, 4).abs().amax(-1))
    with pytest.raises(ConfigError):
        quantize_rtn(w, 4, group_size=5)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_quantized_model_holds_the_dequantised_weights(tiny_dirs, arch):
    original = load_model(tiny_dirs[arch])
    before = _fingerprint(original)
    att = make_attack("quantization", {"bits": (8, 4)})
    ids = torch.tensor([[0] + tokenize(original.tokenizer, "Question: Where was Ana Lind born?\nAnswer: Lima")])
    with torch.no_grad():
        ref = forward_logits(original, ids)
    errors = {}
    for setting in att.settings():
        a = att.apply(original, QS, setting, fmt=PLAIN, pool={})
        q = a.model
        assert q is not original and a.info["layers"] > 0
        for (_n, mod, transposed), (_n0, mod0, _t) in zip(quantizable_layers(q), quantizable_layers(original)):
            rows0 = mod0.weight.detach().t() if transposed else mod0.weight.detach()
            rows = mod.weight.detach().t() if transposed else mod.weight.detach()
            codes, scales = quantize_rtn(rows0, setting["bits"])
            assert torch.allclose(rows, dequantize(codes, scales), atol=1e-7)
        with torch.no_grad():
            logits = forward_logits(q, ids)
            # the bridge computes with what the plain HF model holds (split q/k/v copies quantized alike)
            assert (forward_logits(plain_hf_model(q), ids) - logits).abs().max() < 1e-4
        errors[setting["bits"]] = float((logits - ref).abs().max())
    assert 0 < errors[8] < errors[4], errors
    assert _same(original, before), "quantization changed the given model"


# ------------------------------------------------------------------ relearning


def test_split_forget_is_disjoint_and_groups_stay_whole():
    train, asked = split_forget(QS, 0.5, seed=0)
    assert train and asked and not set(train) & set(asked) and sorted(train + asked) == list(range(len(QS)))
    train, asked = split_forget(QS, 0.5, seed=1, group_key="author")
    authors = lambda idx: {QS[i].meta["author"] for i in idx}  # noqa: E731
    assert not authors(train) & authors(asked)
    with pytest.raises(InputError):
        split_forget(QS[:1], 0.5, seed=0)
    with pytest.raises(InputError):
        split_forget(RETAIN, 0.5, seed=0, group_key="author")


def test_relearning_never_trains_on_an_item_it_asks(tiny_dirs):
    model = load_model(tiny_dirs["gpt2"])
    before = _fingerprint(model)
    att = make_attack("relearning", {"steps": (2,), "lrs": (1e-3,), "batch_size": 2})
    a = att.apply(model, QS, att.settings()[0], fmt=PLAIN, pool={"retain": RETAIN}, seed=0)
    asked_ids = {QS[i].id for i in a.asked}
    assert a.info["trained_ids"] and not asked_ids & set(a.info["trained_ids"])
    assert len(a.prompts) == len(a.asked) and all(QS[i].question in p for i, p in zip(a.asked, a.prompts))
    assert not _same(a.model, before), "relearning must change the copy"
    assert _same(model, before), "relearning changed the given model"
    # from retain data: every forget item is asked, no forget item is trained
    att = make_attack("relearning", {"source": "retain", "steps": (1,), "lrs": (1e-3,), "batch_size": 2})
    a = att.apply(model, QS, att.settings()[0], fmt=PLAIN, pool={"retain": RETAIN + [QS[0]]}, seed=0)
    assert a.asked == list(range(len(QS))) and "f0" not in a.info["trained_ids"]


# ------------------------------------------------------------------ in-context, paraphrase


def test_in_context_examples_never_contain_the_asked_item(tiny_gpt2):
    att = make_attack("in_context", {"shots": (2,)})
    # the pool holds the forget items themselves: each must be left out of its own examples
    a = att.apply(tiny_gpt2, QS, att.settings()[0], fmt=PLAIN, pool={"retain": QS + RETAIN}, seed=0)
    for i, prompt in zip(a.asked, a.prompts):
        it = QS[i]
        assert prompt.count(it.question) == 1 and prompt.endswith(PLAIN.prompt(it.question))
        assert it.id not in a.info["examples"][it.id] and len(a.info["examples"][it.id]) == 2
        assert prompt.count("Question:") == 3
    # same attribute first
    a = att.apply(tiny_gpt2, QS[:1], {"name": "shots=1", "shots": 1}, fmt=PLAIN, pool={"retain": RETAIN}, seed=0)
    assert a.info["examples"]["f0"] == ["r0"]
    with pytest.raises(InputError):
        att.apply(tiny_gpt2, QS, att.settings()[0], fmt=PLAIN, pool={}, seed=0)


def test_paraphrase_asks_only_items_with_another_question(tiny_gpt2):
    att = make_attack("paraphrase")
    a = att.apply(tiny_gpt2, QS, att.settings()[0], fmt=PLAIN, pool={})
    assert a.asked == [0, 1, 3] and a.info["n_without_paraphrase"] == 1
    assert a.prompts[0] == PLAIN.prompt("In which city was Ana Lind born?")
    a = att.apply(tiny_gpt2, QS[2:3], att.settings()[0], fmt=PLAIN, pool={})
    assert a.asked == [] and a.prompts == []
    row = run_attack(att, tiny_gpt2, QS[2:3], recovery=FAST)["settings"]["paraphrased_question"]
    assert row["n_asked"] == 0 and row["controlled_rate"] is None


def test_unknown_attack_and_option():
    assert set(ATTACKS) == {"quantization", "relearning", "in_context", "paraphrase"}
    with pytest.raises(ConfigError, match="unknown attack"):
        make_attack("jailbreak")
    with pytest.raises(ConfigError, match="unknown option"):
        make_attack("quantization", {"bitz": 4})


# ------------------------------------------------------------------ the controlled row


def _role(plain, attacked, lp_plain=None, lp_att=None):
    n = len(plain)
    return RoleRun(plain, attacked, lp_plain or [0.0] * n, lp_att or [0.0] * n, ["x"] * n)


def test_controlled_row_counts_only_recovery_beyond_both_controls():
    ids = ["a", "b", "c", "d"]
    runs = {
        # a, b, c, d forgotten; a, b, c come back under the attack
        "unlearned": _role([0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 0.1], [-5] * 4, [-1] * 4),
        # the original loses c under the attack (not eligible)
        "original": _role([1.0] * 4, [1.0, 1.0, 0.2, 1.0]),
        # the negative control answers b under the attack (taught, not recovered)
        "negative": _role([0.0] * 4, [0.0, 1.0, 0.0, 0.0], [-6] * 4, [-5] * 4),
    }
    row = controlled_row(runs, ids, threshold=0.9)
    assert row["n_forgotten"] == 4 and row["n_recovered"] == 3 and row["forget_rate"] == 0.75
    assert row["n_eligible"] == 3 and row["n_recovered_beyond_controls"] == 1 and row["recovered_ids"] == ["a"]
    assert row["controlled_rate"] == pytest.approx(1 / 3)
    assert row["delta_logprob"] == 4 and row["delta_logprob_beyond_negative"] == 3
    assert row["roles"]["negative"]["attacked_accuracy"] == 0.25


def test_run_attack_leaves_every_model_untouched_and_the_negative_recovers_nothing(tiny_dirs):
    unlearned = load_model(tiny_dirs["gpt2"])
    other = load_model(tiny_dirs["gpt2"])
    before = {"u": _fingerprint(unlearned), "o": _fingerprint(other)}
    for name, cfg in [
        ("quantization", {"bits": (4,)}),
        ("relearning", {"steps": (1,), "lrs": (1e-3,), "batch_size": 2}),
        ("in_context", {"shots": (1,)}),
        ("paraphrase", None),
    ]:
        # the negative control asked as if it were the unlearned model: nothing is recovered beyond it
        t = run_attack(
            name, unlearned, QS, original=other, negative=unlearned, pool={"retain": RETAIN}, config=cfg, recovery=FAST
        )
        assert t["attack"] == name and t["settings"]
        for row in t["settings"].values():
            assert row["n_recovered_beyond_controls"] == 0
            assert set(row["roles"]) == {"unlearned", "original", "negative"}
        json.dumps(t)
    assert _same(unlearned, before["u"]) and _same(other, before["o"])


def test_attack_command(tiny_dirs, tmp_path, capsys):
    from unpact.cli import main

    rows = [{"question": q.question, "answer": q.answer, "paraphrased_question": q.paraphrased_question} for q in QS]
    for split in ("forget", "retain"):
        (tmp_path / f"{split}.json").write_text(json.dumps(rows))
    out = tmp_path / "routes.json"
    rc = main(
        [
            "attack",
            "--unlearned",
            tiny_dirs["gpt2"],
            "--original",
            tiny_dirs["gpt2"],
            "--negative",
            tiny_dirs["llama"],
            "--benchmark",
            "tofu/forget",
            "--benchmark-path",
            str(tmp_path),
            "--retain",
            "retain",
            "--attacks",
            "quantization,paraphrase",
            "--set",
            "quantization.bits=[8]",
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "int8" in printed and "paraphrased_question" in printed
    data = json.loads(out.read_text())
    assert [t["attack"] for t in data["attacks"]] == ["quantization", "paraphrase"]
    assert main(["attack", "--unlearned", tiny_dirs["gpt2"], "--attacks", "jailbreak"]) == 2
    assert "unknown attack 'jailbreak'" in capsys.readouterr().err
    assert main(["attack", "--unlearned", tiny_dirs["gpt2"], "--attacks", "quantization", "--set", "bits=[4]"]) == 2


def test_precomputed_controls_give_the_same_table(tiny_dirs):
    from unpact.attacks import role_runs

    unlearned, original, negative = (load_model(tiny_dirs[a]) for a in ("gpt2", "gpt2", "llama"))
    cfg = {"bits": (8, 4)}
    direct = run_attack("quantization", unlearned, QS, original=original, negative=negative, config=cfg, recovery=FAST)
    controls = {
        "original": role_runs("quantization", original, QS, config=cfg, recovery=FAST),
        "negative": json.loads(json.dumps(role_runs("quantization", negative, QS, config=cfg, recovery=FAST))),
    }
    cached = run_attack("quantization", unlearned, QS, controls=controls, config=cfg, recovery=FAST)
    assert json.dumps(cached, sort_keys=True) == json.dumps(direct, sort_keys=True)
    with pytest.raises(InputError, match="do not match"):
        run_attack("quantization", unlearned, QS, controls=controls, config={"bits": (2,)}, recovery=FAST)


def test_in_context_drops_examples_that_do_not_fit_the_context(tiny_gpt2):
    from unpact.scoring import context_length, tokenize

    long = [
        QAItem(" ".join(["Where was the author Ana Lind born again and again?"] * 2), "Lima", id=f"l{i}")
        for i in range(4)
    ]
    att = make_attack("in_context", {"shots": (4,), "match_key": None})
    a = att.apply(tiny_gpt2, QS[:1], att.settings()[0], fmt=PLAIN, pool={"retain": long}, seed=0)
    n_ctx = context_length(tiny_gpt2)
    assert 0 < a.info["shots_used"]["f0"] < 4
    assert 1 + len(tokenize(tiny_gpt2.tokenizer, a.prompts[0] + " Lima")) <= n_ctx


def test_relearning_and_the_positive_control_train_in_the_format_they_are_asked_in(tiny_dirs):
    """A chat model is asked in its template; the relearning fine-tune and the positive control's
    hiding fine-tune must train there too (they trained in the plain format whatever the study's)."""
    from unpact.controls import HideConfig, hide_facts
    from unpact.data.formatting import PromptFormat

    other = PromptFormat("other", template="<user> {question} <assistant>", answer_suffix=" <end>")
    model = load_model(tiny_dirs["gpt2"])
    att = make_attack("relearning", {"steps": (2,), "lrs": (1e-3,), "batch_size": 2})
    tuned = {
        f.name: att.apply(model, QS, att.settings()[0], fmt=f, pool={"retain": RETAIN}, seed=0).model
        for f in (PLAIN, other)
    }
    assert not _same(tuned["plain"], _fingerprint(tuned["other"]))
    hidden = {f.name: hide_facts(model, QS[:2], RETAIN, HideConfig(steps=2), seed=0, fmt=f) for f in (PLAIN, other)}
    assert not _same(hidden["plain"], _fingerprint(hidden["other"]))
    assert _same(hide_facts(model, QS[:2], RETAIN, HideConfig(steps=2), seed=0), _fingerprint(hidden["plain"]))
