"""GGUF checkpoints and packaged models: a tiny random Llama written as a GGUF file in the
test (``gguf.GGUFWriter``, laid out as llama.cpp's converter lays it out) loads as a bridge,
runs hooks, equals transformers' own GGUF loading, and saves as an ordinary safetensors
checkpoint whose tokenizer tokenizes exactly as the GGUF's. The real packaged model
(``smollm2-135m``) is tested where its package is installed (.ci/run installs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings

import pytest
import torch

from unpact.cli import main
from unpact.errors import ModelLoadError
from unpact.models import load_model, model_info, resolve_model_spec, save_model
from unpact.packaged_models import PACKAGED_MODELS, PackagedModel
from unpact.testing import CHATML_TEMPLATE, write_tiny_gguf

pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install 'unpact-lens[gguf]')")

#: 20 prompts: plain, odd spacing and digits, and chat-formatted ones (special tokens inside)
PROMPTS = [
    "Question: Where was Ana Lind born?\nAnswer:",
    "Question: What genre does Bo Reyes write?\nAnswer: crime fiction",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and   inner  gaps ",
    "Numbers 12345 and 2 + 3 = 5.",
    "Focus on: Ana Lind. Question: What is the capital of France?",
    'UPPER CASE "QUOTED" words',
    "tabs\tand\nnewlines\n\n",
    "Unlearning methods mostly hide knowledge instead of erasing it.",
    "é accents ü and emoji 🙂",
    "<|im_start|>user\nWhere was Ana Lind born?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "a",
    " ",
    "Question:",
    "Answer: Lima",
    "Cy Moss was born in Kyoto.",
    "<|endoftext|>Question: x",
    "The cat sat on the mat. 7 - 4 = 3.",
    "Di Park writes poetry; Ed Vale writes plays.",
]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return write_tiny_gguf(folder / "tiny.gguf", seed=3)


@pytest.fixture(scope="module")
def hf_reference(tiny_gguf):
    """transformers' own reading of the file: the model and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(tiny_gguf.parent), gguf_file=tiny_gguf.name, attn_implementation="eager"
        ).eval()
    return model, tok


@pytest.fixture(scope="module")
def tiny_bridge(tiny_gguf):
    return load_model(tiny_gguf)


def test_gguf_spec_resolves_file_and_directory(tiny_gguf, tmp_path):
    assert resolve_model_spec(str(tiny_gguf)) == ("gguf", str(tiny_gguf))
    assert resolve_model_spec(str(tiny_gguf.parent)) == ("gguf", str(tiny_gguf))
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        resolve_model_spec(str(tmp_path))


def test_gguf_loads_runs_hooks_and_matches_transformers(tiny_bridge, hf_reference):
    hf, tok = hf_reference
    ids = torch.tensor([tok(PROMPTS[0]).input_ids])
    with torch.no_grad():
        ref = hf(ids).logits
        logits, cache = tiny_bridge.run_with_cache(ids)
    assert torch.allclose(logits, ref, atol=1e-5), (logits - ref).abs().max()
    assert cache["blocks.0.hook_resid_pre"].shape == (1, ids.shape[1], tiny_bridge.cfg.d_model)
    assert tiny_bridge.unpact_source["format"] == "gguf"
    assert tiny_bridge.unpact_source["file_type"] == "ALL_F32"


def test_gguf_saves_as_safetensors_with_the_same_logits_and_ids(tiny_bridge, hf_reference, tmp_path):
    hf, tok = hf_reference
    out = save_model(tiny_bridge, tmp_path / "saved")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    again = load_model(out)
    for prompt in PROMPTS:  # the GGUF tokenizer's ids, BOS policy included (it adds none)
        assert again.tokenizer(prompt).input_ids == tok(prompt).input_ids, prompt
        assert tiny_bridge.tokenizer(prompt).input_ids == tok(prompt).input_ids, prompt
    chat = [{"role": "user", "content": "Where was Ana Lind born?"}]
    assert again.tokenizer.apply_chat_template(chat, tokenize=False) == tok.apply_chat_template(chat, tokenize=False)
    ids = torch.tensor([tok(PROMPTS[10]).input_ids])
    with torch.no_grad():
        assert torch.allclose(again(ids, return_type="logits"), hf(ids).logits, atol=1e-5)
    assert model_info(again)["source_format"] == "hf"
    assert tok.chat_template == CHATML_TEMPLATE


def test_info_says_source_format_and_quantization(tiny_gguf, capsys):
    assert main(["info", str(tiny_gguf), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source_format"] == "gguf" and info["quantization"] == "ALL_F32"
    assert info["architecture"] == "LlamaForCausalLM" and info["n_layers"] == 2


def test_missing_package_is_one_line_exit_2(monkeypatch, capsys):
    fake = PackagedModel(
        "fake-model", "unpact_no_such_package", "m.gguf", "pip install unpact-no-such-package", "a test entry"
    )
    monkeypatch.setitem(PACKAGED_MODELS, "fake-model", fake)
    assert main(["info", "fake-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install unpact-no-such-package" in err[0], err


def test_unknown_name_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("nobody-org/no-such-model")
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------------ the real packaged model

REAL = "smollm2-135m"
HAVE_REAL = importlib.util.find_spec(PACKAGED_MODELS[REAL].package) is not None
needs_real = pytest.mark.skipif(not HAVE_REAL, reason=f"{REAL} not installed: {PACKAGED_MODELS[REAL].install}")


@pytest.fixture(scope="module")
def real_model():
    return load_model(REAL)


@needs_real
def test_short_name_resolves_to_the_packaged_file():
    kind, target = resolve_model_spec(REAL)
    assert kind == "gguf" and target.endswith(PACKAGED_MODELS[REAL].file) and os.path.isfile(target)


@needs_real
@pytest.mark.slow
def test_real_model_answers_and_generates_as_transformers(real_model):
    from unpact.data import resolve_format
    from unpact.scoring import greedy_generate

    fmt = resolve_format("chat", real_model.tokenizer, "You are a helpful assistant.")
    questions = [
        "What is the capital of France?",
        "What is the capital of Japan?",
        "Who wrote Hamlet?",
        "What is 2 plus 3?",
        "What color is the sky on a clear day?",
    ]
    prompts = [fmt.prompt(q) for q in questions]
    ours = greedy_generate(real_model, prompts, max_new_tokens=12, stop_at_newline=False)
    assert "Paris" in ours[0], ours[0]
    hf = real_model.original_model
    tok = real_model.tokenizer
    for prompt, answer in zip(prompts, ours):
        ids = torch.tensor([[tok.bos_token_id] + tok(prompt, add_special_tokens=False).input_ids])
        with torch.no_grad():
            out = hf.generate(
                ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
            )
        theirs = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert answer.strip() == theirs.strip(), (prompt, answer, theirs)


def test_lineage_of_a_run_on_a_gguf_original_is_noted_not_an_error(tiny_bridge, tiny_gguf, tmp_path):
    from unpact.checkpoints import lineage

    out = save_model(tiny_bridge, tmp_path / "unlearned")
    got = lineage(str(tiny_gguf), str(out))  # `unpact run --model x.gguf` records this for each method
    assert got["relative_distance"] is None and "not a safetensors checkpoint directory (gguf)" in got["note"]
