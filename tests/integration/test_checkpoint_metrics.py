"""The checkpoint evaluations of open-unlearning and MUSE (unpact.memorization, registered in
unpact.metrics): each equals a direct implementation of its reference formula, on hand-built numbers
and on an embedded model, and on the original (embedded:gpt2) against its retain twin
(embedded:gpt2-retain) they point the documented way."""

from __future__ import annotations

import heapq
import math
import random
import zlib

import numpy as np
import pytest
import torch

from unpact.data import load_benchmark, prompt_answer_pair, spread_sample
from unpact.errors import ConfigError, InputError
from unpact.memorization import (
    MIAConfig,
    exact_memorization,
    extraction_strength,
    mia_auc,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    zlib_score,
)
from unpact.metrics import PRIVLEAK_NOT_APPLICABLE, evaluate, mia_aucs, qa_probabilities
from unpact.models import hf_model_of
from unpact.scoring import encode_many

N_ITEMS = 6  # per split: forget and holdout items of embedded:tofu


# ------------------------------------------------------------ direct implementations of the references


def ref_roc_auc(forget, holdout):
    """sklearn's roc_auc_score(labels, scores) with forget labelled 0, holdout 1, counted pair by pair."""
    wins = sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout)
    return wins / (len(forget) * len(holdout))


def ref_min_k(lp, k):
    """open-unlearning MinKProbAttack.compute_score / MUSE's Min-k% (with open-unlearning's at-least-one)."""
    n = max(1, int(len(lp) * k))
    return -sum(heapq.nsmallest(n, list(lp))) / n


def ref_min_k_pp(all_lp, target_lp, k):
    """open-unlearning MinKPlusPlusAttack.compute_score from the full vocabulary log-probs [n, V]."""
    mu = (torch.exp(all_lp) * all_lp).sum(-1)
    sigma = (torch.exp(all_lp) * torch.square(all_lp)).sum(-1) - torch.square(mu)
    sigma = torch.clamp(sigma, min=1e-6)
    scores = ((target_lp - mu) / torch.sqrt(sigma)).tolist()
    n = max(1, int(len(scores) * k))
    return -float(np.mean(sorted(scores)[:n]))


def ref_privleak_muse(f_scores, h_scores, ref_f_scores, ref_h_scores):
    """MUSE metrics/privleak.py + eval.py: AUC of roc_curve(y, -score) with forget = 0 and holdout = 1
    (so the holdout items are the "members"), then (AUC - AUC_retrain) / AUC_retrain x 100."""

    def muse_auc(f, h):
        return ref_roc_auc([-x for x in f], [-x for x in h])

    a, r = muse_auc(f_scores, h_scores), muse_auc(ref_f_scores, ref_h_scores)
    return (a - r) / r * 100


def ref_extraction_strength(pred, target):
    """1 - k/|y| for the least k whose suffix is reproduced (k = |y|: the empty suffix)."""
    n = len(target)
    for k in range(n + 1):
        if list(pred[k:]) == list(target[k:]):
            return 1 - k / n
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- hand-built numbers


def test_attack_scores_equal_the_reference_formulas_on_hand_built_log_probs():
    rng = random.Random(0)
    for n in (1, 2, 3, 5, 7, 10, 13):
        lp = [-rng.expovariate(1.0) for _ in range(n)]
        for k in (0.05, 0.2, 0.4, 1.0):
            assert min_k_score(lp, k) == pytest.approx(ref_min_k(lp, k), abs=1e-12), (n, k)
        text = "".join(rng.choice("abc ") for _ in range(3 * n))
        assert zlib_score(lp, text) == pytest.approx(-np.mean(lp) / len(zlib.compress(text.encode())), abs=1e-12)
    # Min-K%++ from hand-built vocabulary distributions: the mean and variance of log p over the vocabulary
    g = torch.Generator().manual_seed(0)
    all_lp = torch.randn(9, 17, generator=g, dtype=torch.float64).mul(3).log_softmax(-1)
    targets = torch.randint(0, 17, (9,), generator=g)
    target_lp = all_lp.gather(-1, targets[:, None]).squeeze(-1)
    p = all_lp.exp()
    mean, var = (p * all_lp).sum(-1), (p * all_lp.square()).sum(-1) - (p * all_lp).sum(-1).square()
    for k in (0.2, 0.4, 1.0):
        assert min_k_plus_plus_score(target_lp, mean, var, k) == pytest.approx(
            ref_min_k_pp(all_lp, target_lp, k), abs=1e-9
        )
    # a certain position: the variance is floored at 1e-6, as open-unlearning clamps it
    assert min_k_plus_plus_score([0.0], [-1e-9], [0.0], 1.0) == pytest.approx(-(1e-9) / math.sqrt(1e-6))


