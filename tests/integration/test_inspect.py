"""`unpact inspect` (text, self-contained HTML, JSON equal to attribute's), the notebook views, bad input."""

from __future__ import annotations

import base64
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unpact.cli import main
from unpact.testing import make_tiny_checkpoint

EMBEDDED_ITEM = 3
NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "examples" / "inspect.ipynb"


class _Page(HTMLParser):
    """Every image source, every linked URL, and the tags that would fetch or run something."""

    def __init__(self):
        super().__init__()
        self.imgs, self.urls, self.bad_tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for k in ("href", "src", "action", "poster", "data"):
            if a.get(k) and tag != "img":
                self.urls.append(a[k])
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.bad_tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def check_self_contained(page: str, min_images: int) -> _Page:
    p = _Page()
    p.feed(page)
    assert len(p.imgs) >= min_images
    for src in p.imgs:  # every image embedded, and a real PNG
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not p.urls and not p.bad_tags
    assert "http://" not in page and "https://" not in page and "url(" not in page
    return p


def _close(x, y, tol=1e-9):
    """Nested lists / dicts of numbers equal within ``tol`` (exact for everything else)."""
    if isinstance(x, dict):
        assert set(x) == set(y)
        for k in x:
            _close(x[k], y[k], tol)
    elif isinstance(x, list):
        assert len(x) == len(y)
        for a, b in zip(x, y):
            _close(a, b, tol)
    elif isinstance(x, float) or isinstance(y, float):
        assert x is not None and y is not None and math.isclose(x, y, rel_tol=0, abs_tol=tol), (x, y)
    else:
        assert x == y


def _head_sums(extras, key):
    return [[sum(src) for src in layer] for layer in extras[key]]


def check_numbers(data: dict, model, against, item, methods, fmt=None):
    """The JSON's attributions are attribute(...)'s; its deltas are their differences."""
    from unpact.attribution import attribute

    for m in methods:
        b = attribute(model, item, method=m, fmt=fmt).to_dict()
        assert data["models"]["before"]["attributions"][m] == b, m  # the same numbers, bit for bit
        if against is None:
            continue
        a = attribute(against, item, method=m, fmt=fmt).to_dict()
        assert data["models"]["after"]["attributions"][m] == a, m
        d = data["delta"]["attributions"][m]
        _close(d["scores"], [y - x for x, y in zip(b["scores"], a["scores"])])
        _close(d["lp"], a["lp"] - b["lp"])
        if m == "heads":
            for k in ("attn_direct", "mlp_direct", "attn_total", "mlp_total"):
                _close(d[k], [y - x for x, y in zip(b["extras"][k], a["extras"][k])])
            hb, ha = _head_sums(b["extras"], "head_total"), _head_sums(a["extras"], "head_total")
            _close(d["head_total"], [[y - x for x, y in zip(rb, ra)] for rb, ra in zip(hb, ha)])
    # the logit lens after the last layer is the model's own LP
    for side in ("before", "after") if against is not None else ("before",):
        r = data["models"][side]["readout"]
        assert len(r["lens_logprob"]) == model.cfg.n_layers + 1 == len(r["lens_rank"])
        assert abs(r["lens_logprob"][-1] - r["lp"]) < 1e-4
        lp = data["models"][side]["attributions"][methods[0]]["lp"]
        assert abs(r["lp"] - lp) < 1e-4
        # the answer's first position (the prompt's last) attends only to the prompt: each head's row sums to 1
        assert all(abs(sum(row) - 1) < 1e-4 for layer in r["attention"] for row in layer)


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------ embedded


