"""Logits only at the positions that are scored (issue 26, item 2).

* The same numbers as the full-logit computation: every registered quantity, hooks on, every
  split metric of :func:`unpact.metrics.evaluate`, the unlearning losses (NLL, NPO's sequence
  log-probs, the KL to the reference), IG's quantity, greedy answers, leave-one-out's shared-prefix
  scoring. "Full" is the same forward with ``unpact.bridge.output_head`` reporting no head, so that
  :func:`unpact.bridge.logits_at` computes the logits at every position (``[batch, pos, vocab]``)
  and picks the rows from them, or, independently, :func:`unpact.scoring.forward_logits` +
  :func:`unpact.scoring.token_logprobs` on the whole logits. Tolerance: 1e-5 absolute (float32
  log-probs; the unembedding of fewer rows may round differently in the last bit).
* The largest allocation of one evaluation batch, recorded op by op with a
  ``TorchDispatchMode`` (deterministic, unlike a process's RSS): logits have one row per scored
  token, so a 4x larger vocabulary costs less than the full-logit path did at 1x.

The models are real: the embedded GPT-2 and Llama, and tiny random checkpoints built here.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from unpact import bridge, load_model
from unpact.bridge import hf_model_of
from unpact.data import Benchmark, QAItem, load_benchmark
from unpact.data.formatting import format_answer, format_prompt
from unpact.emphasis.activation import ActivationEmphasis, emphasis_hooks
from unpact.emphasis.recovery import score_answers
from unpact.metrics import METRICS, SplitMetric, evaluate
from unpact.scoring import (
    QUANTITIES,
    answer_logprobs,
    answer_row_logits,
    answer_rows,
    answer_token_stats,
    encode_many,
    forward_logits,
    forward_rows,
    greedy_generate,
    pack,
    pad_id,
    reduce_logprobs,
    score_sequences,
    score_variants,
    scored_token_logprobs,
    token_logprobs,
    token_ranks,
)
from unpact.testing import make_tokenizer, tiny_config
from unpact.unlearning.base import answer_logprobs_of
from unpact.unlearning.losses import kl_rows_to_reference, kl_to_reference, nll, npo_loss, sequence_logprobs

TOL = 1e-5

PROMPTS = [
    "Question: Where was the author Ana Lind born?\nAnswer:",
    "Question: What is 2 + 3?\nAnswer:",
    "Question: Which genre does the writer Bo Reyes, born in a small town, mostly write in?\nAnswer:",
]
ANSWERS = [" Lima", " five, as everyone knows", " crime fiction"]


@pytest.fixture(scope="module", params=["embedded:gpt2", "embedded:llama"])
def model(request):
    return load_model(request.param)


@pytest.fixture
def full_logits():
    """A context in which every forward computes the logits at every position (no output head found)."""

    @contextmanager
    def ctx():
        with pytest.MonkeyPatch.context() as m:
            m.setattr(bridge, "output_head", lambda model: None)
            yield

    return ctx


def _packed(model, prompts=PROMPTS, answers=ANSWERS):
    seqs = encode_many(model, prompts, answers)
    return seqs, pack(seqs, pad_id(model.tokenizer))


def _close(a, b, path=""):
    """Recursively equal: floats within TOL (absolute, or relative for large values), the rest exactly."""
    if hasattr(a, "tolist") and not isinstance(a, (bool, int, float)):  # numpy arrays and scalars, tensors
        a, b = a.tolist(), b.tolist()
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{path}: {a} != {b}"
        else:
            assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_answer_row_logits_are_the_full_logits_at_the_predicting_positions(model):
    _, packed = _packed(model)
    full = forward_logits(model, packed.input_ids)
    b, t = answer_rows(packed.target_mask)
    rows = answer_row_logits(model, packed.input_ids, packed.target_mask)
    assert rows.shape == (int(packed.target_mask.sum()), full.shape[-1])
    assert (rows - full[b, t - 1]).abs().max() < TOL


@pytest.mark.parametrize("quantity", sorted(QUANTITIES))
def test_every_quantity_equals_the_full_logit_computation(model, quantity):
    seqs, packed = _packed(model)
    with torch.no_grad():
        logits = forward_logits(model, packed.input_ids)  # [batch, pos, vocab]
    want = reduce_logprobs(token_logprobs(logits, packed.input_ids, packed.target_mask), packed.target_mask, quantity)
    got = score_sequences(model, seqs, reduction=quantity)
    assert (got - want).abs().max() < TOL
    got_text = answer_logprobs(model, PROMPTS, ANSWERS, reduction=quantity, max_batch_tokens=40)  # several batches
    assert (got_text - want).abs().max() < TOL


def test_hooks_act_as_on_the_full_forward(model):
    """A hook on the residual stream and one on attention change the scored log-probs exactly as
    they change the full logits' (emphasis and attribution hook the same places)."""
    seqs, packed = _packed(model)

    def double(t, hook):
        return t * 2.0

    hooks = [("blocks.0.hook_resid_post", double), ("blocks.1.attn.hook_pattern", lambda t, hook: t * 0.5)]
    with torch.no_grad():
        full = forward_logits(model, packed.input_ids, hooks)
        plain = forward_logits(model, packed.input_ids)
        want = token_logprobs(full, packed.input_ids, packed.target_mask)
        got = scored_token_logprobs(model, packed.input_ids, packed.target_mask, hooks)
    assert (full - plain).abs().max() > 1e-3  # the hooks did act
    assert (got - want).abs().max() < TOL
    assert (score_sequences(model, seqs, fwd_hooks=hooks) - reduce_logprobs(want, packed.target_mask)).abs().max() < TOL


