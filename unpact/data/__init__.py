"""Records, benchmark loaders and prompt formatting."""

from unpact.data.formatting import (
    FORMATS,
    PLAIN,
    PromptFormat,
    chat_format,
    format_answer,
    format_names,
    format_prompt,
    get_format,
    prompt_answer_pair,
    resolve_format,
    register_format,
)
from unpact.data.loaders import load_benchmark, read_lines, read_records, records_from_rows
from unpact.data.records import Benchmark, Item, MCItem, QAItem, TextItem, spread_sample

__all__ = [
    "Benchmark",
    "Item",
    "MCItem",
    "QAItem",
    "TextItem",
    "FORMATS",
    "PLAIN",
    "PromptFormat",
    "chat_format",
    "format_answer",
    "format_names",
    "format_prompt",
    "get_format",
    "prompt_answer_pair",
    "register_format",
    "resolve_format",
    "load_benchmark",
    "read_lines",
    "read_records",
    "records_from_rows",
    "spread_sample",
]

from unpact.data.shipped import RESOURCES_DIR

#: TOFU's refusal strings (one per line), shipped with the package (MIT, see TOFU-LICENSE).
IDK_FILE = RESOURCES_DIR / "idontknow.jsonl"