@pytest.mark.slow
def test_inspect_embedded_against(tmp_path, capsys):
    from unpact import load_benchmark, load_model

    html_path, json_path = tmp_path / "i.html", tmp_path / "i.json"
    rc, out, err = _run(
        [
            "inspect",
            "embedded:gpt2",
            "--benchmark",
            "embedded:tofu/forget10",
            "--item",
            str(EMBEDDED_ITEM),
            "--against",
            "embedded:gpt2-retain",
            "--method",
            "loo,ig,heads",
            "--html",
            str(html_path),
            "--json",
            str(json_path),
        ],
        capsys,
    )
    assert rc == 0, err
    data = json.loads(json_path.read_text())
    item = list(load_benchmark("embedded:tofu", "forget10"))[EMBEDDED_ITEM]
    model, against = load_model("embedded:gpt2"), load_model("embedded:gpt2-retain")
    check_numbers(data, model, against, item, ["loo", "integrated_gradients", "heads"])
    assert data["item"]["id"] == item.id and data["against"] == "embedded:gpt2-retain"

    # text: every section, the KeyTokens marked, both models and their difference
    for s in ("Tokens:", "Layers:", "Top heads", "loo before", "loo after", "loo Δ", "ig Δ", "lens after"):
        assert s in out, s
    tokens = data["models"]["before"]["attributions"]["loo"]["tokens"]
    section = out[out.index("Tokens:") : out.index("Layers:")]
    rows = {line.split()[0]: line for line in section.splitlines() if line.strip() and line.split()[0].isdigit()}
    assert len(rows) == len(tokens)
    for k in data["key_tokens"]:
        assert "*" in rows[str(k)].split()[1]
    assert data["key_tokens"], "the original model has KeyTokens on its own forget item"

    page = html_path.read_text()
    # 1 layer chart + 3 layer x head maps (before, after, change) + one attention map per shown head
    p = check_self_contained(page, 4 + len(data["heads"]))
    assert "Logit lens" in "".join(p.text) and "embedded:gpt2-retain" in page


# ---------------------------------------------------------- tiny checkpoint


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """Two tiny Llama checkpoints with the same tokenizer (an 'original' and a stand-in 'unlearned')."""
    root = tmp_path_factory.mktemp("inspect")
    return str(make_tiny_checkpoint("llama", root / "a")), str(make_tiny_checkpoint("llama", root / "b", seed=1))


def test_inspect_tiny_checkpoint(tiny_pair, tmp_path, capsys):
    from unpact import load_model
    from unpact.data import QAItem

    a, b = tiny_pair
    q, ans = "Where was the author Ana Lind born?", "Lima"
    html_path, json_path = tmp_path / "t.html", tmp_path / "t.json"
    rc, out, err = _run(
        [
            "inspect",
            a,
            "--question",
            q,
            "--answer",
            ans,
            "--against",
            b,
            "--method",
            "loo,heads",
            "--head",
            "1.2",
            "--head",
            "0.0",
            "--html",
            str(html_path),
            "--json",
            str(json_path),
        ],
        capsys,
    )
    assert rc == 0, err
    data = json.loads(json_path.read_text())
    assert data["heads"] == [[1, 2], [0, 0]]
    check_numbers(data, load_model(a), load_model(b), QAItem(q, ans, id="question"), ["loo", "heads"])
    assert "attn 1.2" in out and "Top heads" in out
    check_self_contained(html_path.read_text(), 4 + 2)

    # one model, no --against: no "after", no delta
    rc, out, err = _run(
        ["inspect", a, "--question", q, "--answer", ans, "--method", "loo", "--json", str(json_path)], capsys
    )
    assert rc == 0, err
    data = json.loads(json_path.read_text())
    assert data["delta"] is None and "after" not in data["models"] and "loo after" not in out
    check_numbers(data, load_model(a), None, QAItem(q, ans, id="question"), ["loo"])

    # without heads: heads ranked by the change of their attention onto the KeyTokens
    rc, out, err = _run(
        ["inspect", a, "--question", q, "--answer", ans, "--against", b, "--method", "ig", "--json", str(json_path)],
        capsys,
    )
    assert rc == 0, err
    data = json.loads(json_path.read_text())
    assert "attention onto the KeyTokens" in data["head_ranking"] and "attn→keys after" in out
    deltas = [abs(r["key_attention_delta"]) for r in data["top_heads"]]
    assert deltas == sorted(deltas, reverse=True)
    check_numbers(data, load_model(a), load_model(b), QAItem(q, ans, id="question"), ["integrated_gradients"])


def test_inspection_round_trip_and_no_printing(tiny_pair, capsys):
    from unpact import load_model
    from unpact.inspection import Inspection, inspect_item

    m1, m2 = load_model(tiny_pair[0]), load_model(tiny_pair[1])
    capsys.readouterr()
    ins = inspect_item(m1, ("Question: Who is Bo Reyes?\nAnswer:", " a writer"), against=m2)
    page = ins.to_html(standalone=True)
    text = ins.to_text()
    assert capsys.readouterr() == ("", "")  # library code never prints
    assert Inspection.from_dict(json.loads(json.dumps(ins.to_dict()))).to_dict() == json.loads(
        json.dumps(ins.to_dict())
    )
    assert ins._repr_html_().startswith('<div class="unpact">') and "Bo" in text
    check_self_contained(page, 4)
    # the lens ranks agree with the presence probe's logit lens (unpact.probes) on the answer's first token
    from unpact.attribution.prepare import prepare_items
    from unpact.probes import logit_lens

    (p,), _ = prepare_items(m1, [("Question: Who is Bo Reyes?\nAnswer:", " a writer")])
    lps, ranks = logit_lens(m1, p.prompt_ids, p.answer_ids[0])
    assert ins.readout_before.lens_rank[1:] == ranks