def test_gradients_through_the_scored_rows_equal_the_full_ones(model):
    """IG and the unlearning losses differentiate the scored log-probs: same gradients."""
    _, packed = _packed(model)
    store = {}

    def keep(t, hook):
        store["e"] = t
        return t

    grads = []
    for scored in (True, False):
        with torch.enable_grad():
            if scored:
                lp = scored_token_logprobs(model, packed.input_ids, packed.target_mask, [("hook_embed", keep)])
            else:
                logits = forward_logits(model, packed.input_ids, [("hook_embed", keep)])
                lp = token_logprobs(logits, packed.input_ids, packed.target_mask)
            (g,) = torch.autograd.grad(reduce_logprobs(lp, packed.target_mask).sum(), store["e"])
        grads.append(g)
    assert (grads[0] - grads[1]).abs().max() < TOL


def test_kl_to_the_reference_on_the_rows_equals_the_full_one(model):
    _, packed = _packed(model)
    with torch.no_grad():
        logits = forward_logits(model, packed.input_ids)
        rows = answer_row_logits(model, packed.input_ids, packed.target_mask)
    ref = (rows + 0.3 * torch.randn(rows.shape, generator=torch.Generator().manual_seed(0))).log_softmax(-1)
    assert float(kl_rows_to_reference(rows, ref)) == pytest.approx(
        float(kl_to_reference(logits, packed.target_mask, ref)), abs=TOL
    )


def test_unlearning_losses_equal_the_full_logit_computation(model):
    """The training forward (the wrapped HF model, with grad): NLL, NPO's summed log-probs and
    the gradients of the loss, from the answer rows vs from the whole logits."""
    _, packed = _packed(model)
    params = [p for p in hf_model_of(model).parameters() if p.requires_grad][:3]
    losses, grads = [], []
    for scored in (True, False):
        with torch.enable_grad():
            if scored:
                _, lp = answer_logprobs_of(model, packed)
            else:
                lp = token_logprobs(
                    forward_logits(hf_model_of(model), packed.input_ids), packed.input_ids, packed.target_mask
                )
            logp = sequence_logprobs(lp, packed.target_mask, "sum")
            loss = nll(lp, packed.target_mask) + npo_loss(logp, logp.detach() + 0.5, beta=0.1)
            grads.append(torch.autograd.grad(loss, params))
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(losses[1], abs=TOL)
    for a, b in zip(*grads):
        assert (a - b).abs().max() < TOL * max(1.0, float(b.abs().max()))


def test_emphasis_scoring_equals_the_full_logit_computation(model, full_logits):
    """Greedy answers and answer log-probs under activation emphasis (hooks at per-row keyword
    positions), as recovery and the attacks score them."""
    cfg_hooks = emphasis_hooks(model, ActivationEmphasis(kind="attention", factor=4.0), [[3, 4], [2], [5, 6, 7]])
    answers = ["Lima", "five", "crime fiction"]
    got = score_answers(model, PROMPTS, ANSWERS, answers, fwd_hooks=cfg_hooks)
    plain = score_answers(model, PROMPTS, ANSWERS, answers)
    with full_logits():
        want = score_answers(model, PROMPTS, ANSWERS, answers, fwd_hooks=cfg_hooks)
    _close(got, want)
    assert got["logprob"] != plain["logprob"]  # the emphasis did act