def test_auc_is_sklearns_roc_auc_with_forget_labelled_0():
    rng = random.Random(1)
    for _ in range(20):
        f = [round(rng.gauss(0, 1), 1) for _ in range(rng.randint(1, 9))]  # rounded: ties happen
        h = [round(rng.gauss(0.5, 1), 1) for _ in range(rng.randint(1, 9))]
        assert mia_auc(f, h) == pytest.approx(ref_roc_auc(f, h), abs=1e-12)
    assert mia_auc([0.1, 0.2], [1.0, 2.0]) == 1.0  # forget items have the lower loss: the set looks trained on
    assert mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    assert mia_auc([1.0, 1.0], [1.0]) == 0.5
    assert math.isnan(mia_auc([float("nan")], [1.0]))
    with pytest.raises(InputError, match="holdout"):
        mia_auc([1.0], [])


def test_privleak_is_muses_relative_auc_change():
    rng = random.Random(2)
    for _ in range(20):
        f, h = [rng.random() for _ in range(6)], [rng.random() + 0.3 for _ in range(5)]
        rf, rh = [rng.random() for _ in range(6)], [rng.random() for _ in range(5)]
        if ref_roc_auc(rf, rh) == 1.0:  # MUSE's reference AUC 0: its formula divides by zero
            continue
        ours = privleak(mia_auc(f, h), mia_auc(rf, rh))
        assert ours == pytest.approx(ref_privleak_muse(f, h, rf, rh), rel=1e-6, abs=1e-6)
    assert privleak(0.5, 0.5) == 0.0 and privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert privleak(0.0, 0.5) == pytest.approx(100.0)


def test_memorization_equals_the_reference_formulas_on_hand_built_tokens():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 8)
        t = [rng.randint(0, 3) for _ in range(n)]
        p = [x if rng.random() < 0.7 else rng.randint(0, 3) for x in t]
        assert exact_memorization(p, t) == pytest.approx(sum(a == b for a, b in zip(p, t)) / n)
        assert extraction_strength(p, t) == pytest.approx(ref_extraction_strength(p, t))
    assert extraction_strength([0, 2], [1, 2]) == 0.5 and extraction_strength([1, 0], [1, 2]) == 0.0
    with pytest.raises(InputError, match="one prediction per answer token"):
        exact_memorization([1], [1, 2])


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="min_k_ratio"):
        MIAConfig(min_k_ratio=1.5)
    with pytest.raises(ConfigError, match="privleak attack 'gradnorm'"):
        MIAConfig(privleak_attack="gradnorm")
    assert MIAConfig().min_k_ratio == 0.4 and MIAConfig().privleak_attack == "min_k"


