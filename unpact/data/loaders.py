"""Read TOFU, MUSE and WMDP (and the embedded benchmarks) into typed records.

Published field names are kept as they are:

* TOFU: ``question``, ``answer``, ``paraphrased_answer``, ``perturbed_answer``
  (a list), ``paraphrased_question`` -> :class:`QAItem`;
* MUSE: ``verbmem`` rows ``prompt``/``gt`` and ``raw`` rows ``text`` ->
  :class:`TextItem`; ``knowmem`` rows ``question``/``answer`` -> :class:`QAItem`;
* WMDP: ``question``, ``choices``, ``answer`` (index) -> :class:`MCItem`.

Sources: a hub id through ``datasets`` (for users with a network), or local
``.json`` (a list, or JSON lines as TOFU ships them), ``.jsonl`` or ``.parquet``
files; ``path`` may be the file itself or a directory holding ``<split>.<ext>``.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> bench = load_benchmark("tofu", "real_authors_perturbed",
    ...                        path="shared/data/tofu")            # doctest: +SKIP
    >>> bench[0].question                                           # doctest: +SKIP
    "Who wrote the play 'Romeo and Juliet'?"
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unpact.data.embedded_views import DERIVED_SPLITS, derived_split
from unpact.data.records import ROLES, STYLES, Benchmark, Item, MCItem, QAItem, TextItem
from unpact.data.shipped import DATA_DIR
from unpact.errors import DataError

#: Canonical benchmark names and the hub ids they load from when no path is given.
HUB_IDS = {
    "tofu": "locuslab/TOFU",
    "muse": "muse-bench/MUSE-News",
    "muse-news": "muse-bench/MUSE-News",
    "muse-books": "muse-bench/MUSE-Books",
    "wmdp": "cais/wmdp",
}
_ALIASES = {v.lower(): k for k, v in HUB_IDS.items()}
_EXTENSIONS = (".json", ".jsonl", ".parquet")

#: The metrics style each benchmark family (and each embedded benchmark) declares.
FAMILY_STYLES = {
    "tofu": "tofu",
    "muse": "muse",
    "wmdp": "wmdp",
    "embedded:tofu": "tofu",
    "embedded:muse": "muse",
    "embedded:wmdp": "wmdp",
    "embedded:general": "tofu",
}


def _roles(forget: tuple[str, ...] = (), retain: tuple[str, ...] = (), other: tuple[str, ...] = ()) -> dict[str, str]:
    return {**{s: "forget" for s in forget}, **{s: "retain" for s in retain}, **{s: "other" for s in other}}


#: The role (TOFU's forget / retain / other) of each split of the benchmarks unpact knows, by
#: family or embedded benchmark. A split not listed (a user's own file under a known family) is
#: undeclared and falls back on its name (:func:`unpact.data.records.role_of`).
SPLIT_ROLES: dict[str, dict[str, str]] = {
    "tofu": _roles(
        forget=("forget01", "forget05", "forget10", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed"),
        retain=("retain90", "retain95", "retain99", "retain_perturbed"),
        other=(
            "holdout01",
            "holdout05",
            "holdout10",
            "real_authors",
            "real_authors_perturbed",
            "world_facts",
            "world_facts_perturbed",
            "full",
        ),
    ),
    "muse": _roles(
        forget=("verbmem/forget", "knowmem/forget_qa", "knowmem/forget_qa_icl", "raw/forget", "privleak/forget"),
        retain=("knowmem/retain_qa", "knowmem/retain_qa_icl", "raw/retain1", "raw/retain2", "privleak/retain"),
        other=("raw/holdout", "privleak/holdout"),
    ),
    "wmdp": _roles(other=("wmdp-bio", "wmdp-chem", "wmdp-cyber")),
    "embedded:tofu": _roles(
        forget=("forget01", "forget05", "forget10"),
        retain=("retain90", "retain95", "retain99"),
        other=("bios", "cloze", "heldout_phrasing", "holdout", "holdout01", "holdout05", "holdout10"),
    ),
    "embedded:muse": _roles(
        forget=("cloze_forget", "knowmem_forget_qa", "raw_forget", "verbmem_forget"),
        retain=("cloze_retain", "knowmem_retain_qa", "raw_retain", "verbmem_retain"),
        other=("cloze_holdout", "knowmem_holdout_qa", "raw_holdout", "verbmem_holdout"),
    ),
    # test / test_qa are the questions unlearning targets, but as splits they are scored as
    # "other" (the main job passes each group's role itself)
    "embedded:wmdp": _roles(
        forget=("forget_corpus",), retain=("retain_corpus", "retain_qa"), other=("test", "test_qa", "cloze")
    ),
    "embedded:general": _roles(other=("cloze", "mc", "qa")),
}


def declared(family: str, split: str) -> dict[str, Any]:
    """What the loader declares about split ``split`` of ``family`` (a family of :data:`HUB_IDS`
    or an ``embedded:<name>``): ``style``, ``role`` and ``embedded``, each None where unknown.

    Example:
        >>> declared("tofu", "forget10")
        {'style': 'tofu', 'role': 'forget', 'embedded': False}
        >>> declared("my-data", "set1")
        {'style': None, 'role': None, 'embedded': None}
    """
    known = family in FAMILY_STYLES
    return {
        "style": FAMILY_STYLES.get(family),
        "role": SPLIT_ROLES.get(family, {}).get(split),
        "embedded": family.startswith("embedded:") if known else None,
    }


def _family(name: str) -> str:
    n = name.lower()
    n = _ALIASES.get(n, n)
    if n.startswith("muse"):
        return "muse"
    return n


# ---------------------------------------------------------------- file reading


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``.json`` (list or JSON lines), ``.jsonl`` or ``.parquet`` file as dicts."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"benchmark file {str(p)!r} does not exist")
    if p.is_dir():
        raise DataError(f"{str(p)!r} is a directory; name a .json, .jsonl or .parquet file")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        rows = _read_parquet(p)
    elif suffix in (".json", ".jsonl"):
        rows = _read_json(p)
    else:
        raise DataError(f"{str(p)!r}: unsupported file type {suffix or '(none)'}; use .json, .jsonl or .parquet")
    if not rows:
        raise DataError(f"benchmark file {str(p)!r} is empty; it must hold at least one record")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{str(p)!r}: record {i} is a {type(row).__name__}, not an object with named fields")
    return rows


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq

        return pq.read_table(str(p)).to_pylist()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{str(p)!r} is not a readable parquet file: {exc}") from exc


def read_text_utf8(p: Path, what: str = "benchmark file", error=DataError) -> str:
    """The text of ``p``, or ``error`` naming the file and the first bad byte when it is not UTF-8."""
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {str(p)!r} is not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "re-save it as UTF-8"
        ) from None


def _read_json(p: Path) -> list[Any]:
    text = read_text_utf8(p)
    if not text.strip():
        raise DataError(f"benchmark file {str(p)!r} is empty; it must hold at least one record")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if "Extra data" not in str(exc):
                raise DataError(
                    f"{str(p)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
                ) from exc
            data = None  # JSON lines in a .json file, as TOFU ships them
        if data is not None:
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) == 1:
                    return lists[0]
                if all(isinstance(v, list) for v in data.values()) and data:
                    n = len(next(iter(data.values())))
                    return [{k: v[i] for k, v in data.items()} for i in range(n)]
                return [data]
            if isinstance(data, list):
                return data
            raise DataError(f"{str(p)!r} holds a JSON {type(data).__name__}; expected a list of records")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{str(p)!r} is not valid JSON lines: line {lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
    return rows


# ------------------------------------------------------------ record building


def _need(row: dict, field: str, source: str, i: int, kind: str, hint: str) -> Any:
    if field not in row or row[field] is None:
        raise DataError(f"{source}: record {i} has no field {field!r} ({kind} records need {hint})")
    return row[field]


def _text(value: Any, field: str, source: str, i: int) -> str:
    if not isinstance(value, str):
        raise DataError(f"{source}: record {i}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def qa_from_row(row: dict, source: str, i: int) -> QAItem:
    hint = "'question' and 'answer'"
    q = _text(_need(row, "question", source, i, "QA", hint), "question", source, i)
    a = _text(_need(row, "answer", source, i, "QA", hint), "answer", source, i)
    para = row.get("paraphrased_answer")
    if para is not None:
        para = _text(para, "paraphrased_answer", source, i)
    pert = row.get("perturbed_answer", row.get("perturbed_answers"))
    if pert is None:
        pert = ()
    elif isinstance(pert, str):
        pert = (pert,)
    elif isinstance(pert, (list, tuple)):
        for j, p in enumerate(pert):
            _text(p, f"perturbed_answer[{j}]", source, i)
        pert = tuple(pert)
    else:
        raise DataError(
            f"{source}: record {i}: field 'perturbed_answer' must be a list of strings, got {type(pert).__name__}"
        )
    pq = row.get("paraphrased_question")
    if pq is not None:
        pq = _text(pq, "paraphrased_question", source, i)
    meta = {
        k: v
        for k, v in row.items()
        if k
        not in {
            "question",
            "answer",
            "paraphrased_answer",
            "perturbed_answer",
            "perturbed_answers",
            "paraphrased_question",
            "id",
        }
    }
    return QAItem(q, a, para, pert, pq, id=_id(row, source, i), meta=meta)


def mc_from_row(row: dict, source: str, i: int) -> MCItem:
    hint = "'question', 'choices' and 'answer'"
    q = _text(_need(row, "question", source, i, "multiple-choice", hint), "question", source, i)
    choices = _need(row, "choices", source, i, "multiple-choice", hint)
    if not isinstance(choices, (list, tuple)) or isinstance(choices, str):
        raise DataError(
            f"{source}: record {i}: field 'choices' must be a list of strings, got {type(choices).__name__}"
        )
    if len(choices) < 2:
        raise DataError(f"{source}: record {i}: field 'choices' needs at least two choices, got {len(choices)}")
    for j, c in enumerate(choices):
        _text(c, f"choices[{j}]", source, i)
    ans = _need(row, "answer", source, i, "multiple-choice", hint)
    if isinstance(ans, str) and len(ans) == 1 and ans.upper() in "ABCDEFGHIJ":
        ans = "ABCDEFGHIJ".index(ans.upper())
    if isinstance(ans, bool) or not isinstance(ans, int):
        raise DataError(
            f"{source}: record {i}: field 'answer' must be the index of the right choice (an integer), got {ans!r}"
        )
    if not 0 <= ans < len(choices):
        raise DataError(
            f"{source}: record {i}: field 'answer' = {ans} is out of range for {len(choices)} choices (0..{len(choices) - 1})"
        )
    meta = {k: v for k, v in row.items() if k not in {"question", "choices", "answer", "id"}}
    dup = _duplicate_choices(choices)
    if dup:
        # kept (benchmarks ship such items), flagged; mc_accuracy counts a tie with a duplicate
        # of the right choice as right
        meta["duplicate_choices"] = dup
    return MCItem(q, tuple(choices), ans, id=_id(row, source, i), meta=meta)


def _duplicate_choices(choices) -> list[list[int]]:
    """Groups of indices of choices with the same text (after stripping), e.g. ``[[0, 2]]``."""
    seen: dict[str, list[int]] = {}
    for j, c in enumerate(choices):
        seen.setdefault(str(c).strip(), []).append(j)
    return [g for g in seen.values() if len(g) > 1]


def text_from_row(row: dict, source: str, i: int) -> TextItem:
    if "text" in row and "prompt" not in row:
        t = _text(row["text"], "text", source, i)
        meta = {k: v for k, v in row.items() if k not in {"text", "id"}}
        return TextItem("", t, id=_id(row, source, i), meta=meta)
    hint = "'prompt' and 'gt' (or 'continuation'), or 'text'"
    prompt = _text(_need(row, "prompt", source, i, "text", hint), "prompt", source, i)
    cont_field = "gt" if "gt" in row else "continuation"
    cont = _text(_need(row, cont_field, source, i, "text", hint), cont_field, source, i)
    meta = {k: v for k, v in row.items() if k not in {"prompt", "gt", "continuation", "id"}}
    return TextItem(prompt, cont, id=_id(row, source, i), meta=meta)


def _id(row: dict, source: str, i: int) -> str:
    rid = row.get("id")
    return str(rid) if rid is not None else f"{Path(source).stem}:{i}"


_BUILDERS = {"qa": qa_from_row, "mc": mc_from_row, "text": text_from_row}


def guess_kind(row: dict) -> str:
    """``"mc"``, ``"qa"`` or ``"text"`` from a row's field names."""
    if "choices" in row:
        return "mc"
    if "question" in row:
        return "qa"
    if "prompt" in row or "text" in row or "gt" in row:
        return "text"
    raise DataError(
        f"cannot tell the record type from fields {sorted(row)}: expected question/answer (QA), "
        "question/choices/answer (multiple choice) or prompt/gt or text (passages)"
    )


