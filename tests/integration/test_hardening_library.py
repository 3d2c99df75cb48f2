"""Library defects found by adversarial use (issue 17), each on real tiny or embedded models.

Each test failed on the code before the fix: a recover pair with different
tokenizers, heads attribution on half-precision models, greedy generation past
the context, truncation without a BOS token, duplicate multiple-choice answers,
an ambiguous split file, and files that are not UTF-8.
"""

from __future__ import annotations

import json

import pytest
import torch

from unpact import load_model
from unpact.data import MCItem, QAItem, load_benchmark
from unpact.errors import ConfigError, DataError, InputError
from unpact.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def short_ctx(tmp_path_factory):
    """A tiny GPT-2 with a 16-token context."""
    return make_tiny_checkpoint("gpt2", tmp_path_factory.mktemp("short") / "m", n_ctx=16)


LONG = "Question: Where was the author Ana Lind born and what genre does Bo Reyes write in the end?"


# ----------------------------------------------------------- recover pair


def test_recover_refuses_models_with_different_tokenizers(tiny_dirs):
    from unpact.emphasis import recover

    original = load_model("embedded:gpt2")
    other = load_model(tiny_dirs["gpt_neox"])
    items = [QAItem("Where was Ana Lind born?", "Lima", id="a")]
    with pytest.raises(ConfigError, match="tokenizer"):
        recover(other, items, original=original)


def test_recover_accepts_the_same_tokenizer(tiny_dirs):
    from unpact.emphasis.recovery import check_same_tokenizer

    a = load_model(tiny_dirs["gpt2"])
    b = load_model(tiny_dirs["llama"])  # same BPE vocabulary, another architecture
    check_same_tokenizer(a, b)  # no error


# ------------------------------------------------------------ heads dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_heads_attribution_on_half_precision(tiny_dirs, dtype):
    from unpact.attribution import attribute

    model = load_model(tiny_dirs["gpt2"], dtype=dtype)
    a = attribute(model, ("Question: Where was Ana Lind born?\nAnswer:", " Lima"), method="heads")
    assert len(a.scores) == len(a.tokens)
    assert all(torch.isfinite(torch.tensor(a.scores)))
    ref = attribute(
        load_model(tiny_dirs["gpt2"]), ("Question: Where was Ana Lind born?\nAnswer:", " Lima"), method="heads"
    )
    # the same decomposition, up to half-precision rounding
    assert abs(a.extras["answer_logit"] - ref.extras["answer_logit"]) < 0.1


# -------------------------------------------------- greedy past the context


def test_greedy_generate_prompt_longer_than_context_is_a_named_error(short_ctx):
    from unpact.scoring import greedy_generate

    model = load_model(short_ctx)
    with pytest.raises(InputError, match=r"item 'long-one'.*context of 16"):
        greedy_generate(model, ["Answer:", LONG], names=["short", "long-one"], max_new_tokens=4)
    with pytest.raises(InputError, match=r"item '1'"):
        greedy_generate(model, ["Answer:", LONG], max_new_tokens=4)


def test_greedy_generate_truncates_like_the_logprob_path(short_ctx):
    from unpact.metrics import greedy_answers
    from unpact.scoring import greedy_generate, tokenize

    model = load_model(short_ctx)
    out = greedy_generate(model, [LONG], max_new_tokens=4, truncate=True)
    ids = [model.tokenizer.bos_token_id] + tokenize(model.tokenizer, LONG)
    kept = [ids[0]] + ids[len(ids) - (16 - 4 - 1) :]  # BOS + the last tokens, room for the answer
    assert out == greedy_generate(model, [kept], max_new_tokens=4)
    # evaluation (log-probs truncate) answers the same items instead of raising
    assert len(greedy_answers(model, [QAItem(LONG, "Lima", id="x")], max_new_tokens=4)) == 1


# ------------------------------------------------------ truncation w/o BOS


def test_truncate_without_bos_keeps_the_last_tokens(short_ctx):
    from unpact.attribution import attribute
    from unpact.scoring import encode_many, tokenize

    model = load_model(short_ctx)
    model.tokenizer.bos_token = None
    assert model.tokenizer.bos_token_id is None
    ((pi, ai),) = encode_many(model, [LONG], [" Lima"], truncate=True)
    full = tokenize(model.tokenizer, LONG)
    assert len(pi) + len(ai) == 16
    assert pi == full[len(full) - len(pi) :]  # the last prompt tokens, no stray first token
    a = attribute(model, (LONG, " Lima"), truncate=True)
    assert a.token_ids == pi
    assert a.special[0] is False  # no BOS, so no position is special by default


# ------------------------------------------------------ duplicate choices


def test_mc_accuracy_counts_a_tie_with_a_duplicate_right_choice(tiny_gpt2):
    from unpact.metrics import mc_accuracy

    item = MCItem("What is the capital of France?", ("Paris", "Paris"), 1, id="dup")
    assert mc_accuracy(tiny_gpt2, [item]) == 1.0


def test_loader_flags_duplicate_choices(tmp_path):
    f = tmp_path / "mc.json"
    f.write_text(
        json.dumps(
            [
                {"question": "Q?", "choices": ["a", "b", "a"], "answer": 2},
                {"question": "R?", "choices": ["a", "b"], "answer": 0},
            ]
        )
    )
    bench = load_benchmark("wmdp", "mc", path=f)
    assert bench[0].meta["duplicate_choices"] == [[0, 2]]
    assert "duplicate_choices" not in bench[1].meta


# ---------------------------------------------------------- ambiguous split


def test_ambiguous_split_names_both_files(tmp_path):
    row = {"question": "Q?", "answer": "A"}
    (tmp_path / "forget10.json").write_text(json.dumps([row]))
    (tmp_path / "forget10.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"forget10\.json.*forget10\.jsonl"):
        load_benchmark("tofu", "forget10", path=tmp_path)


# ------------------------------------------------------------- not UTF-8


def test_benchmark_file_not_utf8_is_a_data_error(tmp_path):
    f = tmp_path / "forget10.json"
    f.write_bytes('[{"question": "Qui est né à Périgueux?", "answer": "A"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        load_benchmark("tofu", "forget10", path=tmp_path)


def test_config_file_not_utf8_is_a_config_error(tmp_path):
    from unpact.config import read_config_file

    f = tmp_path / "study.toml"
    f.write_bytes('model = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        read_config_file(f)
