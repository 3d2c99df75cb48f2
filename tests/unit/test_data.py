"""Records and loaders: real TOFU fixture files, and every kind of bad input."""

from __future__ import annotations

import json

import pytest

from unpact.data import (
    IDK_FILE,
    MCItem,
    QAItem,
    TextItem,
    format_answer,
    format_prompt,
    load_benchmark,
    prompt_answer_pair,
    read_lines,
)
from unpact.errors import DataError


@pytest.mark.parametrize("split, n", [("real_authors_perturbed", 100), ("world_facts_perturbed", 117)])
def test_real_tofu_files_load(tofu_dir, split, n):
    bench = load_benchmark("tofu", split, path=tofu_dir)
    assert len(bench) == n
    first = bench[0]
    assert isinstance(first, QAItem)
    assert first.question and first.answer
    assert len(first.perturbed_answers) >= 3
    assert all(isinstance(p, str) for p in first.perturbed_answers)


def test_real_tofu_by_file_and_hub_alias(tofu_dir):
    bench = load_benchmark("locuslab/TOFU", "x", path=f"{tofu_dir}/real_authors_perturbed.json")
    assert bench[0].question == "Who wrote the play 'Romeo and Juliet'?"
    assert bench[0].answer == "William Shakespeare"


def test_idontknow_lines(tofu_dir):
    lines = read_lines(f"{tofu_dir}/idontknow.jsonl")
    assert len(lines) >= 90 and lines[0] == "I'm not certain about that."
    assert read_lines(IDK_FILE) == lines


def test_unknown_split_in_directory_lists_available(tofu_dir):
    with pytest.raises(DataError, match="available splits: .*real_authors_perturbed"):
        load_benchmark("tofu", "forget10", path=tofu_dir)


def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_wmdp_shape(tmp_path):
    rows = [{"question": "Which agent?", "choices": ["a", "b", "c", "d"], "answer": 2}]
    bench = load_benchmark("wmdp", "wmdp-bio", path=_write(tmp_path, "wmdp-bio.json", rows))
    assert bench[0] == MCItem("Which agent?", ("a", "b", "c", "d"), 2, id=bench[0].id)
    assert bench[0].answer_text == "c"


def test_muse_shapes(tmp_path):
    verb = [{"prompt": "The mayor said", "gt": " the bridge will open."}]
    know = [{"question": "Who spoke?", "answer": "the mayor"}]
    raw = [{"text": "A whole passage."}]
    d = tmp_path / "muse"
    (d / "verbmem").mkdir(parents=True)
    (d / "knowmem").mkdir()
    (d / "raw").mkdir()
    (d / "verbmem" / "forget.json").write_text(json.dumps(verb))
    (d / "knowmem" / "forget_qa.jsonl").write_text("\n".join(json.dumps(r) for r in know))
    (d / "raw" / "forget.json").write_text(json.dumps(raw))
    v = load_benchmark("muse", "verbmem/forget", path=d)[0]
    assert isinstance(v, TextItem) and v.prompt == "The mayor said" and v.continuation == " the bridge will open."
    k = load_benchmark("muse-bench/MUSE-News", "knowmem/forget_qa", path=d)[0]
    assert isinstance(k, QAItem) and k.answer == "the mayor"
    r = load_benchmark("muse", "raw/forget", path=d)[0]
    assert isinstance(r, TextItem) and r.text == "A whole passage."


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"question": "Q?", "answer": "A", "perturbed_answer": ["B", "C"]}])
    pq.write_table(table, tmp_path / "forget10.parquet")
    item = load_benchmark("tofu", "forget10", path=tmp_path)[0]
    assert item.answer == "A" and item.perturbed_answers == ("B", "C")


def test_format_is_the_embedded_training_format():
    item = QAItem("Where was Ana Lind born?", "Lima")
    assert format_prompt(item) == "Question: Where was Ana Lind born?\nAnswer:"
    assert format_answer("Lima") == " Lima"
    assert prompt_answer_pair(item) == ("Question: Where was Ana Lind born?\nAnswer:", " Lima")
    mc = MCItem("2 + 2 =", ("3", "4"), 1)
    assert prompt_answer_pair(mc) == ("Question: 2 + 2 =\nAnswer:", " 4")


# ------------------------------------------------------------------ bad input


def test_missing_file():
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark("tofu", "forget10", path="/no/such/file.json")


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"empty\.json.*is empty"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "empty.json", ""))


def test_empty_list(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "none.json", []))


def test_invalid_json(tmp_path):
    with pytest.raises(DataError, match=r"bad\.json.*not valid JSON.*line 1"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "bad.json", '[{"question": "Q", '))


def test_invalid_json_lines_names_the_line(tmp_path):
    content = json.dumps({"question": "Q", "answer": "A"}) + "\n{oops\n"
    with pytest.raises(DataError, match=r"bad\.jsonl.*line 2"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "bad.jsonl", content))


def test_missing_field_names_file_record_and_field(tmp_path):
    rows = [{"question": "Q1", "answer": "A1"}, {"question": "Q2"}]
    with pytest.raises(DataError, match=r"f\.json: record 1 has no field 'answer'"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "f.json", rows))


def test_choices_not_a_list(tmp_path):
    rows = [{"question": "Q", "choices": "a b c", "answer": 0}]
    with pytest.raises(DataError, match=r"w\.json: record 0: field 'choices' must be a list"):
        load_benchmark("wmdp", "x", path=_write(tmp_path, "w.json", rows))


def test_answer_index_out_of_range(tmp_path):
    rows = [
        {"question": "Q", "choices": ["a", "b"], "answer": 0},
        {"question": "Q", "choices": ["a", "b"], "answer": 5},
    ]
    with pytest.raises(DataError, match=r"w\.json: record 1: field 'answer' = 5 is out of range for 2 choices"):
        load_benchmark("wmdp", "x", path=_write(tmp_path, "w.json", rows))


def test_wrong_type_of_answer_text(tmp_path):
    rows = [{"question": "Q", "answer": 3}]
    with pytest.raises(DataError, match=r"record 0: field 'answer' must be a string"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "t.json", rows))


def test_perturbed_not_a_list(tmp_path):
    rows = [{"question": "Q", "answer": "A", "perturbed_answer": 7}]
    with pytest.raises(DataError, match=r"record 0: field 'perturbed_answer' must be a list"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "t.json", rows))


def test_record_not_an_object(tmp_path):
    with pytest.raises(DataError, match=r"record 0 is a str"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "t.json", ["just text"]))


def test_unsupported_extension(tmp_path):
    with pytest.raises(DataError, match="unsupported file type .csv"):
        load_benchmark("tofu", "x", path=_write(tmp_path, "t.csv", "a,b"))


def test_hub_without_network_says_to_use_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="pass path="):
        load_benchmark("tofu", "forget10")