def records_from_rows(rows: Iterable[dict], source: str, kind: str | None = None) -> list[Item]:
    """Validate ``rows`` and build records; errors name ``source``, the record index and the field."""
    items: list[Item] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{source}: record {i} is a {type(row).__name__}, not an object with named fields")
        k = kind or guess_kind(row)
        items.append(_BUILDERS[k](row, source, i))
    if not items:
        raise DataError(f"{source} holds no records")
    return items


# ------------------------------------------------------------------- loading


def _expected_kind(family: str, split: str, rows: list[dict]) -> str | None:
    if family == "tofu":
        return "qa"
    if family == "wmdp":
        return "mc"
    if family == "muse":
        s = split.lower()
        if s.startswith("knowmem"):
            return "qa"
        if s.startswith(("verbmem", "raw")):
            return "text"
    return None


def _find_split_file(directory: Path, split: str) -> Path:
    stems = [split, split.replace("/", "_"), split.replace("/", os.sep)]
    for stem in stems:
        found = [directory / f"{stem}{ext}" for ext in _EXTENSIONS if (directory / f"{stem}{ext}").is_file()]
        if len(found) > 1:
            raise DataError(
                f"split {split!r} is ambiguous in {str(directory)!r}: both "
                + " and ".join(repr(f.name) for f in found)
                + " exist; remove or rename all but one"
            )
        if found:
            return found[0]
    available = sorted(
        str(f.relative_to(directory).with_suffix("")) for f in directory.rglob("*") if f.suffix.lower() in _EXTENSIONS
    )
    raise DataError(
        f"no file for split {split!r} in {str(directory)!r} (looked for {split}.json/.jsonl/.parquet); "
        f"available splits: {', '.join(available) or 'none'}"
    )


