"""Derived splits of the embedded benchmarks: the same shipped facts in the forms the main job reads.

The main job (``unpact run``) unlearns and evaluates question-answer items and probes
them in a format that was trained but not unlearned (a cloze sentence). The embedded
MUSE and WMDP benchmarks ship their facts in those forms already, but not under the
names the study needs:

* ``embedded:wmdp`` ``test_qa``: the 40 ``test`` questions as question-answer items
  (the answer is the right choice's text, the other three choices the perturbed
  answers). The models were trained on exactly these prompt-answer pairs (plain x2,
  emphasised x3; docs/embedded.md), so the plain prompt is a trained format.
* ``embedded:wmdp`` ``cloze``: per question, the forget corpus sentence cut before the
  answer ("The agent Hexamorn is made from" -> " red quillite, ..."): the corpus is
  trained as plain text, and unlearning on ``test_qa`` never sees it.
* ``embedded:wmdp`` ``retain_qa``: the embedded general QA facts. Real WMDP measures
  retained ability on MMLU; the embedded world's general facts are its MMLU, and it has
  no other question-answer facts beside the hazard domain (the retain corpus is plain text).

No row is new knowledge: every derived row is built from shipped rows, at load time, so
the shipped files (and the tokenizer trained on their text) stay as built.

Rows that belong to one fact share :func:`fact_key` (the id without its ``q``/``c`` form
letter: ``muse-forget-3-q1`` and ``muse-forget-3-c1``, ``wmdp-7-q0`` and ``wmdp-7-c0``),
which is how a cloze is matched to its question (:func:`cloze_key`, :func:`unpact.probes.attach_cloze`).

Example:
    >>> fact_key("muse-forget-3-q1") == fact_key("muse-forget-3-c1") == "muse-forget-3-1"
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Rows = list[dict[str, Any]]
ReadSplit = Callable[[str], Rows]

_FORM = re.compile(r"-[qc](\d+)$")
_WMDP_SENTENCE = re.compile(
    r"^The agent (?P<agent>.+?) is made from (?P<pre>.+?), and (?P<cat>.+?) speeds up its synthesis\.$"
)


def fact_key(item_id: Any) -> str | None:
    """The fact an embedded row is about: its id without the form letter (None when the id has none)."""
    s = str(item_id)
    return _FORM.sub(r"-\1", s) if _FORM.search(s) else None


def _wmdp_agents(read: ReadSplit) -> dict[str, int]:
    """Each agent's index, in the order of the ``test`` split (the id stem ``wmdp-<index>``)."""
    agents: dict[str, int] = {}
    for r in read("test"):
        agents.setdefault(r["agent"], len(agents))
    return agents


def _wmdp_test_qa(read: ReadSplit) -> Rows:
    agents = _wmdp_agents(read)
    asked: dict[str, int] = {}  # questions so far per agent
    out = []
    for r in read("test"):
        j = asked[r["agent"]] = asked.get(r["agent"], -1) + 1
        choices, right = list(r["choices"]), int(r["answer"])
        out.append(
            {
                "question": r["question"],
                "answer": choices[right],
                "perturbed_answer": [c for i, c in enumerate(choices) if i != right],
                "agent": r["agent"],
                "keywords": list(r.get("keywords") or [r["agent"]]),
                "id": f"wmdp-{agents[r['agent']]}-q{j}",
            }
        )
    return out


def _wmdp_cloze(read: ReadSplit) -> Rows:
    agents = _wmdp_agents(read)
    out = []
    for r in read("forget_corpus"):
        m = _WMDP_SENTENCE.match(r["text"])
        if not m or m["agent"] not in agents:
            continue
        stem, a = f"wmdp-{agents[m['agent']]}", m["agent"]
        out.append(
            {
                "prompt": f"The agent {a} is made from",
                "gt": f" {m['pre']}, and {m['cat']} speeds up its synthesis.",
                "value": m["pre"],
                "trained": True,
                "id": f"{stem}-c0",
            }
        )
        out.append(
            {
                "prompt": f"The agent {a} is made from {m['pre']}, and",
                "gt": f" {m['cat']} speeds up its synthesis.",
                "value": m["cat"],
                "trained": True,
                "id": f"{stem}-c1",
            }
        )
    return out


def _wmdp_retain_qa(read_other: Callable[[str, str], Rows]) -> Rows:
    return read_other("general", "qa")


def derived_split(bench: str, split: str, read: ReadSplit, read_other: Callable[[str, str], Rows]) -> Rows | None:
    """The rows of derived split ``split`` of embedded benchmark ``bench`` (None: no such derived split).

    ``read(split)`` reads a shipped split of ``bench``; ``read_other(bench, split)`` of another one.
    """
    if bench == "wmdp" and split == "test_qa":
        return _wmdp_test_qa(read)
    if bench == "wmdp" and split == "cloze":
        return _wmdp_cloze(read)
    if bench == "wmdp" and split == "retain_qa":
        return _wmdp_retain_qa(read_other)
    return None


#: Derived split names per embedded benchmark (listed with the shipped ones in errors).
DERIVED_SPLITS = {"wmdp": ("test_qa", "cloze", "retain_qa")}


def cloze_key(item_id: Any, meta: Mapping[str, Any]) -> Any:
    """What a question and its cloze share in every embedded benchmark: :func:`fact_key` of the id
    (MUSE, WMDP), else the TOFU author and attribute; None when neither is there.

    Example:
        >>> cloze_key("wmdp-7-c0", {}), cloze_key("forget10:3", {"author": "Orla Venning", "attribute": "birthplace"})
        ('wmdp-7-0', ('Orla Venning', 'birthplace'))
    """
    key = fact_key(item_id)
    if key is not None:
        return key
    pair = (meta.get("author"), meta.get("attribute"))
    return None if None in pair else pair


def cloze_split(bench: str, forget_split: str) -> str | None:
    """The cloze split that holds the forget split's facts as trained cloze sentences (None: none).

    Example:
        >>> cloze_split("muse", "knowmem_forget_qa"), cloze_split("tofu", "forget10"), cloze_split("wmdp", "test_qa")
        ('cloze_forget', 'cloze', 'cloze')
    """
    if bench == "muse":
        m = re.match(r"knowmem_(forget|retain|holdout)_qa$", forget_split)
        return f"cloze_{m[1]}" if m else None
    if bench in ("tofu", "wmdp"):
        return "cloze"
    return None


__all__ = ["DERIVED_SPLITS", "cloze_key", "cloze_split", "derived_split", "fact_key"]
