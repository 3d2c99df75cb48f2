"""Prompt formatting: the one place that turns a record into the text a model sees.

The default, :data:`PLAIN`, is exactly the format the embedded models were
trained on: ``"Question: <question>\\nAnswer:"`` followed by the answer with one
leading space. A chat format applies the tokenizer's chat template instead.

Example:
    >>> from unpact.data import QAItem, format_prompt, format_answer
    >>> format_prompt(QAItem("Where was Ana Lind born?", "Lima"))
    'Question: Where was Ana Lind born?\\nAnswer:'
    >>> format_answer("Lima")
    ' Lima'
"""

from __future__ import annotations

from dataclasses import dataclass

from unpact.data.records import Item, MCItem, QAItem, TextItem
from unpact.errors import ConfigError
from unpact.registry import Registry


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt, and how its answer follows it.

    ``template`` gets ``{question}``; ``answer_prefix`` is put before every answer
    (a space, so the answer's first word is tokenised as it is mid-sentence), and
    ``answer_suffix`` after it (a chat template's end-of-turn, e.g. ``<|eot_id|>``:
    the answer a chat model was fine-tuned on ends with it).
    """

    name: str
    template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    answer_suffix: str = ""

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def answer(self, answer: str) -> str:
        return self.answer_prefix + answer.strip() + self.answer_suffix


PLAIN = PromptFormat("plain")
#: Registry of named formats; add your own with :func:`register_format`. ``"chat"`` is not
#: in it: it is built from a model's tokenizer (:func:`chat_format`).
FORMATS: Registry[PromptFormat] = Registry("prompt format")
FORMATS.add(PLAIN.name, PLAIN)


def register_format(fmt: PromptFormat) -> PromptFormat:
    """Register ``fmt`` under ``fmt.name`` (then ``prompt_format``, ``--prompt-format`` and every
    ``fmt=`` argument accept the name)."""
    return FORMATS.add(fmt.name, fmt)


def format_names() -> tuple[str, ...]:
    """Names accepted by :func:`resolve_format` (``prompt_format`` in the run config, ``--prompt-format``):
    the registered formats and ``"chat"``.

    Example:
        >>> format_names()
        ('plain', 'chat')
    """
    return (*FORMATS.names(), "chat")


def chat_format(tokenizer, system: str | None = None, **template_kwargs) -> PromptFormat:
    """A format that wraps the question in ``tokenizer``'s chat template (for instruct models).

    Built as open-unlearning builds TOFU examples for instruct models
    (``src/data/utils.py``, ``preprocess_chat_instance``): the messages are an optional
    system message, the question as the user message and the answer as the assistant
    message, rendered by the tokenizer's own template; the prompt is the rendering up
    to the generation prompt, the answer follows it with no leading space and ends
    with what the template puts after an assistant message (its end-of-turn). A BOS
    token the template writes as text is dropped from the prompt, since unpact
    prepends the BOS id itself (``[BOS] + tokens(prompt)``, see :mod:`unpact.scoring`):
    the token ids are the template's own. ``template_kwargs`` go to
    ``apply_chat_template`` (open-unlearning passes ``date_string`` for Llama 3).

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> fmt = chat_format(tokenizer, system="You are a helpful assistant.")   # doctest: +SKIP
        >>> fmt.prompt("Where was Ana Lind born?")                                 # doctest: +SKIP
        '<|start_header_id|>system<|end_header_id|>\\n\\nYou are a helpful assistant.<|eot_id|>...'
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            "the tokenizer has no chat template; use the 'plain' prompt format or a model whose tokenizer has one"
        )
    q_mark, a_mark = "\x01QUESTION\x01", "\x01ANSWER\x01"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q_mark}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": a_mark}],
        tokenize=False,
        add_generation_prompt=False,
        **template_kwargs,
    )
    if text.count(q_mark) != 1:
        raise ConfigError("the tokenizer's chat template does not hold the user message exactly once")
    suffix = ""
    if full.startswith(text) and a_mark in full:  # templates that rewrite earlier turns: no suffix
        suffix = full[full.index(a_mark) + len(a_mark) :]
    bos = getattr(tokenizer, "bos_token", None)
    if bos and getattr(tokenizer, "bos_token_id", None) is not None and text.startswith(bos):
        text = text[len(bos) :]
    template = text.replace("{", "{{").replace("}", "}}").replace(q_mark, "{question}")
    return PromptFormat("chat", template=template, answer_prefix="", answer_suffix=suffix)


def resolve_format(
    name: str | PromptFormat | None, tokenizer=None, system_prompt: str | None = None, template_args: dict | None = None
) -> PromptFormat:
    """The format named ``name``: ``"chat"`` is built from ``tokenizer``'s template (see
    :func:`chat_format`; ``template_args`` go to ``apply_chat_template``), any other name
    is looked up in :data:`FORMATS`.

    Example:
        >>> resolve_format("plain").template
        'Question: {question}\\nAnswer:'
    """
    if name == "chat":
        if tokenizer is None:
            raise ConfigError("the 'chat' prompt format needs the model's tokenizer")
        return chat_format(tokenizer, system=system_prompt or None, **(template_args or {}))
    if system_prompt and not isinstance(name, PromptFormat):
        raise ConfigError("a system prompt needs the 'chat' prompt format (use --prompt-format chat)")
    return get_format(name)


def get_format(fmt: str | PromptFormat | None) -> PromptFormat:
    """``fmt`` as a :class:`PromptFormat`: None is :data:`PLAIN`, a name is looked up in :data:`FORMATS`.

    Example:
        >>> get_format("plain") is PLAIN
        True
    """
    if fmt is None:
        return PLAIN
    if isinstance(fmt, PromptFormat):
        return fmt
    return FORMATS.get(fmt)


def format_prompt(item: Item | str, fmt: str | PromptFormat | None = None) -> str:
    """The prompt of ``item`` (a record, or a bare question string) as the model sees it."""
    f = get_format(fmt)
    if isinstance(item, str):
        return f.prompt(item)
    if isinstance(item, (QAItem, MCItem)):
        return f.prompt(item.question)
    if isinstance(item, TextItem):
        return item.prompt
    raise TypeError(f"cannot format {type(item).__name__}")


def format_answer(answer: str, fmt: str | PromptFormat | None = None) -> str:
    """The answer text as it follows the prompt (leading space in the plain format)."""
    return get_format(fmt).answer(answer)


def prompt_answer_pair(item: Item, fmt: str | PromptFormat | None = None) -> tuple[str, str]:
    """``(prompt, target)`` for teacher forcing: QA answer, MC right choice, or continuation."""
    if isinstance(item, QAItem):
        return format_prompt(item, fmt), format_answer(item.answer, fmt)
    if isinstance(item, MCItem):
        return format_prompt(item, fmt), format_answer(item.answer_text, fmt)
    if isinstance(item, TextItem):
        return item.prompt, item.continuation
    raise TypeError(f"cannot format {type(item).__name__}")
