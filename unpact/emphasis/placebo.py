"""Placebo emphasis: the same emphasis on tokens that are not the keywords.

Emphasising *any* part of a prompt perturbs the model; a recovery that a
placebo gets as well is not keyword-specific. The placebo of an item's keyword
positions is a set of positions of the same kind and size: tokens of the
question itself (never of the prompt format's own words, never special
tokens), never a keyword position, as many as there are keyword positions, in
contiguous runs as long as the keywords' runs where the question allows (a
two-token name gets a two-token placebo span), drawn with a fixed seed.
Keyword-specific recovery is then keyword minus placebo under the same setting.

For prompt rewrites, :func:`placebo_keywords` turns the placebo positions back
into words (whole words of the question), which the rewrite templates then
emphasise exactly as they emphasise keywords.

Example:
    >>> runs([3, 4, 7])
    [[3, 4], [7]]
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from unpact.data.formatting import PromptFormat, get_format
from unpact.emphasis.rewrites import bos_shift, keywords_from_positions, token_offsets


def runs(positions: Sequence[int]) -> list[list[int]]:
    """Sorted ``positions`` split into maximal runs of consecutive integers."""
    out: list[list[int]] = []
    for p in sorted(set(positions)):
        if out and p == out[-1][-1] + 1:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def _word_tokens(tokenizer, question: str, fmt, prepend_bos: bool) -> dict[int, int]:
    """Position (BOS at 0) -> index of the question word it belongs to, for the question's word tokens."""
    f = get_format(fmt)
    shell = f.prompt("\x00")
    q0 = shell.index("\x00")
    q1 = q0 + len(question)
    prompt = f.prompt(question)
    word = [-1] * len(prompt)
    w = -1
    for c in range(q0, q1):
        if prompt[c].isalnum():
            if c == q0 or not prompt[c - 1].isalnum():
                w += 1
            word[c] = w
    _ids, offs = token_offsets(tokenizer, prompt)
    shift = bos_shift(tokenizer, prepend_bos)
    out = {}
    for t, (a, b) in enumerate(offs):
        if b > a and a >= q0 and b <= q1:
            ws = {word[c] for c in range(a, b) if word[c] >= 0}
            if ws:
                out[t + shift] = min(ws)
    return out


def question_positions(
    tokenizer, question: str, fmt: str | PromptFormat | None = None, prepend_bos: bool = True
) -> list[int]:
    """Token positions (BOS at 0) of the prompt's tokens that lie inside the question and hold a word character."""
    return sorted(_word_tokens(tokenizer, question, fmt, prepend_bos))


def placebo_positions(
    tokenizer,
    question: str,
    keyword_positions: Sequence[int],
    *,
    fmt: str | PromptFormat | None = None,
    seed: int = 0,
    prepend_bos: bool = True,
) -> list[int]:
    """Positions matched to ``keyword_positions`` in count and kind, never overlapping them.

    Candidates are the question's word tokens (:func:`question_positions`) outside every
    word that holds a keyword position. Each keyword run (longest first) gets a contiguous candidate run
    of its length, drawn with ``seed``; a run that cannot be matched contiguously takes
    single candidates. With fewer candidates than keyword positions, all candidates.
    """
    keys = set(int(p) for p in keyword_positions)
    words = _word_tokens(tokenizer, question, fmt, prepend_bos)
    key_words = {words[p] for p in keys if p in words}
    # never a keyword token, nor another token of a keyword's word (KeyTokens can be parts of words)
    cands = [p for p in sorted(words) if p not in keys and words[p] not in key_words]
    rng = random.Random(seed)
    free = set(cands)
    chosen: list[int] = []
    for run in sorted(runs(keys), key=len, reverse=True):
        n = len(run)
        starts = [p for p in sorted(free) if all(p + j in free for j in range(n))]
        if starts:
            s = rng.choice(starts)
            pick = [s + j for j in range(n)]
        else:
            pool = sorted(free)
            pick = rng.sample(pool, min(n, len(pool)))
        chosen += pick
        free -= set(pick)
    return sorted(chosen)


def placebo_keywords(
    tokenizer,
    question: str,
    keyword_positions: Sequence[int],
    *,
    fmt: str | PromptFormat | None = None,
    seed: int = 0,
    prepend_bos: bool = True,
) -> list[str]:
    """The placebo as words of the question (for prompt rewrites): :func:`placebo_positions` widened to words."""
    pos = placebo_positions(tokenizer, question, keyword_positions, fmt=fmt, seed=seed, prepend_bos=prepend_bos)
    return keywords_from_positions(tokenizer, question, pos, fmt, prepend_bos)


__all__ = ["placebo_keywords", "placebo_positions", "question_positions", "runs"]
