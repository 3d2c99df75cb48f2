"""Metrics against hand-computed values, and model-based metrics against the scoring core."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hmean

from unpact import load_model
from unpact.data import Benchmark, MCItem, QAItem, TextItem, format_answer, format_prompt, load_benchmark
from unpact.errors import InputError
from unpact.metrics import (
    evaluate,
    forget_quality,
    mc_accuracy,
    model_utility,
    normalised_probability,
    qa_probabilities,
    rouge_l_f1,
    rouge_l_recall,
    tofu_model_utility,
    truth_ratio_from_losses,
    truth_ratio_score,
    truth_ratios,
)
from unpact.scoring import answer_logprobs


@pytest.mark.parametrize(
    "pred, ref, want",
    [
        ("The author was born in Lima, Peru.", "Lima", 1.0),
        ("a c", "a b c d", 0.5),  # LCS "a c" = 2 of 4 reference tokens
        ("running quickly", "run", 1.0),  # the Porter stemmer is on, as in TOFU
        ("nothing alike", "Lima", 0.0),
        ("d c b a", "a b c d", 0.25),  # order matters: LCS of length 1
    ],
)
def test_rouge_l_recall_on_hand_made_pairs(pred, ref, want):
    assert rouge_l_recall(pred, ref) == pytest.approx(want)


def test_rouge_l_f1_hand_value():
    # LCS 3; precision 3/3, recall 3/6 -> F1 = 2 * 1 * 0.5 / 1.5
    assert rouge_l_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)


def test_truth_ratio_from_hand_losses():
    # item 0: para loss 1, perturbed 2 and 4 (mean 3): R = e^(1-3); item 1: para 0.5, pert 0.5: R = 1
    r = truth_ratio_from_losses([1.0, 0.5], [[2.0, 4.0], [0.5]])
    assert r.tolist() == pytest.approx([math.exp(-2.0), 1.0])
    # = geometric mean of perturbed normalised probs over the paraphrased one
    assert r[0] == pytest.approx(math.sqrt(math.exp(-2) * math.exp(-4)) / math.exp(-1))
    assert truth_ratio_score([0.5, 2.0], forget=True) == pytest.approx(0.5)
    assert truth_ratio_score([0.5, 2.0], forget=False) == pytest.approx(0.25)
    assert truth_ratio_score([0.2, 0.6], forget=False) == pytest.approx(0.6)
    with pytest.raises(InputError):
        truth_ratio_from_losses([1.0], [[1.0], [2.0]])


def test_forget_quality_on_hand_made_samples():
    assert forget_quality([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]) == pytest.approx(1.0)
    # completely separated samples of 5 and 5: exact two-sided p = 2 / C(10, 5)
    assert forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / math.comb(10, 5))
    # monotone transforms of both samples (R vs TOFU's logged 1/R) give the same p-value
    a, b = np.array([0.3, 0.5, 0.9, 1.2]), np.array([0.4, 0.45, 2.0, 3.0, 0.2])
    assert forget_quality(a, b) == pytest.approx(forget_quality(1 / a, 1 / b))


def test_model_utility_and_normalised_probability():
    assert model_utility([0.5, 1.0, 0.25]) == pytest.approx(3 / 7)
    assert model_utility([0.5, 0.0]) == 0.0
    assert normalised_probability([0.6, 0.2], [[0.2, 0.2], [0.6]]).tolist() == pytest.approx([0.6, 0.25])
    retain = {"tofu_role": "retain", "prob": 0.9, "rouge_l_recall": 0.8, "truth_ratio": 0.5}
    authors = {"tofu_role": "other", "prob": 0.1, "prob_normalised": 0.6, "rouge_l_recall": 0.7, "truth_ratio": 0.4}
    assert tofu_model_utility(retain, authors) == pytest.approx(float(hmean([0.9, 0.8, 0.5, 0.6, 0.7, 0.4])))


ITEMS = [
    QAItem("Where was the author Ana Lind born?", "Lima", "in Lima", ("Paris", "Rome")),
    QAItem("What genre does Bo Reyes write?", "crime fiction", None, ("poetry",)),
    QAItem("What is the capital of France?", "Paris", "Paris, France", ("Lima", "the mat", "5")),
]


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return load_model(tiny_dirs["gpt2"])


def test_truth_ratio_of_a_model_equals_the_formula_on_its_log_probs(model):
    def lp(q, a):
        return float(answer_logprobs(model, [f"Question: {q}\nAnswer:"], [" " + a])[0])

    want = []
    for it in ITEMS:
        para = lp(it.question, it.paraphrased_answer or it.answer)
        pert = [lp(it.question, p) for p in it.perturbed_answers]
        want.append(math.exp(np.mean(pert) - para))
    assert truth_ratios(model, ITEMS).tolist() == pytest.approx(want, rel=1e-4)


def test_mc_accuracy_picks_the_highest_summed_log_prob(model):
    items = [
        MCItem("What is 2 + 3?", ("4", "5", "the lazy dog"), 1),
        MCItem("Capital of France?", ("Paris", "Lima"), 0),
    ]
    want = 0
    for it in items:
        lps = answer_logprobs(
            model,
            [f"Question: {it.question}\nAnswer:"] * len(it.choices),
            [" " + c for c in it.choices],
            reduction="sum",
        )
        want += int(int(lps.argmax()) == it.answer)
    assert mc_accuracy(model, items) == pytest.approx(want / 2)


def test_evaluate_returns_what_applies_to_the_split(model):
    forget = Benchmark("demo", "forget10", ITEMS)
    res = evaluate(model, forget, reference=model)
    assert res["tofu_role"] == "forget"
    assert {"rouge_l_recall", "prob", "prob_normalised", "truth_ratio", "forget_quality"} <= set(res)
    assert res["forget_quality"] == pytest.approx(1.0)  # a model against itself
    assert res["truth_ratio"] == pytest.approx(truth_ratio_score(res["truth_ratios"], forget=True))
    assert 0 <= res["prob"] <= 1 and 0 <= res["rouge_l_recall"] <= 1
    mixed = Benchmark("demo", "general", [MCItem("2 + 3?", ("4", "5"), 1), TextItem("The quick brown", " fox jumps")])
    res2 = evaluate(model, mixed)
    assert set(res2) >= {"mc_accuracy", "verbatim_rouge_l"} and "rouge_l_recall" not in res2
    with pytest.raises(InputError):
        evaluate(model, mixed, reference=model)


def test_a_registered_metric_is_computed_by_evaluate(model):
    """One registration (unpact.metrics.register_metric) and evaluate computes it where it applies;
    ``metrics=`` picks some by name; an unknown name lists the registered ones."""
    from unpact.metrics import METRICS, register_metric

    forget = Benchmark("demo", "forget10", ITEMS)

    @register_metric("answer_words", lambda x: bool(x.qa))
    def _words(x, out):
        return {"answer_words": float(np.mean([len(it.answer.split()) for it in x.qa]))}

    try:
        res = evaluate(model, forget)
        assert res["answer_words"] == pytest.approx(np.mean([len(it.answer.split()) for it in ITEMS]))
        assert "answer_words" not in evaluate(model, Benchmark("demo", "general", [MCItem("2 + 3?", ("4", "5"), 1)]))
        some = evaluate(model, forget, metrics=["rouge_l_recall", "answer_words"])
        assert set(some) == {"n", "tofu_role", "style", "rouge_l_recall", "rouge_l_recall_per_item", "answer_words"}
        assert some["rouge_l_recall"] == res["rouge_l_recall"]
    finally:
        del METRICS["answer_words"]
    with pytest.raises(InputError, match="unknown metric 'answer_words'; known: rouge_l_recall, probability"):
        evaluate(model, forget, metrics=["answer_words"])


def test_an_item_without_a_paraphrase_scores_its_answer_as_the_paraphrase():
    model = load_model("embedded:gpt2")
    items = [
        QAItem("Where was Ana Lind born?", "Lima", None, ["Oslo", "Cairo"]),
        QAItem("What does Bo Reyes write?", "crime fiction", "crime novels", ["poetry"]),
    ]
    pr = qa_probabilities(model, items)
    assert pr["para_lp"][0] == pr["true_lp"][0]
    assert pr["para_lp"][1] != pr["true_lp"][1]
    assert len(pr["perturbed_lp"][0]) == 2 and len(pr["perturbed_lp"][1]) == 1


def test_the_answer_log_prob_from_the_token_stats_is_the_scored_one_in_every_path():
    """evaluate reads the answers' LP from the token stats that exact memorization, extraction
    strength and the attacks already compute (one forward fewer per item); it must be the LP a
    forward of its own gives, alone, through qa_probabilities and through evaluate_groups."""
    from unpact.metrics import evaluate_groups, mean_logprobs_of, token_stats

    model = load_model("embedded:gpt2")
    forget = list(load_benchmark("embedded:tofu", "forget10"))[:6]
    retain = list(load_benchmark("embedded:tofu", "retain90"))[:5]
    own = answer_logprobs(model, [format_prompt(it) for it in forget], [format_answer(it.answer) for it in forget])
    from_stats = mean_logprobs_of(token_stats(model, forget))
    np.testing.assert_allclose(from_stats, own.double().numpy(), atol=1e-5)
    alone = qa_probabilities(model, forget)
    given = qa_probabilities(model, forget, true_lp=from_stats)
    np.testing.assert_allclose(given["true_lp"], alone["true_lp"], atol=1e-5)
    np.testing.assert_allclose(given["para_lp"], alone["para_lp"], atol=1e-5)
    np.testing.assert_allclose(np.array(given["perturbed_lp"]), np.array(alone["perturbed_lp"]), atol=1e-5)
    one = evaluate(model, forget)
    groups = evaluate_groups(model, {"forget": forget, "retain": retain})
    np.testing.assert_allclose(one["mean_logprob_per_item"], own.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(groups["forget"]["mean_logprob_per_item"], own.double().numpy(), atol=1e-5)
    assert groups["forget"]["truth_ratios"] == pytest.approx(one["truth_ratios"], abs=1e-5)
    assert groups["forget"]["exact_memorization_per_item"] == one["exact_memorization_per_item"]
    with pytest.raises(ValueError, match="2 answer log-probs for 6 items"):
        qa_probabilities(model, forget, true_lp=[0.0, 0.0])