# ----------------------------------------------------------- notebook views


def test_result_types_display_themselves(tiny_pair):
    from unpact import load_model
    from unpact.attribution import attribute, compare
    from unpact.data import QAItem
    from unpact.emphasis import RecoveryConfig, RecoveryTable, recover

    m1, m2 = load_model(tiny_pair[0]), load_model(tiny_pair[1])
    items = [
        QAItem("Where was the author Ana Lind born?", "Lima", id="ana", meta={"group": "forget"}),
        QAItem("What genre does Bo Reyes write?", "crime fiction", id="bo", meta={"group": "retain"}),
    ]
    a = attribute(m1, items[0], method="heads")
    h = a._repr_html_()
    assert h == a.to_html() and " Ana" in h and "layer x head" in h
    check_self_contained(h, 1)
    assert h.count('class="tok kw"') == len(a.key_tokens())  # the KeyTokens are outlined

    c = compare(attribute(m1, items, method="heads"), attribute(m2, items, method="heads"))
    h = c._repr_html_()
    assert "forget" in h and "retain" in h and "ana" in h
    check_self_contained(h, 1)

    cfg = RecoveryConfig(
        templates=("focus",), factors=(1.0, 4.0), layer_sets=("all", "late"), kinds=("attention",), max_new_tokens=4
    )
    table = recover(m2, items[:1], original=m1, controls={"retain": items[1:]}, config=cfg, method="stand-in")
    assert isinstance(table, RecoveryTable)
    assert RecoveryTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table  # plain JSON, read back
    h = table._repr_html_()
    assert "focus" in h and "stand-in" in h
    check_self_contained(h, 1)  # the factor x layer-set map of the activation sweep


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["embedded:gpt2", "--benchmark", "embedded:tofu/forget10", "--item", "999"],
            ["999", "out of range", "0..119"],
        ),
        (["embedded:gpt2", "--benchmark", "embedded:tofu/forget10", "--item", "-1"], ["out of range"]),
        (["embedded:gpt2", "--question", "Where was Ana Lind born?", "--answer", ""], ["--answer", "empty"]),
        (["embedded:gpt2", "--question", "Where was Ana Lind born?", "--answer", "   "], ["--answer", "empty"]),
        (["embedded:gpt2", "--question", "Who?"], ["--answer"]),
        (["embedded:gpt2", "--question", "Who?", "--answer", "x", "--method", "loo,shap"], ["shap"]),
        (["embedded:gpt2", "--question", "Who?", "--answer", "x", "--head", "two"], ["--head"]),
    ],
)
def test_inspect_bad_input_fails_fast(argv, words, capsys):
    rc, out, err = _run(["inspect", *argv], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unpact: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_inspect_question_longer_than_context(tiny_pair, capsys):
    long_q = " ".join(["Where was the author Ana Lind born?"] * 40)  # far beyond the tiny model's 128 positions
    rc, out, err = _run(["inspect", tiny_pair[0], "--question", long_q, "--answer", "Lima"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "context" in lines[0] and "--truncate" in lines[0], err
    rc, out, err = _run(
        ["inspect", tiny_pair[0], "--question", long_q, "--answer", "Lima", "--truncate", "--method", "loo"], capsys
    )
    assert rc == 0, err
    # a head outside the model, and a chat format the tokenizer has no template for
    for extra, word in ((["--head", "9.0"], "out of range"), (["--prompt-format", "chat"], "chat template")):
        rc, out, err = _run(["inspect", tiny_pair[0], "--question", "Who?", "--answer", "x", *extra], capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and word in lines[0], err


# ------------------------------------------------------------------ notebook


@pytest.mark.slow
def test_example_notebook_runs(tmp_path):
    """docs/examples/inspect.ipynb end to end in a fresh kernel: no error, every result displayed as
    self-contained HTML."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    htmls = [
        o["data"]["text/html"]
        for o in outputs
        if o.output_type in ("execute_result", "display_data") and "text/html" in o.get("data", {})
    ]
    assert len(htmls) == 4  # Attribution, Comparison, Inspection, the recovery table
    for h in htmls:
        check_self_contained(h, 0)
    assert sum(h.count("data:image/png;base64,") for h in htmls) >= 5
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.get("name") == "stdout")
    assert "Tokens:" in text and "Layers:" in text  # the text view printed by the notebook itself
