"""The one place that computes answer log-probs (teacher forcing) and greedy answers.

Attribution, metrics, emphasis and the unlearning losses all score a prompt x
and an answer y the same way:

    LP(x, y) = 1/|y| * sum_k log p(y_k | x, y_<k)

Conventions, shared by everything in unpact:

* the sequence is ``[BOS] + tokens(prompt) + tokens(answer)``, prompt and answer
  tokenised separately (so the prompt's tokens, and so the positions attribution
  talks about, do not depend on the answer); BOS is prepended when the tokenizer
  has one;
* batches are **right-padded**. With causal attention a position never sees
  the padding to its right, so every row's logits equal its unpadded logits and
  every row keeps absolute positions 0..n-1: a hook that acts on "position 5"
  acts on the same token whatever the batch. No attention mask is needed and
  none is passed (so hooks see exactly the unpadded computation);
* batches are chunked to a token budget (``max_batch_tokens``);
* logits are computed only at the positions that are scored (:func:`answer_rows`,
  :func:`answer_row_logits`): ``[n answer tokens, vocab]``, never
  ``[batch, pos, vocab]``, so memory does not grow with the vocabulary times the batch.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> lp = answer_logprobs(model, ["Question: Where was Ana Lind born?\\nAnswer:"], [" Lima"])  # doctest: +SKIP
    >>> lp.shape                                                  # doctest: +SKIP
    torch.Size([1])
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from unpact.bridge import (  # noqa: F401 (re-exported: callers import the tokenizer helpers from here)
    DEFAULT_MAX_BATCH_TOKENS,
    BatchHooks,
    HookList,
    bos_id,
    chunks,
    context_length,
    forward_logits,
    forward_rows,
    hooks_for,
    logits_at,
    pad_id,
    plain_hf_model,
    stop_ids,
    tokenize,
)
from unpact.errors import InputError, ModelLoadError
from unpact.generation import greedy_tokens
from unpact.protocols import Model
from unpact.registry import Registry

#: length of greedy answers (evaluation, emphasis, attacks): the embedded answers are <= 12 tokens and
#: TOFU's short answers fit too; one default for every caller that does not choose its own
DEFAULT_MAX_NEW_TOKENS = 20


def encode_pair(
    tokenizer, prompt: str, answer: str, *, prepend_bos: bool = True, name: str | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, answer_ids)``: BOS + prompt tokens, and the answer's tokens.

    Raises :class:`InputError` naming the item for an empty prompt, an empty answer
    or an answer that tokenises to nothing.
    """
    label = f"item {name!r}" if name is not None else "item"
    if not prompt or not prompt.strip():
        raise InputError(f"{label}: the prompt is empty; give a non-empty prompt")
    if not answer or not answer.strip():
        raise InputError(f"{label}: the answer is empty; give a non-empty answer")
    p = tokenize(tokenizer, prompt)
    b = bos_id(tokenizer)
    if prepend_bos and b is not None:
        p = [int(b)] + p
    a = tokenize(tokenizer, answer)
    if not a:
        raise InputError(f"{label}: the answer {answer!r} tokenises to no tokens")
    return p, a


def check_length(model: Model, n_tokens: int, name: str | None = None, what: str = "prompt plus answer") -> None:
    """Raise :class:`InputError` when ``n_tokens`` exceeds the model's context."""
    n_ctx = context_length(model)
    if n_ctx is not None and n_tokens > n_ctx:
        label = f"item {name!r}" if name is not None else "item"
        raise InputError(
            f"{label}: {what} is {n_tokens} tokens, {n_tokens - n_ctx} more than the model's "
            f"context of {n_ctx}; shorten it or pass truncate=True"
        )


def truncate_pair(
    prompt_ids: list[int], answer_ids: list[int], n_ctx: int, has_bos: bool = True
) -> tuple[list[int], list[int]]:
    """Drop prompt tokens from the left (after BOS, when ``has_bos``) until prompt + answer fit ``n_ctx``.

    Example:
        >>> truncate_pair([0, 5, 6, 7], [9], 3)
        ([0, 7], [9])
        >>> truncate_pair([5, 6, 7], [9], 3, has_bos=False)
        ([6, 7], [9])
    """
    excess = len(prompt_ids) + len(answer_ids) - n_ctx
    if excess <= 0:
        return prompt_ids, answer_ids
    keep = 1 if has_bos else 0
    if excess >= len(prompt_ids) - keep:
        raise InputError(f"the answer alone ({len(answer_ids)} tokens) does not fit the context of {n_ctx}")
    return prompt_ids[:keep] + prompt_ids[keep + excess :], answer_ids