def test_token_stats_ranks_greedy_answers_and_shared_prefixes_equal_the_full_path(model, full_logits):
    seqs, _ = _packed(model)
    base = seqs[2][0]
    variants = [(base, seqs[2][1]), (base[:2] + base[3:], seqs[2][1]), (base[:5] + base[6:], seqs[2][1])]

    def run():
        stats = answer_token_stats(model, seqs)
        return {
            "stats": [
                [s.logprobs.tolist(), s.argmax.tolist(), s.vocab_mean.tolist(), s.vocab_var.tolist()] for s in stats
            ],
            "ranks": token_ranks(model, seqs).tolist(),
            "greedy": greedy_generate(model, PROMPTS, max_new_tokens=6),
            "greedy_uncached": greedy_generate(model, PROMPTS, max_new_tokens=6, cache=False),
            "variants": score_variants(model, [base], variants, [0, 0, 0], [len(base), 2, 5]).tolist(),
        }

    got = run()
    with full_logits():
        want = run()
    _close(got, want)


def _splits():
    """Splits on which, together, every registered split metric applies."""
    tofu = load_benchmark("embedded:tofu", "forget10")
    holdout = load_benchmark("embedded:tofu", "holdout10")
    knowmem = load_benchmark("embedded:muse", "knowmem_forget_qa")
    verbmem = load_benchmark("embedded:muse", "verbmem_forget")
    wmdp = load_benchmark("embedded:wmdp", "test")
    return [
        (Benchmark(tofu.name, tofu.split, tofu.items[:5]), {"holdout": holdout.items[:5], "reference": "self"}),
        (Benchmark(knowmem.name, knowmem.split, knowmem.items[:3]), {"icl": knowmem.items[3:5]}),
        (Benchmark(verbmem.name, verbmem.split, verbmem.items[:2]), {}),
        (Benchmark(wmdp.name, wmdp.split, wmdp.items[:4]), {}),
        (Benchmark(wmdp.name, wmdp.split, wmdp.items[:4]), {"mc_style": "letters"}),
    ]


def test_every_split_metric_equals_the_full_logit_computation(model, full_logits, monkeypatch):
    seen: set[str] = set()
    for name, m in list(METRICS.items()):

        def compute(x, out, _fn=m.compute, _name=name):
            seen.add(_name)
            return _fn(x, out)

        monkeypatch.setitem(METRICS, name, SplitMetric(name, m.applies, compute))

    def run():
        out = []
        for split, kw in _splits():
            kw = dict(kw)
            if kw.get("reference") == "self":
                kw["reference"] = model
            out.append(evaluate(model, split, **kw))
        return out

    got = run()
    assert seen == set(METRICS), f"metrics never computed: {set(METRICS) - seen}"
    with full_logits():
        want = run()
    _close(got, want)


# ------------------------------------------------------------------ memory


