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
from typing import Callable

from unpact.data.records import Item, MCItem, QAItem, TextItem
from unpact.errors import ConfigError


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt, and how its answer follows it.

    ``template`` gets ``{question}``; ``answer_prefix`` is put before every answer
    (a space, so the answer's first word is tokenised as it is mid-sentence).
    """

    name: str
    template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def answer(self, answer: str) -> str:
        return self.answer_prefix + answer.strip()


PLAIN = PromptFormat("plain")
#: Registry of named formats; add your own with :func:`register_format`.
FORMATS: dict[str, PromptFormat] = {"plain": PLAIN}


def register_format(fmt: PromptFormat) -> PromptFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def chat_format(tokenizer, system: str | None = None) -> PromptFormat:
    """A format that wraps the question in ``tokenizer``'s chat template (for instruct models)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            "the tokenizer has no chat template; use the 'plain' format or pass a tokenizer that has one"
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "{question}"}
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PromptFormat("chat", template=text.replace("{", "{{").replace("}", "}}").replace("{{question}}", "{question}"), answer_prefix="")


def get_format(fmt: str | PromptFormat | None) -> PromptFormat:
    if fmt is None:
        return PLAIN
    if isinstance(fmt, PromptFormat):
        return fmt
    if fmt not in FORMATS:
        raise ConfigError(f"unknown prompt format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt]


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


Formatter = Callable[[Item], tuple[str, str]]