@dataclass
class Packed:
    """Right-padded sequences with a mask of the scored (answer) positions."""

    input_ids: Int[Tensor, "batch pos"]
    target_mask: Bool[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]

    def to(self, device) -> Packed:
        return Packed(self.input_ids.to(device), self.target_mask.to(device), self.lengths.to(device))


def pack(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int) -> Packed:
    """Right-pad ``(prompt_ids, answer_ids)`` pairs; ``target_mask`` marks answer tokens."""
    n = len(sequences)
    width = max(len(p) + len(a) for p, a in sequences)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    lengths = torch.empty(n, dtype=torch.long)
    for i, (p, a) in enumerate(sequences):
        row = list(p) + list(a)
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, len(p) : len(row)] = True
        lengths[i] = len(row)
    return Packed(ids, mask, lengths)


def answer_rows(target_mask: Bool[Tensor, "batch pos"]) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
    """``(row, position)`` of every scored target token, row-major (item by item, left to right).

    A target at position ``t`` is predicted by the logits at ``t - 1``; a target at position 0
    has nothing before it and is not scored.

    Example:
        >>> answer_rows(torch.tensor([[False, True, True], [True, False, True]]))
        (tensor([0, 0, 1]), tensor([1, 2, 2]))
    """
    tgt = target_mask.clone()
    tgt[:, 0] = False
    return tgt.nonzero(as_tuple=True)


def answer_row_logits(
    model: Model,
    input_ids: Int[Tensor, "batch pos"],
    target_mask: Bool[Tensor, "batch pos"],
    fwd_hooks: HookList | None = None,
) -> Float[Tensor, "n vocab"]:
    """The logits that predict the scored target tokens, one row per :func:`answer_rows` entry:
    the unembedding runs only at those positions (:func:`unpact.bridge.forward_rows`)."""
    b_idx, t_idx = answer_rows(target_mask)
    return forward_rows(model, input_ids, b_idx, t_idx - 1, fwd_hooks)