def _load_hub(family: str, name: str, split: str) -> tuple[list[dict], str]:
    import datasets

    hub_id = HUB_IDS.get(name.lower(), name)
    if family == "tofu":
        args, hf_split = (hub_id, split), "train"
    elif family == "wmdp":
        args, hf_split = (hub_id, split), "test"
    elif family == "muse" and "/" in split:
        config, hf_split = split.split("/", 1)
        args = (hub_id, config)
    else:
        args, hf_split = (hub_id,), split
    try:
        ds = datasets.load_dataset(*args, split=hf_split)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"could not load {name!r} split {split!r} from the hub ({type(exc).__name__}: {exc}); "
            "with no network, pass path= to local json/jsonl/parquet files"
        ) from exc
    return [dict(r) for r in ds], f"{hub_id}:{split}"


#: the file beside a user's split files that declares what they are (``unpact known-facts`` writes one)
MANIFEST = "manifest.json"


def declared_by_manifest(directory: Path, split: str) -> dict[str, Any]:
    """What ``directory/manifest.json`` declares about split ``split``: ``style`` (its ``"style"``)
    and ``role`` (its ``"roles"[split]``), each left out where the manifest does not say (or there
    is no manifest): ``{"style": "tofu", "roles": {"forget": "forget", "general": "other"}}``."""
    file = directory / MANIFEST
    if not file.is_file():
        return {}
    try:
        doc = json.loads(read_text_utf8(file, "manifest"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(file)!r} is not valid JSON ({exc.msg}); fix it or remove it") from None
    if not isinstance(doc, dict):
        return {}
    roles = doc.get("roles") if isinstance(doc.get("roles"), dict) else {}
    out = {k: v for k, v in {"style": doc.get("style"), "role": roles.get(split)}.items() if v is not None}
    for key, allowed in (("style", STYLES), ("role", ROLES)):
        if key in out and out[key] not in allowed:
            raise DataError(
                f"{str(file)!r} declares {key} {out[key]!r} for split {split!r}; use one of {', '.join(allowed)}"
            )
    return out


def load_benchmark(name: str, split: str, path: str | os.PathLike | None = None) -> Benchmark:
    """Load one split of a benchmark as typed records.

    Args:
        name: ``"tofu"``, ``"muse"`` (``"muse-news"``/``"muse-books"``), ``"wmdp"``, their
            hub ids, ``"embedded:tofu"``/``"embedded:muse"``/``"embedded:wmdp"``/
            ``"embedded:general"``, or any name with ``path`` given (fields decide the type).
        split: the split: TOFU ``"forget10"``, ``"retain90"``, ``"real_authors_perturbed"``...;
            MUSE ``"verbmem/forget"``, ``"knowmem/retain_qa"``, ``"raw/forget"``...;
            WMDP ``"wmdp-bio"``...
        path: a local file, or a directory holding ``<split>.json|.jsonl|.parquet``.

    The split declares its metrics style, role and whether it is embedded (:class:`Benchmark`):
    from :data:`FAMILY_STYLES` and :data:`SPLIT_ROLES` for the benchmarks unpact knows, and from a
    ``manifest.json`` beside a local file (:func:`declared_by_manifest`); what none of them
    declares is left None, and the metrics fall back on the names.
    """
    if name.startswith("embedded:"):
        return load_embedded_benchmark(name, split)
    family = _family(name)
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise DataError(f"benchmark path {str(p)!r} does not exist")
        file = _find_split_file(p, split) if p.is_dir() else p
        rows = read_records(file)
        source = str(file)
        what = {**declared(family, split), **declared_by_manifest(file.parent, split)}
    else:
        rows, source = _load_hub(family, name, split)
        if not rows:
            raise DataError(f"{source} holds no records")
        what = declared(family, split)
    kind = _expected_kind(family, split, rows)
    return Benchmark(name=name, split=split, items=records_from_rows(rows, source, kind), source=source, **what)


def embedded_benchmark_names() -> list[str]:
    """The shipped embedded benchmarks (``tofu``, ``muse``, ``wmdp``, ``general``), or [] before a build."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir())


def load_embedded_benchmark(name: str, split: str, data_dir: str | Path | None = None) -> Benchmark:
    """Load ``embedded:<benchmark>`` split ``split`` from the shipped files.

    ``data_dir`` reads from another build's ``data/`` directory instead
    (``unpact build-embedded --out DIR`` writes ``DIR/data``).
    """
    bench = name.split(":", 1)[-1]
    directory = Path(data_dir or DATA_DIR) / bench
    if not directory.is_dir():
        known = ", ".join(f"embedded:{n}" for n in embedded_benchmark_names()) or "none (run `unpact build-embedded`)"
        raise DataError(f"unknown embedded benchmark {name!r}; known: {known}")
    file = directory / f"{split}.jsonl"
    if not file.is_file():
        root = Path(data_dir or DATA_DIR)
        rows = derived_split(
            bench,
            split,
            lambda s: read_records(directory / f"{s}.jsonl"),
            lambda b, s: read_records(root / b / f"{s}.jsonl"),
        )
        if rows is None:
            known = ", ".join(sorted([p.stem for p in directory.glob("*.jsonl")] + list(DERIVED_SPLITS.get(bench, ()))))
            raise DataError(f"unknown split {split!r} of {name!r}; known splits: {known}")
        source = f"{directory}/{split} (derived, unpact.data.embedded_views)"
        return Benchmark(
            name=name,
            split=split,
            items=records_from_rows(rows, source),
            source=source,
            **declared(f"embedded:{bench}", split),
        )
    rows = read_records(file)
    return Benchmark(
        name=name,
        split=split,
        items=records_from_rows(rows, str(file)),
        source=str(file),
        **declared(f"embedded:{bench}", split),
    )


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a text file (TOFU's ``idontknow.jsonl`` is one refusal per line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file {str(p)!r} does not exist")
    lines = [ln.strip() for ln in read_text_utf8(p, "file").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"file {str(p)!r} is empty")
    return lines
