"""Tokenizer and model training for the embedded models (the build, not the unlearning loop).

A byte-level BPE tokenizer is trained with ``tokenizers`` on the world's text;
each model is a HF causal LM (GPT-2, Llama or Qwen2 style) trained from scratch
with a plain PyTorch loop: AdamW, a one-cycle schedule with warm-up, gradient
clipping, length-bucketed right-padded batches (no attention mask, as in
:mod:`unpact.scoring`). A sequence is ``[BOS] + prompt + answer + [EOS]``,
tokenised by :func:`unpact.scoring.encode_pair`, so the models see exactly what
scoring feeds them; prompt tokens are weighted less than answer tokens.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> tok = train_tokenizer(["Question: Where was Ana Lind born?\\nAnswer: Lima"], vocab_size=300)
    >>> cfg = model_config("llama", len(tok), ModelSize.tiny())            # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unpact.errors import TrainingError
from unpact.progress import ProgressFactory, null_progress
from unpact.scoring import encode_pair, tokenize

#: Architectures the embedded build trains (name -> HF model type).
ARCHITECTURES = ("gpt2", "llama", "qwen2")
BOS = "<|endoftext|>"
PAD = "<pad>"


def train_tokenizer(texts: Sequence[str], vocab_size: int = 2048):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``.

    ``<|endoftext|>`` is BOS and EOS (id 0); ``<pad>`` is padding (id 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=BOS,
        pad_token=PAD,
        model_max_length=1024,
    )


@dataclass
class ModelSize:
    """Shape of an embedded model (the defaults are the shipped build)."""

    n_layers: int = 4
    d_model: int = 160
    n_heads: int = 4
    n_ctx: int = 256

    @classmethod
    def tiny(cls) -> ModelSize:
        return cls(n_layers=2, d_model=32, n_heads=4, n_ctx=256)


@dataclass
class TrainConfig:
    """Hyperparameters of the build's training loop (the defaults are the shipped build)."""

    epochs: int = 10  # second edition: 2.6x the examples per epoch of the first (20 epochs)
    batch_size: int = 32
    lr: float = 2e-3
    warmup: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    prompt_weight: float = 0.25  # loss weight of prompt tokens (answer and text tokens weigh 1)
    threads: int = 1
    seed: int = 0

    @classmethod
    def tiny(cls) -> TrainConfig:
        return cls(epochs=2, batch_size=8, threads=1)


def model_config(arch: str, vocab_size: int, size: ModelSize):
    """HF config of an embedded model of architecture ``arch`` (one of :data:`ARCHITECTURES`)."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    d = size.d_model
    if arch == "gpt2":
        return GPT2Config(
            n_positions=size.n_ctx,
            n_embd=d,
            n_layer=size.n_layers,
            n_head=size.n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if arch == "llama":
        return LlamaConfig(
            hidden_size=d,
            intermediate_size=int(8 * d / 3) // 8 * 8,
            num_hidden_layers=size.n_layers,
            num_attention_heads=size.n_heads,
            num_key_value_heads=size.n_heads,
            max_position_embeddings=size.n_ctx,
            tie_word_embeddings=False,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=d,
            intermediate_size=int(8 * d / 3) // 8 * 8,
            num_hidden_layers=size.n_layers,
            num_attention_heads=size.n_heads,
            num_key_value_heads=max(1, size.n_heads // 2),
            max_position_embeddings=size.n_ctx,
            tie_word_embeddings=True,
            **common,
        )
    raise ValueError(f"unknown embedded architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


def encode_examples(tokenizer, examples) -> list[tuple[list[int], list[float]]]:
    """Token ids and per-target loss weights of each training example.

    A prompt/answer example becomes ``[BOS] + prompt + answer + [EOS]`` (prompt
    targets weighted by the caller later); a plain text ``[BOS] + text + [EOS]``.
    Returns ``(ids, is_answer)`` with ``is_answer[t]`` for the token at ``t``.
    """
    eos = tokenizer.eos_token_id
    out = []
    for e in examples:
        if e.prompt:
            p, a = encode_pair(tokenizer, e.prompt, e.target)
        else:
            p, a = [tokenizer.bos_token_id], tokenize(tokenizer, e.target)
        ids = p + a + [eos]
        out.append((ids, [0.0] * len(p) + [1.0] * (len(a) + 1)))
    return out


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 16
    batches = []
    for s in range(0, len(order), mega):
        group = sorted(order[s : s + mega], key=lambda i: lengths[i])
        batches.extend(group[j : j + batch_size] for j in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def _check_fits_context(data: list[tuple[list[int], list[float]]], n_ctx: int) -> None:
    """Raise :class:`TrainingError` if a training sequence is longer than the context ``n_ctx``."""
    too_long = [len(ids) for ids, _ in data if len(ids) > n_ctx]
    if too_long:
        raise TrainingError(
            f"{len(too_long)} training sequences are longer than the context (n_ctx={n_ctx}, "
            f"longest {max(too_long)} tokens); raise ModelSize.n_ctx or the tokenizer's vocabulary size"
        )


def _optimizer_and_schedule(model, cfg: TrainConfig, total: int):
    """AdamW (weight decay on the matrices only) and its one-cycle schedule over ``total`` steps."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup, anneal_strategy="cos"
    )
    return optimizer, schedule


def _padded_batch(
    data: list[tuple[list[int], list[float]]], lengths: list[int], batch: list[int], pad: int, prompt_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids of the examples ``batch``, right-padded with ``pad``, and each token's loss weight."""
    width = max(lengths[i] for i in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    weights = torch.zeros((len(batch), width))
    for row, i in enumerate(batch):
        seq, answer_mask = data[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        weights[row, : len(seq)] = torch.tensor([1.0 if is_answer else prompt_weight for is_answer in answer_mask])
    return ids, weights


def _weighted_loss(model, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean next-token cross-entropy of ``model`` on ``ids``."""
    logits = model(input_ids=ids).logits[:, :-1]
    targets, target_weights = ids[:, 1:], weights[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
    ).view_as(target_weights)
    return (nll * target_weights).sum() / target_weights.sum()


def train_model(
    arch: str,
    tokenizer,
    examples,
    size: ModelSize | None = None,
    config: TrainConfig | None = None,
    progress: ProgressFactory = null_progress,
    desc: str | None = None,
):
    """Train a fresh ``arch`` model on ``examples``; returns the HF model (float32, eval mode).

    Deterministic for a given seed and thread count on one machine.
    """
    from transformers import AutoModelForCausalLM

    size = size or ModelSize()
    cfg = config or TrainConfig()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        model = AutoModelForCausalLM.from_config(model_config(arch, len(tokenizer), size))
        model.train()
        data = encode_examples(tokenizer, examples)
        _check_fits_context(data, size.n_ctx)
        lengths = [len(ids) for ids, _ in data]
        steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        opt, sched = _optimizer_and_schedule(model, cfg, total)
        pad = tokenizer.pad_token_id
        with progress(total=total, desc=desc or f"train {arch}") as bar:
            for _ in range(cfg.epochs):
                for batch in _batches(lengths, cfg.batch_size, rng):
                    ids, weights = _padded_batch(data, lengths, batch, pad, cfg.prompt_weight)
                    loss = _weighted_loss(model, ids, weights)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    bar.update()
                    if hasattr(bar, "set_postfix_str"):
                        bar.set_postfix_str(f"loss {loss.item():.3f}")
        model.eval()
        return model
    finally:
        torch.set_num_threads(old_threads)
