"""Facts a model knows, as a benchmark: forget / retain / general splits of the questions it
answers right, and a split of the questions of the same form it does not.

The study is only meaningful on facts the original model knows. On the embedded world the
models were trained on the facts; a real pretrained model learned its facts in pretraining,
so the splits are chosen by asking it: each question of the source files (TOFU-format QA:
``question``, ``answer``, optional ``paraphrased_answer``, ``perturbed_answer``,
``paraphrased_question``, ``cloze_prompt``/``cloze_answer``) is answered greedily in the
study's prompt format, and an answer counts as right by the study's one definition
(:func:`unpact.metrics.answer_accuracy`: ROUGE-L recall of the reference answer in the
greedy answer at least :data:`unpact.metrics.ANSWER_THRESHOLD`). Known facts are shuffled
with the seed and cut into disjoint forget / retain / general splits, each source file in
the same proportions (facts of one kind only as a retain set are not a safe retain set for
another kind); the questions it gets wrong form ``unknown``, the negative control's items.
Every row carries the model's answer and its recall as provenance.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> model = unpact.load_model("smollm2-135m")                              # doctest: +SKIP
    >>> fmt = resolve_format("chat", model.tokenizer, "You are a helpful assistant.")  # doctest: +SKIP
    >>> facts = build_known_facts(model, ["world_facts_perturbed.json"], fmt)  # doctest: +SKIP
    >>> write_known_facts(facts, "known-facts/")                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unpact.data import PromptFormat, records_from_rows
from unpact.data.loaders import MANIFEST, read_records
from unpact.data.records import QAItem
from unpact.data.shipped import RESOURCES_DIR
from unpact.errors import ConfigError, DataError
from unpact.metrics import ANSWER_THRESHOLD, greedy_answers, rouge_l_recall

#: the splits :func:`build_known_facts` writes, in order
KNOWN_SPLITS = ("forget", "retain", "general")
UNKNOWN_SPLIT = "unknown"
#: what the written splits are, declared in ``manifest.json`` for the loader
#: (:func:`unpact.data.loaders.declared_by_manifest`): TOFU-format QA, each split's role
DECLARED = {
    "style": "tofu",
    "roles": {"forget": "forget", "retain": "retain", "general": "other", UNKNOWN_SPLIT: "other"},
}
#: hand-written paraphrased questions for TOFU's world facts and real authors (the facts' second
#: format, which the presence probes and the positive control need; TOFU ships none)
TOFU_PARAPHRASES = RESOURCES_DIR / "tofu_paraphrased_questions.json"


def read_paraphrases(path: str | os.PathLike = TOFU_PARAPHRASES) -> dict[str, str]:
    """``{question: paraphrased question}`` from a file of ``{"paraphrases": [{"question", "paraphrased_question"}]}``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return {r["question"]: r["paraphrased_question"] for r in doc["paraphrases"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"paraphrase file {str(path)!r} is unreadable or malformed ({exc}); it needs "
            '{"paraphrases": [{"question": ..., "paraphrased_question": ...}]}'
        ) from None


@dataclass
class KnownFactsConfig:
    """How known facts are chosen and split.

    threshold: ROUGE-L recall of the reference answer in the greedy answer that counts as
        right: the study's own bar (``ANSWER_THRESHOLD``), so "known" here is "right" there.
    max_new_tokens: greedy answer length; 24 tokens leave room for the sentence an instruct
        model wraps around a one-to-few-word answer (the main job's 20-token answers would
        cut a few of them before the answer).
    fractions: the shares of the known facts in forget, retain and general (equal thirds:
        no split is favoured; the main job takes ``max_items`` of each).
    seed: the shuffle's seed; the same model, format, files and seed give the same splits.
    paraphrases: a file of paraphrased questions attached to rows that have none (matched by
        the question's exact text), the facts' second format; None attaches none.
    """

    threshold: float = ANSWER_THRESHOLD
    max_new_tokens: int = 24
    fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    seed: int = 0
    paraphrases: str | None = str(TOFU_PARAPHRASES)

    def validate(self) -> None:
        if len(self.fractions) != len(KNOWN_SPLITS) or any(f < 0 for f in self.fractions) or sum(self.fractions) <= 0:
            raise ConfigError(
                f"fractions must be {len(KNOWN_SPLITS)} non-negative shares (forget, retain, general), "
                f"got {self.fractions!r}"
            )
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")


@dataclass
class KnownFacts:
    """The splits (TOFU-format rows with the model's answers) and how they were made."""

    splits: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.splits.items()}


def _rows_of(path: Path) -> list[dict[str, Any]]:
    rows = read_records(path)
    items = records_from_rows(rows, str(path), kind="qa")  # malformed rows fail here, naming the file and row
    out = []
    for row, item in zip(rows, items):
        row = dict(row)
        row["id"] = item.id
        row["source"] = path.name
        out.append(row)
    return out