class LargestAllocation(TorchDispatchMode):
    """Records, op by op, the largest newly allocated output tensor (bytes) and the most rows of
    any such output whose last dimension is the vocabulary (a logits-like tensor: rows = numel /
    vocab). Views and in-place results (outputs sharing an input's storage) are not allocations."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.bytes = 0
        self.logit_rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            x.untyped_storage().data_ptr() for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)
        }
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.untyped_storage().data_ptr() not in inputs:
                self.bytes = max(self.bytes, t.numel() * t.element_size())
                if t.shape[-1] == self.vocab:
                    self.logit_rows = max(self.logit_rows, t.numel() // self.vocab)
        return out


def _vocab_checkpoint(root, vocab: int):
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    config = tiny_config("llama", vocab_size=vocab, n_ctx=256)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(str(root), safe_serialization=True)
    tok.save_pretrained(str(root))
    return load_model(str(root))


def test_peak_of_one_evaluation_batch_does_not_grow_with_batch_pos_vocab(tmp_path, full_logits):
    """Two random Llamas that differ only in the vocabulary (2048 and 4x: 8192 tokens). One
    evaluation batch (greedy answers, answer probabilities with perturbed answers, token stats):
    its largest logits tensor has one row per scored token at either vocabulary, so the 4x
    vocabulary's largest allocation stays below the full-logit path's at 1x."""
    context = "Context: the archive lists every author, the town of birth, the genre and the year. " * 2
    items = [
        QAItem(f"{context}Where was author {i} born?", "Lima", perturbed_answers=("Oslo", "Rome"), id=str(i))
        for i in range(12)
    ]
    split = Benchmark("demo", "forget10", items)
    metrics = ["rouge_l_recall", "probability", "exact_memorization"]
    peaks = {}
    for vocab in (2048, 8192):
        model = _vocab_checkpoint(tmp_path / str(vocab), vocab)
        for path in ("scored", "full"):
            rec = LargestAllocation(vocab)
            with full_logits() if path == "full" else nullcontext(), rec, torch.no_grad():
                evaluate(model, split, metrics=metrics, max_new_tokens=4)
            peaks[vocab, path] = rec
    prompts = [format_prompt(it) for it in items]
    seqs = encode_many(model, prompts, [format_answer(it.answer) for it in items])
    tokens = sum(len(p) + len(a) for p, a in seqs)
    # every answer scored in one batch: the answer, its paraphrase (the answer again) and the perturbed ones
    answer_tokens = sum(
        len(a)
        for it in items
        for _, a in encode_many(
            model, [prompts[0]] * 4, [format_answer(a) for a in (it.answer, it.answer, *it.perturbed_answers)]
        )
    )
    scored_rows = peaks[8192, "scored"].logit_rows
    assert scored_rows == peaks[2048, "scored"].logit_rows  # the same positions at either vocabulary
    assert scored_rows <= answer_tokens < tokens / 4  # one row per scored token ...
    assert peaks[2048, "full"].logit_rows >= tokens  # ... where the full path unembeds every position
    # with 4x the vocabulary, the largest allocation stays below the full-logit path's at 1x and
    # grows far less than the vocabulary (here the attention scores are the largest: 1.0x)
    assert peaks[8192, "scored"].bytes < peaks[2048, "full"].bytes / 2
    assert peaks[8192, "scored"].bytes < 2 * peaks[2048, "scored"].bytes
    assert peaks[8192, "scored"].bytes < peaks[8192, "full"].bytes / 8


def test_forward_rows_with_no_rows_runs_the_hooks_and_unembeds_nothing(model):
    _, packed = _packed(model)
    store = {}

    def keep(t, hook):
        store["h"] = t
        return t

    none = torch.zeros(0, dtype=torch.long)
    rec = LargestAllocation(model.cfg.d_vocab)
    with rec, torch.no_grad():
        out = forward_rows(model, packed.input_ids, none, none, [("blocks.0.hook_resid_post", keep)])
    assert out.shape == (0, model.cfg.d_vocab)
    assert store["h"].shape[:2] == packed.input_ids.shape
    assert rec.logit_rows == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox", "phi"])
def test_a_prefix_every_prompt_shares_runs_once_with_the_same_scores(tiny_dirs, arch):
    """Without hooks, prompts that begin with the same long prefix (a chat template and its system
    prompt) run it once and each row only its own tokens: the same log-probs as whole rows, with
    fewer tokens through the model; a short shared prefix (the plain format's) keeps whole rows."""
    from unpact.scoring import SHARED_PREFIX_MIN_TOKENS, shared_prefix_length

    model = load_model(tiny_dirs[arch])
    preamble = list(range(3, 3 + SHARED_PREFIX_MIN_TOKENS + 12))
    seqs = [
        ([0, *preamble, 40 + i, 41 + 2 * i, 42][: 4 + len(preamble) - (i % 2)], [50 + i, 51, 52 + i][: 1 + i % 3])
        for i in range(7)
    ]
    assert shared_prefix_length(seqs) == len(preamble) + 1
    for reduction in ("mean", "sum"):
        with _TokensEmbedded() as whole_count:
            whole = score_sequences(model, seqs, reduction=reduction, shared_prefix=False)
        with _TokensEmbedded() as shared_count:
            shared = score_sequences(model, seqs, reduction=reduction)
        torch.testing.assert_close(shared, whole, atol=TOL, rtol=0)
        assert 0 < shared_count.n < whole_count.n / 2, (shared_count.n, whole_count.n)
    short = [([0, 3, 4, 40 + i], [50 + i]) for i in range(4)]
    with _TokensEmbedded() as short_whole:
        score_sequences(model, short, shared_prefix=False)
    with _TokensEmbedded() as short_default:
        score_sequences(model, short)
    assert short_default.n == short_whole.n  # whole rows


class _TokensEmbedded(TorchDispatchMode):
    """Counts the token ids looked up in any embedding table while active."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.embedding.default:
            self.n += args[1].numel()
        return func(*args, **(kwargs or {}))
