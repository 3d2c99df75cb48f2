"""Prompt rewrites that emphasise a question's keywords, with the keywords' token positions.

A rewrite template turns a question and its keywords into a new question
(repeat the keywords, quote them, upper-case them, prefix "Focus on: ...",
restate with the keywords first, or a combination such as ``"quote+focus"``).
Templates work on *segments* (text pieces tagged with the keyword they hold, or
None), so after any rewrite unpact knows exactly which characters of the final
prompt are keywords, and maps them to token positions with the fast
tokenizer's ``return_offsets_mapping``: every token whose characters overlap a
keyword counts (multi-token words give several positions). Positions follow
unpact's scoring convention: BOS at 0, so the prompt's first token is 1.

Templates live in a registry (:data:`TEMPLATES`); add your own with
:func:`register_template`. A name ``"a+b"`` applies ``a`` then ``b``.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> r = rewrite("Where was Orla Venning born?", ["Orla Venning"], "quote")
    >>> r.question
    'Where was "Orla Venning" born?'
    >>> r.prompt
    'Question: Where was "Orla Venning" born?\\nAnswer:'
    >>> r.positions                       # the tokens of Orla Venning, BOS at 0   # doctest: +SKIP
    (5, 6, 7)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from unpact.data.formatting import PromptFormat, get_format
from unpact.errors import ConfigError, InputError
from unpact.registry import Registry

#: A piece of text and the index of the keyword it holds (None: ordinary text).
Segment = tuple[str, "int | None"]
TemplateFn = Callable[[list[Segment], Sequence[str]], list[Segment]]


@dataclass(frozen=True)
class RewriteTemplate:
    """A named rewrite: ``fn(segments, keywords) -> segments``."""

    name: str
    fn: TemplateFn
    description: str = ""

    def __call__(self, segments: list[Segment], keywords: Sequence[str]) -> list[Segment]:
        return self.fn(segments, keywords)


#: name -> template. ``get_template("a+b")`` composes registered templates.
TEMPLATES: Registry[RewriteTemplate] = Registry("rewrite template")


def register_template(name: str, description: str = "") -> Callable[[TemplateFn], TemplateFn]:
    """Decorator registering ``fn(segments, keywords) -> segments`` as template ``name``.

    Example:
        >>> @register_template("bold", "wrap keywords in asterisks")
        ... def bold(segments, keywords):
        ...     return [s for text, k in segments
        ...             for s in ([("*", None), (text, k), ("*", None)] if k is not None else [(text, k)])]
        >>> "bold" in TEMPLATES
        True
        >>> del TEMPLATES["bold"]  # the global registry as it was
    """
    if "+" in name:
        raise ConfigError(f"template name {name!r} must not contain '+', which composes templates")

    def deco(fn: TemplateFn) -> TemplateFn:
        TEMPLATES.add(name, RewriteTemplate(name, fn, description or (fn.__doc__ or "").strip()))
        return fn

    return deco


def get_template(name: str) -> RewriteTemplate:
    """The template ``name``; ``"a+b"`` applies ``a`` then ``b``."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in TEMPLATES]
    if unknown:
        raise ConfigError(f"unknown rewrite template {unknown[0]!r}; known: {', '.join(TEMPLATES)} (combine with '+')")
    if len(parts) == 1:
        return TEMPLATES.get(name)
    steps = [TEMPLATES.get(p) for p in parts]

    def composed(segments: list[Segment], keywords: Sequence[str]) -> list[Segment]:
        for s in steps:
            segments = s(segments, keywords)
        return segments

    return RewriteTemplate(name, composed, " then ".join(s.name for s in steps))


def _map_keywords(segments: list[Segment], f: Callable[[str, int], list[Segment]]) -> list[Segment]:
    out: list[Segment] = []
    for text, k in segments:
        out.extend(f(text, k) if k is not None else [(text, None)])
    return out


def _keyword_list(keywords: Sequence[str]) -> list[Segment]:
    out: list[Segment] = []
    for i, kw in enumerate(keywords):
        if i:
            out.append((", ", None))
        out.append((kw, i))
    return out


@register_template("none", "the question unchanged (the baseline)")
def _none(segments, keywords):
    return list(segments)


@register_template("repeat", "each keyword in the question said twice: 'Orla Venning Orla Venning'")
def _repeat(segments, keywords):
    return _map_keywords(segments, lambda t, k: [(t, k), (" ", None), (t, k)])


@register_template("quote", "each keyword in double quotes: '\"Orla Venning\"'")
def _quote(segments, keywords):
    return _map_keywords(segments, lambda t, k: [('"', None), (t, k), ('"', None)])