def row_logprobs(
    row_logits: Float[Tensor, "n vocab"],
    input_ids: Int[Tensor, "batch pos"],
    target_mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos"]:
    """log p(token_t | tokens_<t) at every target position t (0 elsewhere), from the logits
    at the positions that predict the targets (``row_logits``, in :func:`answer_rows` order).

    Only those rows are normalised: O(answer tokens x vocab) memory and work.
    """
    b_idx, t_idx = answer_rows(target_mask)
    if b_idx.numel() != row_logits.shape[0]:
        raise ValueError(f"{row_logits.shape[0]} logit rows for {b_idx.numel()} scored targets")
    out = torch.zeros(input_ids.shape, dtype=row_logits.dtype, device=row_logits.device)
    if b_idx.numel() == 0:
        return out
    pred = row_logits.float().log_softmax(-1)
    lp = pred.gather(-1, input_ids[b_idx, t_idx].unsqueeze(-1)).squeeze(-1)
    return out.to(lp.dtype).index_put((b_idx, t_idx), lp)


def scored_token_logprobs(
    model: Model,
    input_ids: Int[Tensor, "batch pos"],
    target_mask: Bool[Tensor, "batch pos"],
    fwd_hooks: HookList | None = None,
) -> Float[Tensor, "batch pos"]:
    """log p(token_t | tokens_<t) at every target position t (0 elsewhere) of one forward of
    ``model`` (with ``fwd_hooks``), the logits computed only where a target is predicted:
    :func:`token_logprobs` of the full logits, without the ``[batch, pos, vocab]`` tensor."""
    return row_logprobs(answer_row_logits(model, input_ids, target_mask, fwd_hooks), input_ids, target_mask)


def token_logprobs(
    logits: Float[Tensor, "batch kept vocab"],
    input_ids: Int[Tensor, "batch pos"],
    target_mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos"]:
    """log p(token_t | tokens_<t) at every target position t (0 elsewhere), from logits
    already computed at every position (or the last ``kept``, see :func:`answer_window`;
    they must include every position that predicts a target).

    The scoring paths of unpact never build such logits: they call
    :func:`scored_token_logprobs`, which gives the same numbers from the predicting rows only.
    """
    offset = input_ids.shape[1] - logits.shape[1]
    b_idx, t_idx = answer_rows(target_mask)
    if b_idx.numel() and int(t_idx.min()) - 1 < offset:
        raise ValueError(f"logits cover positions >= {offset} but a target is predicted at {int(t_idx.min()) - 1}")
    return row_logprobs(logits[b_idx, t_idx - 1 - offset], input_ids, target_mask)


def answer_window(target_mask: Bool[Tensor, "batch pos"]) -> int:
    """How many trailing positions hold every logit that predicts a target (``logits_to_keep``)."""
    cols = target_mask.any(0).nonzero()
    if cols.numel() == 0:
        return 1
    return target_mask.shape[1] - max(int(cols.min()) - 1, 0)


#: A scored quantity of an answer: ``fn(token log-probs [batch pos], target mask [batch pos]) -> [batch]``.
Quantity = Callable[[Float[Tensor, "batch pos"], Bool[Tensor, "batch pos"]], Float[Tensor, " batch"]]

#: The quantities an answer is scored (and attributed) by, by name (the ``reduction`` of every
#: scoring function; the ``quantity`` of every attribution method): add one with
#: :func:`register_quantity` (inseq's step functions are the model).
QUANTITIES: Registry[Quantity] = Registry("quantity")


def register_quantity(name: str) -> Callable[[Quantity], Quantity]:
    """Register ``fn(tok_lp, target_mask) -> [batch]`` as quantity ``name`` (a decorator)."""

    def deco(fn: Quantity) -> Quantity:
        return QUANTITIES.add(name, fn)

    return deco


def get_quantity(name: str) -> Quantity:
    """The registered quantity ``name``; an unknown name is a :class:`ConfigError` listing the known ones.

    Example:
        >>> get_quantity("mean")(torch.tensor([[0.0, -1.0, -3.0]]), torch.tensor([[False, True, True]]))
        tensor([-2.])
        >>> get_quantity("median")
        Traceback (most recent call last):
        unpact.errors.ConfigError: unknown quantity 'median'; known: mean, sum
    """
    return QUANTITIES.get(name)


@register_quantity("mean")
def mean_logprob(tok_lp: Float[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    """LP(x, y): the mean log-prob of the answer tokens (the paper's attributed quantity)."""
    return (tok_lp * target_mask).sum(-1) / target_mask.sum(-1).clamp(min=1)


@register_quantity("sum")
def sum_logprob(tok_lp: Float[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    """The answer's log-likelihood: the summed log-prob of its tokens."""
    return (tok_lp * target_mask).sum(-1)


def reduce_logprobs(
    tok_lp: Float[Tensor, "batch pos"], target_mask: Bool[Tensor, "batch pos"], reduction: str = "mean"
) -> Float[Tensor, " batch"]:
    """The quantity ``reduction`` (a name in :data:`QUANTITIES`: ``"mean"`` or ``"sum"`` of the
    target log-probs) of each row."""
    return get_quantity(reduction)(tok_lp, target_mask)


#: The fewest tokens every prompt of a hook-free, gradient-free :func:`score_sequences` call must
#: share from the start for that prefix to run once for all of them (:func:`score_variants`): a chat
#: template with a system prompt qualifies (SmolLM2's: 14 tokens before the user's question), the
#: plain format's BOS and ``Question:`` (at most 4 tokens) do not and keep whole rows, and with them
#: the embedded studies' exact numbers.
SHARED_PREFIX_MIN_TOKENS = 8


def shared_prefix_length(sequences: Sequence[tuple[Sequence[int], Sequence[int]]]) -> int:
    """How many leading tokens every prompt of ``sequences`` has in common.

    Example:
        >>> shared_prefix_length([([0, 5, 6, 7], [9]), ([0, 5, 6, 8], [9]), ([0, 5, 1], [2])])
        2
    """
    return len(os.path.commonprefix([list(p) for p, _ in sequences]))


def score_sequences(
    model: Model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    reduction: str = "mean",
    fwd_hooks: BatchHooks = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    grad: bool = False,
    shared_prefix: bool = True,
) -> Float[Tensor, " n"]:
    """Answer log-prob of already-tokenised ``(prompt_ids, answer_ids)`` pairs, batched.

    Returns one value per pair in input order (mean over answer tokens by default). Without hooks
    or gradients, prompts that all begin with the same :data:`SHARED_PREFIX_MIN_TOKENS` or more
    tokens (a chat template and its system prompt) run that prefix once and each row only its own
    tokens after it (:func:`score_variants`; equal within float error); ``shared_prefix=False``
    runs whole rows.
    """
    if shared_prefix and fwd_hooks is None and not grad and len(sequences) > 1:
        n = shared_prefix_length(sequences)
        if n >= SHARED_PREFIX_MIN_TOKENS:
            base = list(sequences[0][0][:n])
            k = len(sequences)
            return score_variants(
                model, [base], sequences, [0] * k, [n] * k, reduction=reduction, max_batch_tokens=max_batch_tokens
            )
    device = next(iter(model.parameters())).device
    pad = pad_id(model.tokenizer) if getattr(model, "tokenizer", None) is not None else 0
    out: list[Tensor | None] = [None] * len(sequences)
    lengths = [len(p) + len(a) for p, a in sequences]
    ctx = nullcontext() if grad else torch.no_grad()
    with ctx:
        for group in chunks(lengths, max_batch_tokens):
            packed = pack([sequences[i] for i in group], pad).to(device)
            tok_lp = scored_token_logprobs(model, packed.input_ids, packed.target_mask, hooks_for(fwd_hooks, group))
            lp = reduce_logprobs(tok_lp, packed.target_mask, reduction)
            for j, i in enumerate(group):
                out[i] = lp[j]
    return torch.stack(out)  # type: ignore[arg-type]


def answer_logprobs(
    model: Model,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    reduction: str = "mean",
    fwd_hooks: BatchHooks = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    names: Sequence[str] | None = None,
    truncate: bool = False,
) -> Float[Tensor, " n"]:
    """LP(x, y) of each (prompt, answer) pair under teacher forcing, batched.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> answer_logprobs(model, ["Question: 2 + 3 =\\nAnswer:"], [" 5"])   # doctest: +SKIP
        tensor([-0.0123])
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    seqs = encode_many(model, prompts, answers, names=names, truncate=truncate)
    return score_sequences(model, seqs, reduction=reduction, fwd_hooks=fwd_hooks, max_batch_tokens=max_batch_tokens)


def encode_many(
    model: Model,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    truncate: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` for each pair, with the context-length check (or truncation)."""
    seqs = []
    n_ctx = context_length(model)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        name = names[i] if names is not None else str(i)
        pi, ai = encode_pair(model.tokenizer, p, a, name=name)
        if n_ctx is not None and len(pi) + len(ai) > n_ctx:
            if truncate:
                pi, ai = truncate_pair(pi, ai, n_ctx, has_bos=bos_id(model.tokenizer) is not None)
            else:
                check_length(model, len(pi) + len(ai), name)
        seqs.append((pi, ai))
    return seqs


@dataclass
class TokenStats:
    """One answer's tokens under teacher forcing: per answer position ``k`` the token ``y_k``
    (``targets``), ``log p(y_k | x, y_<k)`` (``logprobs``, as :func:`token_logprobs` computes it), the
    top-1 token of that distribution (``argmax``) and the mean and variance of ``log p(v)`` over
    ``v ~ p(. | x, y_<k)`` (``vocab_mean``, ``vocab_var``: minus the entropy, and Min-K%++'s spread)."""

    targets: Int[Tensor, " k"]
    logprobs: Float[Tensor, " k"]
    argmax: Int[Tensor, " k"]
    vocab_mean: Float[Tensor, " k"]
    vocab_var: Float[Tensor, " k"]


def answer_token_stats(
    model: Model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> list[TokenStats]:
    """:class:`TokenStats` of each already-tokenised ``(prompt_ids, answer_ids)`` pair (see
    :func:`encode_many`), batched and right-padded as :func:`score_sequences`: the per-token numbers
    the membership-inference attacks, exact memorization and extraction strength read
    (:mod:`unpact.memorization`). Its ``logprobs`` average to :func:`score_sequences`' LP.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> st = answer_token_stats(model, encode_many(model, ["Question: 2 + 3 =\\nAnswer:"], [" 5"]))  # doctest: +SKIP
        >>> st[0].logprobs, st[0].argmax == st[0].targets                                          # doctest: +SKIP
        (tensor([-0.0123], dtype=torch.float64), tensor([True]))
    """
    device = next(iter(model.parameters())).device
    pad = pad_id(model.tokenizer) if getattr(model, "tokenizer", None) is not None else 0
    out: list[TokenStats | None] = [None] * len(sequences)
    with torch.no_grad():
        for group in chunks([len(p) + len(a) for p, a in sequences], max_batch_tokens):
            packed = pack([sequences[i] for i in group], pad).to(device)
            rows = answer_row_logits(model, packed.input_ids, packed.target_mask)
            counts = answer_rows(packed.target_mask)[0].bincount(minlength=len(group)).tolist()
            for i, piece in zip(group, rows.split(counts)):
                a = sequences[i][1]
                lp = piece.float().log_softmax(-1)
                tgt = torch.tensor(list(a), dtype=torch.long, device=lp.device)[len(a) - piece.shape[0] :]
                probs = lp.exp()
                mean = -torch.special.entr(probs).sum(-1).double()  # sum_v p log p, 0 where p = 0
                second = torch.where(probs > 0, probs * lp.square(), torch.zeros_like(lp)).sum(-1).double()
                out[i] = TokenStats(
                    targets=tgt.cpu(),
                    logprobs=lp.gather(-1, tgt[:, None]).squeeze(-1).double().cpu(),
                    argmax=lp.argmax(-1).cpu(),
                    vocab_mean=mean.cpu(),
                    vocab_var=(second - mean.square()).clamp(min=0.0).cpu(),
                )
    return out  # type: ignore[return-value]


def first_token_ranks(
    model,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    fwd_hooks: BatchHooks = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    truncate: bool = True,
) -> Int[Tensor, " n"]:
    """Rank of each answer's first token in the model's next-token prediction after the prompt.

    Rank 1 = the model's top-1 prediction (ties count in the token's favour: rank is 1 +
    the number of tokens with a strictly larger logit). This is the paper's recovery
    criterion: emphasis "elevates forgotten knowledge to the model's Top-1 prediction".
    Same encoding, batching and hooks as :func:`answer_logprobs`.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> first_token_ranks(model, ["Question: 2 + 3 =\\nAnswer:"], [" 5"])   # doctest: +SKIP
        tensor([1])
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    seqs = encode_many(model, prompts, answers, truncate=truncate)
    return token_ranks(model, seqs, fwd_hooks=fwd_hooks, max_batch_tokens=max_batch_tokens)


def token_ranks(
    model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    fwd_hooks: BatchHooks = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> Int[Tensor, " n"]:
    """:func:`first_token_ranks` of already-tokenised ``(prompt_ids, answer_ids)`` pairs: the rank of
    ``answer_ids[0]`` after ``prompt_ids`` (put an answer prefix into ``prompt_ids`` to rank a later token)."""
    seqs = [(list(p), list(a[:1])) for p, a in sequences]
    device = next(iter(model.parameters())).device
    pad = pad_id(model.tokenizer)
    out = [0] * len(seqs)
    with torch.no_grad():
        for group in chunks([len(p) + 1 for p, _ in seqs], max_batch_tokens):
            packed = pack([seqs[i] for i in group], pad).to(device)
            rows = answer_row_logits(model, packed.input_ids, packed.target_mask, hooks_for(fwd_hooks, group)).float()
            if rows.shape[0] != len(group):
                raise ValueError("token_ranks needs a non-empty prompt before every ranked token")
            for j, i in enumerate(group):  # one answer token per row: row j is item group[j]'s prediction
                row = rows[j]
                out[i] = int((row > row[seqs[i][1][0]]).sum()) + 1
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------ shared prefixes


def _kv_layers(cache) -> list[tuple[Tensor, Tensor]] | None:
    """Per-layer (keys, values) of an HF cache, or None when it is not a plain full cache."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    out = []
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer" or getattr(layer, "keys", None) is None:
            return None  # sliding-window, linear or empty layers: cannot be cropped/gathered
        out.append((layer.keys, layer.values))
    return out


def _prefix_chunks(
    rest: Sequence[int], starts: Sequence[int], max_batch_tokens: int, fill: float = 0.8
) -> Iterator[list[int]]:
    """Rows ordered by the number of tokens they run (longest first), grouped so that
    rows x (cached + run) stays within the budget and no row runs fewer than ``fill``
    x the longest row of its group (padding would eat the saving of the cache)."""
    order = sorted(range(len(rest)), key=lambda j: (-rest[j], -starts[j]))
    group: list[int] = []
    w = c = 0
    for j in order:
        nw, nc = max(w, rest[j]), max(c, starts[j])
        if group and ((len(group) + 1) * (nw + nc) > max_batch_tokens or rest[j] < fill * w):
            yield group
            group, nw, nc = [], rest[j], starts[j]
        group.append(j)
        w, c = nw, nc
    if group:
        yield group


def score_variants(
    model: Model,
    bases: Sequence[Sequence[int]],
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    base_of: Sequence[int],
    shared: Sequence[int],
    *,
    reduction: str = "mean",
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> Float[Tensor, " n"]:
    """:func:`score_sequences` for sequences that start with a prefix of a base sequence.

    Sequence j must begin with ``bases[base_of[j]][:shared[j]]`` (leave-one-out:
    ablation i shares the first i prompt tokens with the original prompt). The
    keys and values of every base are computed once, in one batched forward, and
    each sequence runs only its own tokens from position ``shared[j]`` on, attending
    to its base's cached prefix; logits are computed only where an answer token is
    predicted. The result equals :func:`score_sequences` within float error
    (tests check 1e-5) at roughly half the transformer work and a fraction of the
    unembedding.

    Runs :func:`unpact.bridge.plain_hf_model` (the bridge's weights, HF's own
    attention): hooks on the bridge are not applied. Falls back to
    :func:`score_sequences` (same numbers, whole rows) for a model whose cache cannot
    be shared (sliding-window or recurrent layers), whose forward has no
    ``logits_to_keep``, or whose bridge weights do not map onto a plain HF model.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> base = [0, 11, 12, 13]; ans = [20, 21]
        >>> seqs = [(base, ans), ([0, 12, 13], ans), ([0, 11, 13], ans)]      # drop token 1, token 2
        >>> score_variants(model, [base], seqs, [0, 0, 0], [4, 1, 2])         # doctest: +SKIP
        tensor([-3.1, -3.4, -3.2])
    """
    with torch.no_grad():
        runner = PrefixedRows.build(model, bases, sequences, base_of, shared, max_batch_tokens=max_batch_tokens)
        if runner is None:
            return score_sequences(
                model, sequences, reduction=reduction, max_batch_tokens=max_batch_tokens, shared_prefix=False
            )
        result: list[Tensor | None] = [None] * len(sequences)
        for group in runner.groups:
            lp = runner.logprobs(group, reduction=reduction)
            for r, j in enumerate(group):
                result[j] = lp[r]
    return torch.stack(result)  # type: ignore[arg-type]


#: ``edit(embeds, placed) -> embeds``: changes the input embeddings of one batch of
#: :class:`PrefixedRows` (``[rows, run, d_model]``); ``placed[r] = (j, col)``: row r is sequence j,
#: and its absolute position p sits in column ``col + p - starts[j]``.
EmbedEdit = Callable[[Tensor, list[tuple[int, int]]], Tensor]


class PrefixedRows:
    """Sequences run after the cached keys and values of a prefix they share with a base sequence.

    Sequence j begins with ``bases[base_of[j]][:shared[j]]``; the bases' prefixes are run once (no
    gradient), and each batch of :attr:`groups` runs only its rows' own tokens from ``starts[j]`` on,
    left-padded so every answer ends in the last column, with logits only where an answer token is
    predicted. :func:`score_variants` (leave-one-out) scores them; integrated gradients edit the run
    tokens' embeddings (``edit``) and take gradients through :meth:`logprobs`.

    Built by :meth:`build` on :func:`unpact.bridge.plain_hf_model` (the bridge's weights in HF's own
    attention, so hooks on the bridge are not applied); :meth:`build` returns None where the cache
    cannot be shared (sliding-window or recurrent layers, a forward without ``logits_to_keep``, or
    bridge weights that do not map onto a plain HF model): the caller then runs whole rows.
    """

    def __init__(self, hf, kv, sequences, starts, base_of, cache_arg: str, pad: int, device, max_batch_tokens: int):
        self.hf, self.kv, self.sequences, self.starts = hf, kv, sequences, starts
        self.base_of, self.cache_arg, self.pad, self.device = base_of, cache_arg, pad, device
        self.rest = [len(p) + len(a) - 1 - s for (p, a), s in zip(sequences, starts)]
        self.groups: list[list[int]] = list(_prefix_chunks(self.rest, starts, max_batch_tokens))

    @classmethod
    def build(
        cls,
        model: Model,
        bases: Sequence[Sequence[int]],
        sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
        base_of: Sequence[int],
        shared: Sequence[int],
        *,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> PrefixedRows | None:
        """The runner with every base's needed prefix cached, or None (see the class docstring)."""
        starts = _variant_starts(bases, sequences, base_of, shared)
        device = next(iter(model.parameters())).device
        pad = pad_id(model.tokenizer) if getattr(model, "tokenizer", None) is not None else 0
        try:
            hf = plain_hf_model(model)
        except ModelLoadError:  # a bridge whose weights do not map back onto a plain HF model
            return None
        params = inspect.signature(hf.forward).parameters
        if "logits_to_keep" not in params and not any(v.kind is v.VAR_KEYWORD for v in params.values()):
            return None
        # transformers >= 5.2x names the cache argument ``cache`` (``past_key_values`` is deprecated)
        cache_arg = "cache" if "cache" in params else "past_key_values"
        need = [0] * len(bases)
        for b, s in zip(base_of, starts):
            need[b] = max(need[b], s)
        kv = None
        if max(need) > 0:
            with torch.no_grad():
                kv = _base_prefix_cache(hf, bases, need, pad, device)
            if kv is None:
                return None
        return cls(hf, kv, sequences, starts, base_of, cache_arg, pad, device, max_batch_tokens)

    def logprobs(
        self, group: list[int], reduction: str = "mean", edit: EmbedEdit | None = None
    ) -> Float[Tensor, " rows"]:
        """The reduced answer log-prob of each row of ``group`` (gradients flow where enabled)."""
        from transformers.cache_utils import DynamicCache

        seqs, starts, device = self.sequences, self.starts, self.device
        rows = len(group)
        w = max(self.rest[j] for j in group)
        c = max(starts[j] for j in group)
        k_ans = max(len(seqs[j][1]) for j in group)
        ids = torch.full((rows, w), self.pad, dtype=torch.long)
        mask = torch.zeros((rows, c + w), dtype=torch.long)
        pos = torch.zeros((rows, w), dtype=torch.long)
        targets = torch.zeros((rows, k_ans), dtype=torch.long)
        tmask = torch.zeros((rows, k_ans), dtype=torch.bool)
        placed = []
        for r, j in enumerate(group):
            p, a = seqs[j]
            s = starts[j]
            new = (list(p) + list(a))[s:-1]
            off = w - len(new)
            placed.append((j, off))
            ids[r, off:] = torch.tensor(new, dtype=torch.long)
            mask[r, :s] = 1
            mask[r, c + off :] = 1
            pos[r, :] = s
            pos[r, off:] = torch.arange(s, s + len(new))
            targets[r, k_ans - len(a) :] = torch.tensor(list(a), dtype=torch.long)
            tmask[r, k_ans - len(a) :] = True
        kwargs = {}
        if c > 0:
            rows_base = torch.tensor([self.base_of[j] for j in group], device=device)
            layers = [
                (k[:, :, :c].index_select(0, rows_base), v[:, :, :c].index_select(0, rows_base)) for k, v in self.kv
            ]
            kwargs[self.cache_arg] = DynamicCache(ddp_cache_data=layers)
        if edit is None:
            kwargs["input_ids"] = ids.to(device)
        else:
            kwargs["inputs_embeds"] = edit(self.hf.get_input_embeddings()(ids.to(device)), placed)
        tm = tmask.to(device)
        r_idx, k_idx = tm.nonzero(as_tuple=True)  # column w - k_ans + k predicts targets[r, k]
        with logits_at(self.hf, r_idx, w - k_ans + k_idx) as take:
            rows_logits = take(
                self.hf(attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=c > 0, **kwargs).logits
            )
        picked = rows_logits.float().log_softmax(-1).gather(-1, targets.to(device)[r_idx, k_idx, None]).squeeze(-1)
        lp = torch.zeros(tm.shape, dtype=picked.dtype, device=device).index_put((r_idx, k_idx), picked)
        return reduce_logprobs(lp, tm, reduction)


def _variant_starts(
    bases: Sequence[Sequence[int]],
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    base_of: Sequence[int],
    shared: Sequence[int],
) -> list[int]:
    """Where each variant's own tokens start (its shared prefix, at most up to the token that
    predicts its first answer token); ValueError on a variant that does not fit its base."""
    n = len(sequences)
    if not (len(base_of) == len(shared) == n):
        raise ValueError(f"{n} sequences but {len(base_of)} base indices and {len(shared)} shared lengths")
    starts: list[int] = []
    for j, ((p, a), b, s) in enumerate(zip(sequences, base_of, shared)):
        if not a:
            raise ValueError(f"sequence {j} has no answer tokens")
        if list(p[:s]) != list(bases[b][:s]) or s > len(p):
            raise ValueError(f"sequence {j} does not start with the first {s} tokens of base {b}")
        starts.append(max(0, min(s, len(p) - 1)))  # the token predicting a[0] is always run
    return starts


def _base_prefix_cache(hf, bases: Sequence[Sequence[int]], need: list[int], pad: int, device) -> list | None:
    """The keys and values of each base's first ``need[b]`` tokens, in one batched forward (None:
    the model returns no cache that can be shared)."""
    ids = torch.full((len(bases), max(need)), pad, dtype=torch.long)
    for b, base in enumerate(bases):
        ids[b, : min(need[b], len(base))] = torch.tensor(list(base[: need[b]]), dtype=torch.long)
    out = hf(input_ids=ids.to(device), use_cache=True, logits_to_keep=1)
    # transformers >= 5.2x returns it as ``cache`` and warns when ``past_key_values`` is read
    cache = out.get("cache") if "cache" in out else out.get("past_key_values")
    return _kv_layers(cache)


# ------------------------------------------------------------------ generation


def greedy_generate(
    model: Model,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    fwd_hooks: BatchHooks = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    stop_at_newline: bool = True,
    cache: bool = True,
    names: Sequence[str] | None = None,
    truncate: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (strings, or token ids with BOS), batched.

    A prompt longer than the model's context is an :class:`InputError` naming the
    item (``names[i]``, else its index), as in the log-prob path; with ``truncate``
    it loses tokens from the left (after BOS) until it and ``max_new_tokens`` fit,
    as :func:`truncate_pair` does for a prompt and its answer.

    Right-padded, so hooks that act on prompt positions act on the same tokens at
    every step. With ``cache=True`` (default) the prompt runs once and each step runs
    only the new tokens against a KV cache, the hooks still acting on the keyword
    columns for every new query (see :mod:`unpact.generation`; equal to the uncached
    path within float error); ``cache=False`` re-runs the whole sequence every step
    (the reference). Rows whose answer is finished leave the batch: a ``fwd_hooks``
    callable is called with the item indices of the rows still running, in row
    order, whenever that set changes (so it may be called several times per batch,
    each time with a subset of the previous call). Decoding stops at EOS (and at a
    newline when ``stop_at_newline``).
    """
    tok = model.tokenizer
    seqs: list[list[int]] = []
    for p in prompts:
        if isinstance(p, str):
            ids = tokenize(tok, p)
            b = bos_id(tok)
            seqs.append(([int(b)] if b is not None else []) + ids)
        else:
            seqs.append(list(p))
    n_ctx = context_length(model) or 10**9
    has_bos = bos_id(tok) is not None
    for i, ids in enumerate(seqs):
        if len(ids) > n_ctx:
            name = names[i] if names is not None else str(i)
            if not truncate:
                check_length(model, len(ids), name, what="prompt")
            room = max(1, n_ctx - max_new_tokens)  # the answer's share of the context, as for log-probs
            seqs[i], _ = truncate_pair(ids, [], room, has_bos=has_bos)
    results, _ = greedy_tokens(
        model,
        seqs,
        max_new_tokens=max_new_tokens,
        fwd_hooks=fwd_hooks,
        max_batch_tokens=max_batch_tokens,
        stop_at_newline=stop_at_newline,
        cache=cache,
    )
    texts = [tok.decode(r, skip_special_tokens=True) for r in results]
    if stop_at_newline:
        texts = [t.split("\n", 1)[0] for t in texts]
    return [t.strip() for t in texts]