# -------------------------------------------------------------------------------- embedded model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The direct references decode greedily one token at a time: hundreds of single-row forwards of a
    tiny model, fastest on one thread (on a machine busy with other jobs, two threads spin and are
    tens of times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models():
    from unpact import load_model

    return load_model("embedded:gpt2"), load_model("embedded:gpt2-retain")


@pytest.fixture(scope="module")
def splits():
    forget = spread_sample(list(load_benchmark("embedded:tofu", "forget10")), N_ITEMS)
    holdout = spread_sample(list(load_benchmark("embedded:tofu", "holdout")), N_ITEMS)
    return forget, holdout


def _direct(model, items, greedy: bool = False):
    """Per item, straight from the HF model's full logits: the answer tokens, the log-softmax rows that
    predict them and, with ``greedy``, the greedy continuation from every answer prefix (plain argmax
    decoding, stopped at the first token that leaves the answer: the continuation then differs anyway)."""
    hf = hf_model_of(model)
    pairs = [prompt_answer_pair(it) for it in items]
    out = []
    for p, a in encode_many(model, [x for x, _ in pairs], [y for _, y in pairs], truncate=True):
        ids = torch.tensor([p + a])
        with torch.no_grad():
            logits = hf(input_ids=ids).logits[0].float()
        rows = logits[len(p) - 1 : len(p) - 1 + len(a)].log_softmax(-1)
        target = torch.tensor(a)
        least_k = None
        for k in range(len(a) + 1) if greedy else ():  # Carlini: decode |y| - k tokens after the prompt and y_<k
            seq = list(p) + list(a[:k])
            while len(seq) < len(p) + len(a) and seq[-1:] == (list(p) + list(a))[len(seq) - 1 : len(seq)]:
                with torch.no_grad():
                    seq.append(int(hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
            if seq[len(p) + k :] == list(a[k:]):  # the least k whose greedy continuation is the rest of the answer
                least_k = k
                break
        out.append(
            {
                "answer": a,
                "rows": rows,
                "target_lp": rows.gather(-1, target[:, None]).squeeze(-1),
                "least_k": least_k,
                "text": model.tokenizer.decode(a, skip_special_tokens=True),
            }
        )
    return out


def test_every_metric_equals_its_reference_on_the_embedded_model(models, splits):
    orig, retain = models
    forget, holdout = splits
    res = evaluate(
        orig, forget, holdout=holdout, role="forget", metrics=["mia", "exact_memorization", "extraction_strength"]
    )
    df, dh = _direct(orig, forget, greedy=True), _direct(orig, holdout)
    # on the original (which knows the forget answers) and on the retain twin (which knows only their shape)
    for model, result, direct in ((orig, res, df), (retain, None, None)):
        if result is None:
            result = evaluate(model, forget, role="forget", metrics=["exact_memorization", "extraction_strength"])
            direct = _direct(model, forget, greedy=True)
        # exact memorization: argmax of the teacher-forced logits against the gold token
        em = [float((d["rows"].argmax(-1) == torch.tensor(d["answer"])).double().mean()) for d in direct]
        assert result["exact_memorization_per_item"] == pytest.approx(em, abs=1e-12)
        # extraction strength: the least prefix k from which greedy *generation* reproduces the rest
        es = [1 - d["least_k"] / len(d["answer"]) for d in direct]
        assert result["extraction_strength_per_item"] == pytest.approx(es, abs=1e-12)
    assert set(es) != {1.0}  # the twin does not extract every answer from the question: the check bites
    # the attacks' scores and AUCs
    k = MIAConfig().min_k_ratio
    refs = {
        "loss": lambda d: -float(d["target_lp"].mean()),
        "zlib": lambda d: -float(d["target_lp"].mean()) / len(zlib.compress(d["text"].encode("utf-8"))),
        "min_k": lambda d: ref_min_k(d["target_lp"].tolist(), k),
        "min_k_plus_plus": lambda d: ref_min_k_pp(d["rows"].double(), d["target_lp"].double(), k),
    }
    # LOSS is minus the LP every other unpact metric uses (unpact.scoring, one place)
    lp = qa_probabilities(orig, forget)["true_lp"]
    assert res["mia_scores_per_item"]["forget"]["loss"] == pytest.approx((-lp).tolist(), rel=1e-5, abs=1e-6)
    for attack, fn in refs.items():
        f_scores, h_scores = [fn(d) for d in df], [fn(d) for d in dh]
        got = res["mia_scores_per_item"]
        assert got["forget"][attack] == pytest.approx(f_scores, rel=1e-5, abs=1e-6), attack
        assert got["holdout"][attack] == pytest.approx(h_scores, rel=1e-5, abs=1e-6), attack
        assert res[f"mia_{attack}_auc"] == pytest.approx(ref_roc_auc(f_scores, h_scores), abs=1e-12), attack


def test_privleak_against_the_reference_model(models, splits):
    orig, retain = models
    forget, holdout = splits
    with_model = evaluate(orig, forget, reference=retain, holdout=holdout, role="forget", metrics=["mia", "privleak"])
    ref = mia_aucs(retain, forget, holdout)
    assert with_model["privleak_reference_auc"] == ref["mia_min_k_auc"]
    sf, sh = with_model["mia_scores_per_item"]["forget"]["min_k"], with_model["mia_scores_per_item"]["holdout"]["min_k"]
    rf, rh = ref["mia_scores_per_item"]["forget"]["min_k"], ref["mia_scores_per_item"]["holdout"]["min_k"]
    assert with_model["privleak"] == pytest.approx(ref_privleak_muse(sf, sh, rf, rh), rel=1e-6)
    # an earlier result holding the reference's AUC gives the same number
    with_result = evaluate(orig, forget, reference=ref, holdout=holdout, role="forget", metrics=["mia", "privleak"])
    assert with_result["privleak"] == with_model["privleak"]
    # no reference: not applicable, and why
    alone = evaluate(orig, forget, holdout=holdout, role="forget", metrics=["mia", "privleak"])
    assert alone["privleak"] is None and alone["privleak_note"] == PRIVLEAK_NOT_APPLICABLE
    # no holdout: no attacks, no privleak; a retain split: no attacks either
    assert "mia_loss_auc" not in evaluate(orig, forget, role="forget", metrics=["mia", "privleak"])
    assert "mia_loss_auc" not in evaluate(orig, forget, holdout=holdout, role="retain", metrics=["mia"])


def test_original_against_its_retain_twin_points_the_documented_way(models, splits):
    """The original was trained on the forget authors, the retain twin never was (neither saw the holdout
    authors): the original extracts and memorises the forget answers more, its attacks separate forget from
    holdout better (AUC further from 0.5, towards 1), and its privleak against the twin is strongly
    negative (MUSE: under-unlearned) while the twin's own is 0."""
    orig, retain = models
    forget, holdout = splits
    kw = dict(
        reference=retain,
        holdout=holdout,
        role="forget",
        metrics=["mia", "privleak", "exact_memorization", "extraction_strength"],
    )
    o, r = evaluate(orig, forget, **kw), evaluate(retain, forget, **kw)
    assert o["exact_memorization"] > r["exact_memorization"]
    assert o["extraction_strength"] > r["extraction_strength"]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        assert abs(o[f"mia_{attack}_auc"] - 0.5) > abs(r[f"mia_{attack}_auc"] - 0.5), attack
        assert o[f"mia_{attack}_auc"] > r[f"mia_{attack}_auc"], attack
    assert o["privleak"] < -50 and r["privleak"] == 0.0


def test_unpact_unlearn_reports_them_with_a_holdout_split(tiny_dirs, tmp_path, capsys):
    import json

    from unpact.cli import main
    from unpact.testing import TOY_PLACES, toy_tofu_rows

    bench = tmp_path / "bench"
    bench.mkdir()
    for split, pairs in (
        ("forget", [("Ana Lind", "Lima"), ("Bo Reyes", "Oslo")]),
        ("retain", [("Cy Moss", "Kyoto")]),
        ("holdout", [("Di Park", "Cairo"), ("Ed Vale", "Quito")]),
    ):
        (bench / f"{split}.json").write_text(json.dumps(toy_tofu_rows(pairs, TOY_PLACES)))
    out = tmp_path / "out"
    args = [
        "unlearn",
        tiny_dirs["gpt2"],
        "--method",
        "ga_gdr",
        "--benchmark",
        "tofu",
        "--benchmark-path",
        str(bench),
        "--forget",
        "forget",
        "--retain",
        "retain",
        "--holdout",
        "holdout",
        "--out",
        str(out),
        "--reference-model",
        tiny_dirs["gpt2"],
        "--set",
        "steps=1",
        "--set",
        "batch_size=2",
    ]
    assert main(args) == 0
    capsys.readouterr()
    report = json.loads((out / "unlearn.json").read_text())
    assert report["holdout"] == "holdout"
    before, after = report["metrics"]["before"]["forget"], report["metrics"]["after"]["forget"]
    for ev in (before, after):
        assert {
            "mia_loss_auc",
            "mia_zlib_auc",
            "mia_min_k_auc",
            "mia_min_k_plus_plus_auc",
            "privleak",
            "exact_memorization",
            "extraction_strength",
        } <= set(ev)
        assert ev["mia_forget_n"] == 4 and ev["mia_holdout_n"] == 4
    assert before["privleak"] == 0.0  # before unlearning the model is its own reference
    assert "mia_loss_auc" not in report["metrics"]["after"]["retain"]
    assert "exact_memorization" in report["metrics"]["after"]["retain"]


def test_a_holdout_without_questions_is_an_input_error(models, splits):
    from unpact.data import TextItem

    orig, _ = models
    forget, _ = splits
    with pytest.raises(InputError, match="holdout split holds no question-answer items"):
        evaluate(orig, forget, holdout=[TextItem("a passage", "that goes on")], role="forget", metrics=["mia"])
