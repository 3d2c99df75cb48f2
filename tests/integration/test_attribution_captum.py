"""unpact's attribution against captum on the same HF model and prompt (captum is a test extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from unpact import scoring  # noqa: E402
from unpact.attribution import attribute  # noqa: E402
from unpact.data import QAItem  # noqa: E402

ITEM = QAItem("Where was the author Ana Lind born?", "crime fiction", id="ana")


@pytest.fixture(scope="module")
def hf_gpt2(tiny_dirs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"], attn_implementation="eager").eval()


def _captum_input(model, res, baseline_id):
    """captum's text input for the same tokens as unpact: BOS + prompt, BOS kept fixed."""
    from captum.attr import TextTokenInput

    tok = model.tokenizer
    adds_bos = tok.encode(res.prompt)[:1] == [tok.bos_token_id]
    text = res.prompt if adds_bos else tok.bos_token + res.prompt
    inp = TextTokenInput(text, tok, baselines=baseline_id, skip_tokens=[tok.bos_token_id])
    assert inp.inp_tensor[0].tolist() == res.token_ids  # same tokens as unpact
    return inp


def test_loo_baseline_mode_matches_captum_feature_ablation(tiny_gpt2, hf_gpt2):
    from captum.attr import FeatureAblation, LLMAttribution

    res = attribute(
        tiny_gpt2, ITEM, method="loo", mode="baseline", baseline="pad", skip_special=False
    )  # every token, as captum
    bid = res.options["baseline_id"]
    llm = LLMAttribution(FeatureAblation(hf_gpt2), tiny_gpt2.tokenizer)
    ours = np.array(res.scores[1:])
    assert len(res.answer_ids) > 1
    assert np.abs(ours).max() > 1e-3  # not trivially zero
    # captum's token-by-token forward (without its KV-cache path, which on transformers 5
    # drifts ~1e-3 from its own uncached result) and its one-pass sequence forward
    for kwargs in ({"use_cached_outputs": False}, {"forward_in_tokens": False}):
        out = llm.attribute(_captum_input(tiny_gpt2, res, bid), target=res.answer, **kwargs)
        # captum attributes the answer's summed log-prob; unpact the mean over answer tokens
        theirs = out.seq_attr.detach().numpy() / len(res.answer_ids)
        assert np.abs(ours - theirs).max() <= 1e-4, kwargs


def test_integrated_gradients_matches_captum_layer_ig(tiny_gpt2, hf_gpt2):
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution

    steps = 64
    res = attribute(
        tiny_gpt2,
        ITEM,
        method="integrated_gradients",
        steps=steps,
        max_passes=steps,
        baseline="pad",
        rule="gausslegendre",
        warp=1.0,
        skip_special=False,  # every token after BOS, as captum with skip_tokens=[BOS]
    )
    bid = res.options["baseline_id"]
    lig = LayerIntegratedGradients(hf_gpt2, hf_gpt2.get_input_embeddings())
    llm = LLMGradientAttribution(lig, tiny_gpt2.tokenizer)
    out = llm.attribute(_captum_input(tiny_gpt2, res, bid), target=res.answer, n_steps=steps, method="gausslegendre")
    theirs = out.seq_attr.detach().numpy() / len(res.answer_ids)
    ours = np.array(res.scores[1:])
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel <= 1e-3, rel
    # and captum's own completeness matches unpact's LP difference
    assert abs(theirs.sum() - (res.lp - res.extras["lp_baseline"])) <= 0.05 * abs(res.lp - res.extras["lp_baseline"])


def test_same_lp_as_hf(tiny_gpt2, hf_gpt2):
    res = attribute(tiny_gpt2, ITEM, method="loo")
    ids = torch.tensor([res.token_ids + res.answer_ids])
    with torch.no_grad():
        logits = hf_gpt2(ids).logits
    n = len(res.token_ids)
    lp = logits[0, n - 1 : -1].log_softmax(-1).gather(-1, ids[0, n:, None]).mean()
    assert abs(float(lp) - res.lp) <= 1e-5
    assert scoring.pad_id(tiny_gpt2.tokenizer) == res.options.get("baseline_id", scoring.pad_id(tiny_gpt2.tokenizer))
