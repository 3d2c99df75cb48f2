"""load_model / save_model on tiny real checkpoints of five architectures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from unpact import load_model, model_info, save_model
from unpact.errors import ModelLoadError
from unpact.testing import TINY_ARCHITECTURES

HOOKS = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "hook_embed"]


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_boot_hooks_and_round_trip(arch, tiny_dirs, tmp_path):
    model = load_model(tiny_dirs[arch])
    toks = model.to_tokens("Question: Where was Ana Lind born?")
    logits, cache = model.run_with_cache(toks)
    for name in HOOKS:
        assert name in cache, f"{arch}: hook {name} missing"
    assert cache["blocks.0.attn.hook_pattern"].shape[1] == model.cfg.n_heads

    out = save_model(model, tmp_path / "copy")
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    again = load_model(out)
    with torch.no_grad():
        diff = (again(toks) - logits).abs().max().item()
    assert diff <= 1e-5


def _gradient_step(model, toks) -> torch.Tensor:
    """One in-place gradient step on every parameter of the bridge; returns the new logits."""
    model(toks, return_type="loss").backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-1.0)
                p.grad = None
        return model(toks)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_saved_weights_are_the_edited_ones(arch, tiny_dirs, tmp_path):
    """A gradient step on the bridge's parameters (split q/k/v views included) is what gets saved."""
    model = load_model(tiny_dirs[arch])
    toks = model.to_tokens("The quick brown fox jumps over the lazy dog.")
    with torch.no_grad():
        before = model(toks)
    after = _gradient_step(model, toks)
    assert (after - before).abs().max() > 1e-3
    again = load_model(save_model(model, tmp_path / "edited"))
    with torch.no_grad():
        assert (again(toks) - after).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_plain_hf_twin_shares_the_bridges_weights(arch, tiny_dirs):
    """plain_hf_model: same logits as the bridge, no weight copies, and an in-place edit
    of the bridge (split q/k/v views included) is seen by a twin built afterwards. GPT-NeoX's
    bridge computes with split q/k/v *copies*: a twin built before the edit does not see it
    (the sync happens when a twin is built or the model saved)."""
    from unpact.models import hf_state_dict, plain_hf_model

    model = load_model(tiny_dirs[arch])
    toks = model.to_tokens("The quick brown fox jumps over the lazy dog.")
    twin = plain_hf_model(model)
    ptrs = {t.data_ptr() for t in hf_state_dict(model).values()}
    assert all(p.data_ptr() in ptrs for p in twin.parameters())
    with torch.no_grad():
        assert (twin(input_ids=toks).logits - model(toks)).abs().max().item() <= 1e-5
    after = _gradient_step(model, toks)
    with torch.no_grad():
        stale = (after - twin(input_ids=toks).logits).abs().max().item()
        if arch == "gpt_neox":
            assert stale > 1e-4  # the twin built before the edit holds the unsynced fused weight
        else:
            assert stale <= 1e-5  # shared tensors: the earlier twin sees the edit too
        assert (plain_hf_model(model)(input_ids=toks).logits - after).abs().max().item() <= 1e-5


def test_save_writes_each_tensor_once(tiny_dirs, tmp_path):
    from safetensors import safe_open

    model = load_model(tiny_dirs["qwen2"])  # tied embeddings
    out = save_model(model, tmp_path / "q")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("_original_component" in k for k in keys)
    assert "lm_head.weight" not in keys
    assert "model.embed_tokens.weight" in keys


def test_model_info(tiny_gpt2, tiny_dirs):
    from transformers import AutoModelForCausalLM

    info = model_info(tiny_gpt2)
    assert info["architecture"] == "GPT2LMHeadModel"
    assert (info["n_layers"], info["n_heads"], info["d_model"], info["n_ctx"]) == (2, 4, 32, 128)
    assert info["d_vocab"] == tiny_gpt2.cfg.d_vocab
    plain = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    assert info["n_params"] == plain.num_parameters()  # tied embedding counted once


def test_missing_directory():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("./no/such/checkpoint")


def test_directory_without_config(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_directory_without_tokenizer(tiny_dirs, tmp_path):
    import shutil

    d = tmp_path / "notok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_dirs['gpt2']}/{f}", d / f)
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_model(str(d))


def test_unknown_embedded_name():
    with pytest.raises(ModelLoadError, match="unknown embedded model 'embedded:nope'"):
        load_model("embedded:nope")


def test_unknown_dtype(tiny_dirs):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(tiny_dirs["gpt2"], dtype="float7")


def test_cli_info(tiny_dirs):
    out = subprocess.run(
        [sys.executable, "-m", "unpact.cli", "info", tiny_dirs["llama"], "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["architecture"] == "LlamaForCausalLM" and info["n_layers"] == 2


def test_cli_info_bad_path_is_one_line_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "unpact.cli", "info", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unpact: error:") and "does not exist" in lines[0]


def test_namespaced_subpackages_import():
    out = subprocess.run(
        [sys.executable, "-c", "import unpact.hooks, unpact.analyses; print(unpact.hooks.__name__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "unpact.hooks"
    with pytest.raises(ModuleNotFoundError):
        __import__("hooks.nonexistent")


def test_generic_tokenizer_is_loaded_as_saved(tiny_dirs, tmp_path):
    """A tokenizers-built tokenizer on a qwen2 checkpoint is not replaced by Qwen2Tokenizer."""
    import json
    import shutil

    from unpact.testing import make_tiny_checkpoint

    d = make_tiny_checkpoint("qwen2", tmp_path / "q", corpus=["born in 1947 and 1961", "Question: 1947?"] * 5)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg.get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast")
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(d / "tokenizer.json")).encode(" 1947", add_special_tokens=False).ids
    model = load_model(d)
    assert model.tokenizer(" 1947", add_special_tokens=False)["input_ids"] == raw
    assert model.to_tokens(" 1947", prepend_bos=False)[0].tolist() == raw
    shutil.rmtree(d)