def _cut(rows: list[dict[str, Any]], fractions: Sequence[float]) -> list[list[dict[str, Any]]]:
    """Consecutive pieces of ``rows`` in the given shares (largest-remainder rounding)."""
    total = sum(fractions)
    exact = [len(rows) * f / total for f in fractions]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - sizes[i], reverse=True)[: len(rows) - sum(sizes)]:
        sizes[i] += 1
    out, start = [], 0
    for n in sizes:
        out.append(rows[start : start + n])
        start += n
    return out


def build_known_facts(
    model,
    sources: Sequence[str | os.PathLike],
    fmt: PromptFormat,
    config: KnownFactsConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> KnownFacts:
    """Ask ``model`` every question of the TOFU-format files ``sources`` in prompt format
    ``fmt`` and split the questions into known facts (forget / retain / general, disjoint,
    each source in the same proportions) and ``unknown``; see the module docstring."""
    config = config or KnownFactsConfig()
    config.validate()
    by_source = _source_rows(sources, config)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in (*KNOWN_SPLITS, UNKNOWN_SPLIT)}
    rng = random.Random(config.seed)
    done = 0
    total = sum(len(r) for r in by_source.values())
    for name, rows in by_source.items():
        items: list[QAItem] = records_from_rows(rows, name, kind="qa")
        answers = greedy_answers(model, items, max_new_tokens=config.max_new_tokens, stop_at_newline=False, fmt=fmt)
        known = []
        for row, item, answer in zip(rows, items, answers):
            recall = rouge_l_recall(answer, item.answer)
            row = {**row, "model_answer": answer, "model_rouge_l_recall": recall}
            (known if recall >= config.threshold else splits[UNKNOWN_SPLIT]).append(row)
        rng.shuffle(known)
        for split, piece in zip(KNOWN_SPLITS, _cut(known, config.fractions)):
            splits[split].extend(piece)
        done += len(rows)
        if progress is not None:
            progress(done, total)
    result = KnownFacts(splits, _splits_manifest(model, fmt, config, by_source, splits))
    result.manifest["counts"] = result.counts()
    return result


def _source_rows(sources: Sequence[str | os.PathLike], config: KnownFactsConfig) -> dict[str, list[dict[str, Any]]]:
    """File name -> the rows of each source file, with the paraphrases of ``config.paraphrases`` filled in."""
    if not sources:
        raise ConfigError("give at least one TOFU-format QA file (--source FILE)")
    paraphrases = read_paraphrases(config.paraphrases) if config.paraphrases else {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for src in sources:
        path = Path(src)
        if not path.is_file():
            raise DataError(f"source file {str(path)!r} does not exist; give a TOFU-format QA file")
        by_source[path.name] = [
            {
                **row,
                "paraphrased_question": paraphrases[row["question"]],
                "paraphrase_source": Path(config.paraphrases).name,
            }
            if not row.get("paraphrased_question") and row["question"] in paraphrases
            else row
            for row in _rows_of(path)
        ]
    return by_source


def portable_source(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """A model's source description without the build machine's paths: a weights file is named by
    its file name and identified by its SHA-256, so the manifest means the same on every machine.

    Example:
        >>> portable_source({"format": "hf"})
        {'format': 'hf'}
    """
    if not source or not source.get("file"):
        return source
    path = Path(source["file"])
    out = {k: v for k, v in source.items() if k != "file"}
    out["file_name"] = path.name
    if path.is_file():
        with open(path, "rb") as f:
            out["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _splits_manifest(
    model,
    fmt: PromptFormat,
    config: KnownFactsConfig,
    by_source: dict[str, list[dict[str, Any]]],
    splits: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """How the splits were made: the model, prompt format, sources, settings and criterion."""
    return {
        "model": getattr(model, "unpact_spec", None),
        "model_source": portable_source(getattr(model, "unpact_source", None)),
        "prompt_format": fmt.name,
        "system_prompt": getattr(fmt, "system_prompt", None),
        "sources": {name: len(rows) for name, rows in by_source.items()},
        "known_by_source": {
            name: sum(r["source"] == name for s in KNOWN_SPLITS for r in splits[s]) for name in by_source
        },
        "config": {**asdict(config), "fractions": list(config.fractions)},
        "criterion": f"ROUGE-L recall of the reference answer in the greedy answer >= {config.threshold}",
    }


def write_known_facts(facts: KnownFacts, directory: str | os.PathLike) -> Path:
    """Write each split as ``<split>.json`` (TOFU's format, loadable with ``--benchmark tofu
    --benchmark-path DIR``) and ``manifest.json`` (how they were made, and :data:`DECLARED`: the
    splits' style and roles, which the loader reads) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in facts.splits.items():
        (directory / f"{name}.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    manifest = {**facts.manifest, **DECLARED}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return directory