@register_template("upper", "each keyword upper-cased: 'ORLA VENNING'")
def _upper(segments, keywords):
    return _map_keywords(segments, lambda t, k: [(t.upper(), k)])


@register_template("focus", "prefix 'Focus on: <keywords>. '")
def _focus(segments, keywords):
    if not keywords:
        return list(segments)
    return [("Focus on: ", None)] + _keyword_list(keywords) + [(". ", None)] + list(segments)


@register_template("keywords_first", "restate with the keywords first: '<keywords>: <question>'")
def _keywords_first(segments, keywords):
    if not keywords:
        return list(segments)
    return _keyword_list(keywords) + [(": ", None)] + list(segments)


#: The templates :func:`unpact.emphasis.recover` tries by default.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "repeat",
    "quote",
    "upper",
    "focus",
    "keywords_first",
    "quote+focus",
    "upper+keywords_first",
    "repeat+focus",
)


# ------------------------------------------------------------------ segmentation


def segment_question(question: str, keywords: Sequence[str]) -> list[Segment]:
    """Split ``question`` at whole-word occurrences of ``keywords`` (longest first, no overlaps).

    Matching is case-sensitive, falling back to case-insensitive for a keyword
    not found as written. A keyword not in the question leaves it unsegmented
    (prefix templates still mention it).

    Example:
        >>> segment_question("Where was Orla Venning born?", ["Orla Venning", "born"])
        [('Where was ', None), ('Orla Venning', 0), (' ', None), ('born', 1), ('?', None)]
    """
    taken = [False] * len(question)
    hits: list[tuple[int, int, int]] = []
    order = sorted(range(len(keywords)), key=lambda i: -len(keywords[i]))
    for i in order:
        kw = keywords[i]
        if not kw.strip():
            continue
        for flags in (0, re.IGNORECASE):
            pat = re.compile(r"(?<!\w)" + re.escape(kw) + r"(?!\w)", flags)
            found = [(m.start(), m.end()) for m in pat.finditer(question) if not any(taken[m.start() : m.end()])]
            if found:
                for s, e in found:
                    hits.append((s, e, i))
                    taken[s:e] = [True] * (e - s)
                break
    hits.sort()
    out: list[Segment] = []
    pos = 0
    for s, e, i in hits:
        if s > pos:
            out.append((question[pos:s], None))
        out.append((question[s:e], i))
        pos = e
    if pos < len(question):
        out.append((question[pos:], None))
    return out


# ------------------------------------------------------------------ positions


@dataclass(frozen=True)
class RewrittenPrompt:
    """A (rewritten) prompt and where its keywords are.

    Attributes:
        template: the template's name.
        question: the rewritten question.
        prompt: the prompt the model sees (the question in the prompt format).
        keywords: the keywords, as given.
        spans: ``(start, end, keyword index)`` character spans of keywords in ``prompt``.
        positions: token positions of the keywords in ``[BOS] + tokens(prompt)`` (sorted, unique).
        position_keyword: the keyword index of each position (same order as ``positions``).
    """

    template: str
    question: str
    prompt: str
    keywords: tuple[str, ...]
    spans: tuple[tuple[int, int, int], ...]
    positions: tuple[int, ...] = ()
    position_keyword: tuple[int, ...] = ()
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        return {
            "template": self.template,
            "question": self.question,
            "prompt": self.prompt,
            "keywords": list(self.keywords),
            "positions": list(self.positions),
        }


def token_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens) and each token's character span; needs a fast tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "keyword position tracking needs a fast tokenizer (return_offsets_mapping); "
            "load the model with its tokenizer.json"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def bos_shift(tokenizer, prepend_bos: bool) -> int:
    """How far token positions move when BOS is prepended: 1 with ``prepend_bos`` and a BOS token, else 0."""
    return 1 if prepend_bos and getattr(tokenizer, "bos_token_id", None) is not None else 0


def char_spans_to_positions(
    tokenizer, text: str, spans: Sequence[tuple[int, int, int]], prepend_bos: bool = True
) -> tuple[list[int], list[int], list[int]]:
    """Token positions (BOS-shifted) overlapping the character ``spans`` of ``text``.

    Returns ``(positions, keyword index per position, token ids of text)``.
    """
    ids, offs = token_offsets(tokenizer, text)
    shift = bos_shift(tokenizer, prepend_bos)
    pos: dict[int, int] = {}
    for t, (a, b) in enumerate(offs):
        if b <= a:
            continue
        for s, e, k in spans:
            if a < e and b > s:
                pos.setdefault(t + shift, k)
                break
    order = sorted(pos)
    return order, [pos[p] for p in order], ids


