"""Items -> token ids, the special-token mask and baselines (shared by every method).

An item is a :class:`~unpact.data.QAItem`, :class:`~unpact.data.MCItem`,
:class:`~unpact.data.TextItem` or a ``(prompt, answer)`` pair of strings. Records go
through :func:`unpact.data.prompt_answer_pair` (the one formatter, with the
caller's ``fmt``); tokenisation and the context-length check go through
:func:`unpact.scoring.encode_many`, so positions are the ones every other part
of unpact uses: ``[BOS] + tokens(prompt) + tokens(answer)``.

The special mask marks tokens that never count as keywords: BOS, the
tokenizer's special tokens, and the fixed text of the prompt format (for the
plain format "Question:" and "\\nAnswer:"), found from the tokenizer's
character offsets. A token that shares characters with the question is content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unpact import scoring
from unpact.data import MCItem, PromptFormat, QAItem, TextItem, get_format, prompt_answer_pair
from unpact.errors import ConfigError, InputError


@dataclass
class Prepared:
    """One item, tokenised: ``prompt_ids`` start with BOS when the tokenizer has one."""

    item_id: str
    prompt: str
    answer: str
    prompt_ids: list[int]
    answer_ids: list[int]
    special: list[bool]
    group: str | None = None
    has_bos: bool = False

    @property
    def seq(self) -> tuple[list[int], list[int]]:
        return self.prompt_ids, self.answer_ids

    @property
    def first(self) -> int:
        """First attributable position (1 after BOS, else 0)."""
        return 1 if self.has_bos else 0

    def positions(self, skip_special: bool = False) -> list[int]:
        """The attributed positions ``first`` .. n-1, without the special ones if ``skip_special``."""
        return [i for i in range(self.first, len(self.prompt_ids)) if not (skip_special and self.special[i])]


def _is_pair(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(v, str) for v in x)


def as_item_list(items: Any) -> tuple[list[Any], bool]:
    """``(list of items, was_single)``: one record or one (prompt, answer) pair counts as single."""
    if isinstance(items, (QAItem, MCItem, TextItem)) or _is_pair(items):
        return [items], True
    if isinstance(items, (str, bytes)):
        raise InputError("items must be records or (prompt, answer) pairs, not a bare string")
    items = list(items)
    if not items:
        raise InputError("no items to attribute; give at least one record or (prompt, answer) pair")
    return items, False


def _question_span(item: Any, fmt: PromptFormat, prompt: str) -> tuple[int, int] | None:
    """Character span of the question inside the formatted prompt (None: no template)."""
    if not isinstance(item, (QAItem, MCItem)) or "{question}" not in fmt.template:
        return None
    prefix = fmt.template.split("{question}", 1)[0].replace("{{", "{").replace("}}", "}")
    start, end = len(prefix), len(prefix) + len(item.question)
    if prompt[start:end] != item.question:
        return None
    return start, end


def special_mask(
    tokenizer, prompt: str, prompt_ids: list[int], has_bos: bool, question_span: tuple[int, int] | None
) -> list[bool]:
    """True for BOS, special-token ids and tokens made only of template characters."""
    body = prompt_ids[1:] if has_bos else prompt_ids
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    mask = [int(t) in specials for t in body]
    if question_span is not None:
        try:
            enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            ok = list(enc["input_ids"]) == list(body)
        except (NotImplementedError, TypeError, ValueError, KeyError):
            ok = False
        if ok:
            qs, qe = question_span
            mask = [m or not (s < qe and e > qs) for m, (s, e) in zip(mask, offsets)]
    return ([True] if has_bos else []) + mask


def prepare_items(
    model,
    items: Any,
    *,
    fmt: str | PromptFormat | None = None,
    truncate: bool = False,
    group: str | None = None,
) -> tuple[list[Prepared], bool]:
    """Tokenise ``items`` as unpact scores them; returns ``(prepared, was_single)``.

    Raises :class:`InputError` naming the item for an empty prompt or answer, an
    answer that tokenises to nothing, or a prompt plus answer longer than the
    model's context (unless ``truncate``: then prompt tokens after BOS are dropped
    from the left).
    """
    items, single = as_item_list(items)
    f = get_format(fmt)
    tok = model.tokenizer
    prompts, answers, names, spans, groups = [], [], [], [], []
    for i, it in enumerate(items):
        if _is_pair(it):
            p, a = it
            name = str(i)
            span = None
            g = group
        elif isinstance(it, (QAItem, MCItem, TextItem)):
            p, a = prompt_answer_pair(it, f)
            name = it.id if it.id is not None else str(i)
            span = _question_span(it, f, p)
            g = group if group is not None else (it.meta.get("group") or it.meta.get("split"))
        else:
            raise InputError(
                f"item {i}: cannot attribute a {type(it).__name__}; give a QAItem, MCItem, TextItem "
                "or a (prompt, answer) pair of strings"
            )
        prompts.append(p)
        answers.append(a)
        names.append(name)
        spans.append(span)
        groups.append(g)
    seqs = scoring.encode_many(model, prompts, answers, names=names, truncate=truncate)
    has_bos = scoring.bos_id(tok) is not None
    out = []
    for p, a, name, span, g, (pi, ai) in zip(prompts, answers, names, spans, groups, seqs):
        full = ([int(scoring.bos_id(tok))] if has_bos else []) + scoring.tokenize(tok, p)
        mask = special_mask(tok, p, full, has_bos, span)
        if len(pi) < len(full):  # truncated from the left after BOS
            keep = len(pi) - (1 if has_bos else 0)
            mask = (mask[:1] if has_bos else []) + mask[len(mask) - keep :]
        out.append(Prepared(str(name), p, a, list(pi), list(ai), mask, g, has_bos))
    return out, single


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own (readable, unlike byte-level ``convert_ids_to_tokens``)."""
    return [tokenizer.decode([int(t)]) for t in ids]


def baseline_token_id(tokenizer, baseline: int | str) -> int:
    """A baseline token id: an int, or ``"pad"``, ``"eos"``, ``"bos"``, ``"unk"``."""
    if isinstance(baseline, bool):
        raise ConfigError(f"baseline must be a token id or 'pad'/'eos'/'bos'/'unk', got {baseline!r}")
    if isinstance(baseline, int):
        if not 0 <= baseline < len(tokenizer):
            raise ConfigError(f"baseline token id {baseline} is outside the vocabulary (0..{len(tokenizer) - 1})")
        return baseline
    if baseline == "pad":
        return scoring.pad_id(tokenizer)
    name = {"eos": "eos_token_id", "bos": "bos_token_id", "unk": "unk_token_id"}.get(str(baseline))
    if name is None or getattr(tokenizer, name, None) is None:
        raise ConfigError(
            f"unknown baseline {baseline!r}; give a token id or one of 'pad', 'eos', 'bos', 'unk' "
            "(that the tokenizer has)"
        )
    return int(getattr(tokenizer, name))
