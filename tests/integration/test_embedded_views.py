"""The derived splits of the embedded MUSE and WMDP benchmarks (unpact.data.embedded_views): the
same shipped facts as question-answer items with a trained cloze, matched fact by fact."""

from __future__ import annotations

import pytest

from unpact.data import load_benchmark
from unpact.data.embedded_views import cloze_key, cloze_split, fact_key
from unpact.data.records import QAItem
from unpact.errors import DataError
from unpact.probes import attach_cloze, cloze_of


def test_wmdp_test_qa_is_the_mc_test_with_the_right_choice_as_answer():
    mc = list(load_benchmark("embedded:wmdp", "test"))
    qa = list(load_benchmark("embedded:wmdp", "test_qa"))
    assert len(qa) == len(mc) and all(isinstance(it, QAItem) for it in qa)
    for m, q in zip(mc, qa):
        assert q.question == m.question
        assert q.answer == m.choices[m.answer]
        assert sorted([*q.perturbed_answers, q.answer]) == sorted(m.choices)
    assert len({it.id for it in qa}) == len(qa)


def test_wmdp_cloze_cuts_the_trained_corpus_sentence_before_each_answer():
    corpus = {it.text for it in load_benchmark("embedded:wmdp", "forget_corpus")}
    qa = {it.id: it for it in load_benchmark("embedded:wmdp", "test_qa")}
    cloze = list(load_benchmark("embedded:wmdp", "cloze"))
    assert len(cloze) == len(qa)
    for c in cloze:
        assert c.prompt + c.continuation in corpus  # a sentence the models read, cut before the fact
        q = qa[next(k for k in qa if fact_key(k) == fact_key(c.id))]
        assert c.continuation.strip().startswith(q.answer)  # ... and the fact is the question's answer


def test_wmdp_retain_qa_is_the_general_qa_and_unknown_splits_list_the_derived_ones():
    assert [it.question for it in load_benchmark("embedded:wmdp", "retain_qa")] == [
        it.question for it in load_benchmark("embedded:general", "qa")
    ]
    with pytest.raises(DataError, match="test_qa"):
        load_benchmark("embedded:wmdp", "nope")


@pytest.mark.parametrize("bench, forget", [("muse", "knowmem_forget_qa"), ("wmdp", "test_qa"), ("tofu", "forget10")])
def test_every_forget_item_gets_its_own_cloze(bench, forget):
    items = list(load_benchmark(f"embedded:{bench}", forget))
    rows = list(load_benchmark(f"embedded:{bench}", cloze_split(bench, forget)))
    out = attach_cloze(items, rows, key_fn=cloze_key)
    assert all(cloze_of(it) for it in out)
    for it in out:  # the cloze asks for this item's fact: its answer holds the cloze's value
        prompt, answer = cloze_of(it)
        value = it.meta["cloze_value"]
        assert value in it.answer and answer.strip().startswith(value), (it.id, it.answer, prompt, answer)


def test_fact_key_needs_the_form_letter():
    assert fact_key("wmdp-3-q1") == fact_key("wmdp-3-c1") != fact_key("wmdp-3-c0")
    assert fact_key("general-4") is None