def rewrite(
    question: str,
    keywords: Sequence[str],
    template: str | RewriteTemplate = "none",
    tokenizer=None,
    fmt: str | PromptFormat | None = None,
    prepend_bos: bool = True,
) -> RewrittenPrompt:
    """Apply ``template`` to ``question`` and track where ``keywords`` end up.

    With a ``tokenizer`` (fast) the keywords' token positions in ``[BOS] + tokens(prompt)``
    are filled in; without, only the character spans.

    Example:
        >>> rewrite("Where was Orla Venning born?", ["Orla Venning"], "focus").question
        'Focus on: Orla Venning. Where was Orla Venning born?'
    """
    tpl = get_template(template) if isinstance(template, str) else template
    keywords = [k for k in keywords]
    segs = tpl(segment_question(question, keywords), keywords)
    new_q = "".join(t for t, _ in segs)
    f = get_format(fmt)
    sentinel = "\x00"
    shell = f.prompt(sentinel)
    if shell.count(sentinel) != 1:
        raise ConfigError(f"prompt format {f.name!r} must contain the question exactly once")
    offset = shell.index(sentinel)
    prompt = f.prompt(new_q)
    spans = []
    pos = offset
    for t, k in segs:
        if k is not None and t:
            spans.append((pos, pos + len(t), k))
        pos += len(t)
    if tokenizer is None:
        return RewrittenPrompt(tpl.name, new_q, prompt, tuple(keywords), tuple(spans))
    positions, kws, ids = char_spans_to_positions(tokenizer, prompt, spans, prepend_bos)
    return RewrittenPrompt(
        tpl.name, new_q, prompt, tuple(keywords), tuple(spans), tuple(positions), tuple(kws), tuple(ids)
    )


def keyword_positions(
    tokenizer, question: str, keywords: Sequence[str], fmt: str | PromptFormat | None = None, prepend_bos: bool = True
) -> list[int]:
    """Token positions of ``keywords`` in the unchanged prompt of ``question`` (BOS at 0)."""
    return list(rewrite(question, keywords, "none", tokenizer, fmt, prepend_bos).positions)


def keywords_from_positions(
    tokenizer, question: str, positions: Sequence[int], fmt: str | PromptFormat | None = None, prepend_bos: bool = True
) -> list[str]:
    """Keyword strings of the question covered by token ``positions`` (e.g. KeyTokens).

    The tokens' characters are widened to whole words, adjacent ones (separated
    only by spaces) merged into one phrase, and only the question's part kept
    (positions on the prompt format's own words are dropped). Order of appearance,
    no duplicates.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> keywords_from_positions(tok, "Where was Orla Venning born?", [3, 4, 5])   # doctest: +SKIP
        ['Orla Venning']
    """
    f = get_format(fmt)
    shell = f.prompt("\x00")
    q0 = shell.index("\x00")
    q1 = q0 + len(question)
    prompt = f.prompt(question)
    _ids, offs = token_offsets(tokenizer, prompt)
    shift = bos_shift(tokenizer, prepend_bos)
    chars = [False] * len(prompt)
    for p in positions:
        t = p - shift
        if 0 <= t < len(offs):
            a, b = offs[t]
            for c in range(max(a, q0), min(b, q1)):
                chars[c] = not prompt[c].isspace()
    # widen to whole words
    for c in range(q0, q1):
        if chars[c]:
            j = c - 1
            while j >= q0 and prompt[j].isalnum() and not chars[j]:
                chars[j] = True
                j -= 1
            j = c + 1
            while j < q1 and prompt[j].isalnum() and not chars[j]:
                chars[j] = True
                j += 1
    out: list[str] = []
    c = q0
    while c < q1:
        if not chars[c]:
            c += 1
            continue
        s = c
        e = c
        while c < q1 and (chars[c] or (prompt[c] == " " and _next_marked(chars, prompt, c, q1))):
            if chars[c]:
                e = c + 1
            c += 1
        phrase = prompt[s:e].strip(" ?.,!:;\"'")
        if phrase and phrase not in out:
            out.append(phrase)
    return out


def _next_marked(chars: list[bool], text: str, c: int, end: int) -> bool:
    j = c
    while j < end and text[j] == " ":
        j += 1
    return j < end and chars[j]


def validate_keywords(keywords: Sequence[str], name: str = "item") -> list[str]:
    """Non-empty stripped keyword strings (raises :class:`InputError` on a non-string)."""
    out = []
    for k in keywords:
        if not isinstance(k, str):
            raise InputError(f"{name}: keywords must be strings, got {k!r}")
        if k.strip():
            out.append(k.strip())
    return out
