"""unpact.emphasis: rewrite templates and keyword positions, activation emphasis, recovery table, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from unpact import load_model
from unpact.data import QAItem
from unpact.emphasis import (
    DEFAULT_TEMPLATES,
    TEMPLATES,
    ActivationEmphasis,
    RecoveryConfig,
    RecoveryTable,
    batched_emphasis_hooks,
    best_setting,
    compare_runs,
    emphasis_hooks,
    score_answers,
    get_template,
    keyword_positions,
    keywords_from_positions,
    layer_set,
    emphasis_items,
    recover,
    register_template,
    render_table,
    rewrite,
    segment_question,
)
from unpact.emphasis.recovery import _row
from unpact.errors import ConfigError, InputError
from unpact.scoring import tokenize

ONE = ("Where was the author Ana Lind born?", ["Ana Lind"])
SEVERAL = ("What genre does Bo Reyes write in Peru?", ["Bo Reyes", "genre", "Peru"])
# "Zyxquorbel" is not in the tiny tokenizer's corpus: several tokens for one word
MULTI = ("Is Zyxquorbel the cat of Ana Lind?", ["Zyxquorbel", "Ana Lind"])
CASES = [ONE, SEVERAL, MULTI]


@pytest.fixture(scope="module")
def tok(tiny_gpt2):
    return tiny_gpt2.tokenizer


def _runs(positions):
    runs, cur = [], []
    for p in positions:
        if cur and p != cur[-1] + 1:
            runs.append(cur)
            cur = []
        cur.append(p)
    if cur:
        runs.append(cur)
    return runs


def _expected_texts(template: str, kw: str) -> set[str]:
    # with "upper" combined with a prefix template, the prefix keeps the keyword as given
    return {kw.upper(), kw} if "upper" in template.split("+") else {kw}


@pytest.mark.parametrize("template", list(DEFAULT_TEMPLATES) + ["none"])
@pytest.mark.parametrize("case", CASES, ids=["one", "several", "multitoken"])
def test_rewrite_tracks_keyword_tokens(tok, template, case):
    question, keywords = case
    r = rewrite(question, keywords, template, tok)
    ids = [tok.bos_token_id] + tokenize(tok, r.prompt)
    assert list(r.token_ids) == ids[1:]
    assert r.prompt == f"Question: {r.question}\nAnswer:"
    # every contiguous run of positions decodes to one keyword, as the template writes it
    seen: dict[int, int] = {}
    for run in _runs(list(r.positions)):
        text = tok.decode([ids[p] for p in run]).strip(' "')
        by_kw = {r.position_keyword[list(r.positions).index(p)] for p in run}
        parts = [k for k in by_kw]
        assert len(parts) >= 1
        # a run may hold the same keyword repeated ("repeat") or several keywords separated by spaces only
        for k in parts:
            assert any(t in text for t in _expected_texts(template, keywords[k])), (text, keywords[k])
            seen[k] = seen.get(k, 0) + sum(text.count(t) for t in _expected_texts(template, keywords[k]))
    # each keyword found in the question appears as many times as the template writes it
    for k, kw in enumerate(keywords):
        n_written = sum(1 for s, e, kk in r.spans if kk == k)
        assert n_written >= 1
        assert seen.get(k, 0) == n_written, (template, kw, seen, r.question)
    # and no token outside the positions holds keyword characters
    outside = tok.decode([ids[p] for p in range(1, len(ids)) if p not in set(r.positions)])
    for kw in keywords:
        for t in _expected_texts(template, kw):
            assert t not in outside


def test_templates_write_what_they_say(tok):
    q, kws = SEVERAL
    assert rewrite(q, kws, "quote").question == 'What "genre" does "Bo Reyes" write in "Peru"?'
    assert rewrite(q, kws, "upper").question == "What GENRE does BO REYES write in PERU?"
    assert rewrite(q, kws, "repeat").question == "What genre genre does Bo Reyes Bo Reyes write in Peru Peru?"
    assert rewrite(q, kws, "focus").question == f"Focus on: Bo Reyes, genre, Peru. {q}"
    assert rewrite(q, kws, "keywords_first").question == f"Bo Reyes, genre, Peru: {q}"
    assert (
        rewrite(q, kws, "quote+focus").question
        == 'Focus on: Bo Reyes, genre, Peru. What "genre" does "Bo Reyes" write in "Peru"?'
    )
    assert rewrite(q, kws, "none").question == q
    assert len(rewrite(q, kws, "focus", tok).positions) > len(rewrite(q, kws, "none", tok).positions)


def test_multitoken_word_gets_all_its_tokens(tok):
    q, kws = MULTI
    pos = keyword_positions(tok, q, ["Zyxquorbel"])
    assert len(pos) > 2 and pos == list(range(pos[0], pos[-1] + 1))
    ids = [tok.bos_token_id] + tokenize(tok, f"Question: {q}\nAnswer:")
    assert tok.decode([ids[p] for p in pos]).strip() == "Zyxquorbel"


def test_segmentation_and_registry():
    assert segment_question("Ana met Anabel and ana", ["Ana"]) == [("Ana", 0), (" met Anabel and ana", None)]
    assert segment_question("the anabel", ["Anabel"]) == [("the ", None), ("anabel", 0)]  # case-insensitive fallback
    assert segment_question("x y", ["zz"]) == [("x y", None)]

    @register_template("angle", "keywords in angle brackets")
    def _angle(segments, keywords):
        return [s for t, k in segments for s in ([("<", None), (t, k), (">", None)] if k is not None else [(t, k)])]

    try:
        assert rewrite("Where is Lima?", ["Lima"], "angle+upper").question == "Where is <LIMA>?"
    finally:
        TEMPLATES.pop("angle")
    with pytest.raises(ConfigError, match="unknown rewrite template 'nope'"):
        get_template("quote+nope")


def test_keywords_from_positions_round_trip(tok):
    for q, kws in CASES:
        pos = keyword_positions(tok, q, kws)
        got = keywords_from_positions(tok, q, pos)
        assert sorted(got) == sorted(kws)
    q, kws = ONE
    first = keyword_positions(tok, q, ["Ana Lind"])[:1]  # part of the phrase: widened to the word
    assert keywords_from_positions(tok, q, first) == ["Ana"]
    assert keywords_from_positions(tok, q, [1]) == []  # "Question" is the format's word, not the question's


def test_layer_sets():
    assert layer_set(4, "all") == [0, 1, 2, 3]
    assert [layer_set(6, s) for s in ("early", "middle", "late")] == [[0, 1], [2, 3], [4, 5]]
    assert layer_set(4, "1,3") == [1, 3]
    with pytest.raises(ConfigError, match="out of range"):
        layer_set(4, "7")
    with pytest.raises(ConfigError, match="unknown layer set"):
        layer_set(4, "deep")


def test_activation_emphasis_factor_one_and_per_item(tiny_gpt2):
    m = tiny_gpt2
    prompts = [
        "Question: Where was the author Ana Lind born?\nAnswer:",
        "Question: What is the capital of France?\nAnswer:",
    ]
    targets, answers = [" Lima", " Paris"], ["Lima", "Paris"]
    pos = [
        keyword_positions(m.tokenizer, "Where was the author Ana Lind born?", ["Ana Lind"]),
        keyword_positions(m.tokenizer, "What is the capital of France?", ["France"]),
    ]
    cfg = RecoveryConfig(max_new_tokens=3)
    base = score_answers(m, prompts, targets, answers, config=cfg)
    for kind in ("attention", "value", "residual"):
        one = score_answers(
            m,
            prompts,
            targets,
            answers,
            config=cfg,
            fwd_hooks=emphasis_hooks(m, ActivationEmphasis(kind, 1.0, "all"), pos),
        )
        assert one == base
    eight = score_answers(
        m,
        prompts,
        targets,
        answers,
        config=cfg,
        fwd_hooks=emphasis_hooks(m, ActivationEmphasis("attention", 8.0, "all"), pos),
    )
    assert eight["logprob"] != base["logprob"]
    # per-item positions: emphasising only item 0's keywords leaves item 1 (no positions) unchanged
    only0 = score_answers(
        m,
        prompts,
        targets,
        answers,
        config=cfg,
        fwd_hooks=emphasis_hooks(m, ActivationEmphasis("attention", 8.0, "all"), [pos[0], []]),
    )
    assert only0["logprob"][1] == base["logprob"][1] and only0["logprob"][0] != base["logprob"][0]


def test_a_registered_emphasis_kind_is_accepted_everywhere(tiny_dirs):
    """One registration (unpact.emphasis.register_kind) and the kind runs alone, batched and from a config."""
    from unpact.config import config_from_dict
    from unpact.emphasis import KINDS, register_kind
    from unpact.hooks import residual_scaling_hooks, site_name

    m = load_model(tiny_dirs["gpt2"])
    prompts, targets = ["Where was the author Ana Lind born?", "What is the capital of France?"], [" Lima", " Paris"]

    @register_kind("mlp_out", "scale the MLP output at the keyword positions (blocks.{l}.hook_mlp_out)")
    def _mlp_out(layers, positions, factor, heads, site):
        return residual_scaling_hooks(layers, positions, factor, site="mlp_out", heads=heads)

    try:
        e = ActivationEmphasis("mlp_out", 4.0, "all")
        assert [h for h, _ in e.hooks(m.cfg.n_layers, [[1]])] == [
            site_name("mlp_out", l) for l in range(m.cfg.n_layers)
        ]
        pos = [[2, 3], [5]]
        alone = score_answers(m, prompts, targets, ["Lima", "Paris"], fwd_hooks=emphasis_hooks(m, e, pos))
        batched = score_answers(
            m, prompts, targets, ["Lima", "Paris"], fwd_hooks=batched_emphasis_hooks(m, [e, e], pos)
        )
        plain = score_answers(m, prompts, targets, ["Lima", "Paris"])
        assert alone["logprob"] == pytest.approx(batched["logprob"], abs=1e-5) and alone["logprob"] != plain["logprob"]
        assert config_from_dict({"emphasis": {"kinds": ["attention", "mlp_out"]}}).emphasis.kinds == [
            "attention",
            "mlp_out",
        ]
    finally:
        del KINDS["mlp_out"]
    with pytest.raises(
        ConfigError, match="unknown activation emphasis kind 'mlp_out'; known: attention, value, residual"
    ):
        ActivationEmphasis("mlp_out")


def test_compare_row_and_collapse_logic():
    cfg = RecoveryConfig(threshold=0.5, collapse_margin=0.1)
    base = {"rouge": [0.0, 0.2, 1.0, 0.0], "logprob": [-3.0, -2.0, -0.5, -4.0]}
    emph = {"rouge": [0.6, 0.1, 1.0, 1.0], "logprob": [-1.0, -2.0, -0.5, -2.0]}
    c = compare_runs(base, emph, 0.5, ["a", "b", "c", "d"])
    assert (c["n_recovered"], c["n_forgotten"], c["rate"]) == (2, 3, 2 / 3)
    assert c["recovered_ids"] == ["a", "d"] and c["delta_logprob"] == pytest.approx(1.0)
    ok_ctl = compare_runs(
        {"rouge": [1.0] * 10, "logprob": [0.0] * 10},
        {"rouge": [1.0] * 9 + [0.0], "logprob": [0.0] * 10},
        0.5,
        list("abcdefghij"),
    )
    bad_ctl = compare_runs(
        {"rouge": [1.0] * 10, "logprob": [0.0] * 10},
        {"rouge": [1.0] * 8 + [0.0] * 2, "logprob": [0.0] * 10},
        0.5,
        list("abcdefghij"),
    )
    good = _row({"kind": "prompt", "template": "a"}, {"forget": c, "general": ok_ctl}, cfg)
    broken = _row({"kind": "prompt", "template": "b"}, {"forget": {**c, "rate": 1.0}, "general": bad_ctl}, cfg)
    assert not good.collapse and broken.collapse
    assert broken.controls["general"].drop == pytest.approx(0.2)
    assert best_setting({"good": good, "broken": broken}) == ("good", 2 / 3, False)
    assert best_setting({"broken": broken}) == ("broken", 1.0, True)


#: A table as results.json has held it (before the typed result, with the margin's old name).
OLD_TABLE = {
    "method": "ga",
    "config": {"threshold": 0.9, "control_margin": 0.1, "templates": ["quote"]},
    "keywords_source": "keytokens",
    "n_forget": 2,
    "n_forgotten": 1,
    "n_original_known": 2,
    "n_forgotten_known": 1,
    "baseline": {
        "forget_accuracy": 0.5,
        "forget_rouge": 0.7,
        "forget_logprob": -2.0,
        "original_forget_accuracy": 1.0,
        "original_forget_rouge": 1.0,
        "original_forget_logprob": -0.5,
        "controls": {"retain": {"accuracy": 1.0, "rouge": 1.0, "n": 1}},
    },
    "prompt": {
        "quote": {
            "kind": "prompt",
            "template": "quote",
            "forget_rate": 1.0,
            "n_recovered": 1,
            "n_forgotten": 1,
            "forget_accuracy": 1.0,
            "forget_rouge": 0.95,
            "delta_logprob": 0.5,
            "recovered_ids": ["b"],
            "retain_accuracy": 0.0,
            "retain_recovered": 0,
            "retain_rate": 0.0,
            "controls": {
                "retain": {
                    "accuracy": 0.0,
                    "baseline_accuracy": 1.0,
                    "drop": 1.0,
                    "recovered": 0,
                    "delta_logprob": -1.0,
                }
            },
            "collapse": True,
        }
    },
    "activation": {
        "value x4 @ 0,1": {
            "kind": "value",
            "factor": 4.0,
            "layers": [0, 1],
            "heads": None,
            "site": "resid_post",
            "name": "value x4 @ 0,1",
            "noop": False,
            "forget_rate": 0.0,
            "n_recovered": 0,
            "n_forgotten": 1,
            "forget_accuracy": 0.5,
            "forget_rouge": 0.7,
            "delta_logprob": 0.1,
            "recovered_ids": [],
            "retain_accuracy": 1.0,
            "retain_recovered": 0,
            "retain_rate": 1.0,
            "controls": {
                "retain": {"accuracy": 1.0, "baseline_accuracy": 1.0, "drop": 0.0, "recovered": 0, "delta_logprob": 0.0}
            },
            "collapse": False,
        }
    },
    "prompt_best": 1.0,
    "prompt_best_setting": "quote",
    "prompt_collapse": True,
    "activation_best": 0.0,
    "activation_best_setting": "value x4 @ 0,1",
    "activation_collapse": False,
    "items": [
        {
            "id": "a",
            "question": "q",
            "answer": "a",
            "keywords": ["k"],
            "positions": [3],
            "prompt": "p",
            "target": " a",
            "baseline_answer": "a",
            "baseline_rouge": 1.0,
            "baseline_logprob": -1.0,
            "original_answer": "a",
            "original_rouge": 1.0,
            "original_logprob": -0.5,
            "prompt_best_answer": "a",
            "activation_best_answer": "a",
        }
    ],
    "rewrite_attributions": [],
    "original": "embedded:gpt2",
}


def test_recovery_table_reads_a_stored_table_back_as_it_was():
    t = RecoveryTable.from_dict(OLD_TABLE)
    assert t.to_dict() == OLD_TABLE  # every key and number, the extra ones included
    assert RecoveryTable.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert t.collapse_margin == 0.1 and t.threshold == 0.9 and t.extra == {"original": "embedded:gpt2"}
    best = t.best("prompt")
    assert (best.name, best.rate, best.collapse, best.row.controls["retain"].drop) == ("quote", 1.0, True, 1.0)
    act = t.activation["value x4 @ 0,1"]
    assert act.route == "activation" and act.emphasis.layers == (0, 1) and act.name == "value x4 @ 0,1"
    assert best_setting(t.prompt) == ("quote", 1.0, True) and best_setting(t.activation) == (
        "value x4 @ 0,1",
        0.0,
        False,
    )
    text = render_table(t)
    assert "* quote" in text and "COLLAPSE" in text and "10 points" in text
    with pytest.raises(InputError, match="lacks items"):
        RecoveryTable.from_dict({k: v for k, v in OLD_TABLE.items() if k != "items"})


def test_prepare_items_keywords_given_or_from_keytokens(tiny_dirs):
    m = load_model(tiny_dirs["gpt2"])
    items = [
        QAItem("Where was the author Ana Lind born?", "Lima", id="a"),
        QAItem("What genre does Bo Reyes write?", "crime fiction", id="b"),
    ]
    given = emphasis_items(m, items, [["Ana Lind"], ["Bo Reyes"]])
    assert given[0].keywords == ["Ana Lind"] and given[0].positions == keyword_positions(
        m.tokenizer, items[0].question, ["Ana Lind"]
    )
    by_pos = emphasis_items(m, items, {"a": given[0].positions, "b": [3]})
    assert by_pos[0].keywords == ["Ana Lind"] and by_pos[1].positions == [3]
    with pytest.raises(InputError, match="pass keywords"):
        emphasis_items(m, items)
    with pytest.raises(InputError, match="one per item"):
        emphasis_items(m, items, [["Ana"]])
    key = emphasis_items(m, items, original=m)  # KeyTokens of the (here: same) original model
    from unpact.attribution import attribute

    attrs = attribute(m, items)
    for it, a in zip(key, attrs):
        assert it.positions == sorted(a.key_tokens())
        assert all(not a.special[p] for p in it.positions)
        assert all(kw in it.question for kw in it.keywords)


def test_recover_table_on_tiny_model(tiny_dirs):
    m = load_model(tiny_dirs["gpt2"])
    forget = [
        QAItem("Where was the author Ana Lind born?", "Lima", id="a"),
        QAItem("What genre does Bo Reyes write?", "crime fiction", id="b"),
    ]
    general = [QAItem("What is the capital of France?", "Paris", id="g")]
    cfg = RecoveryConfig(
        templates=("quote", "focus"),
        factors=(1, 4),
        layer_sets=("all", "late"),
        kinds=("attention", "value"),
        max_new_tokens=3,
    )
    table = recover(m, forget, original=m, controls={"general": general}, config=cfg, method="none")
    assert isinstance(table, RecoveryTable)
    assert set(table.prompt) == {"quote", "focus"}
    assert set(table.activation) == {
        f"{k} x{f} @ {l}" for k in ("attention", "value") for f in (1, 4) for l in ("all", "late")
    }
    # the original model is the unlearned one here: nothing was forgotten that it knew, and factor 1 is the plain run
    noop = table.activation["attention x1 @ all"]
    assert noop.noop and noop.emphasis == ActivationEmphasis("attention", 1.0, "all")
    assert noop.n_recovered == 0 and noop.delta_logprob == 0.0 and noop.controls["general"].drop == 0.0
    assert table.n_forget == 2 and len(table.items) == 2 and table.items[0].original_answer is not None
    assert table.keywords_source == "keytokens" and table.collapse_margin == cfg.collapse_margin
    # plain JSON in the layout results.json has always had, and read back equal
    d = json.loads(json.dumps(table.to_dict()))
    assert RecoveryTable.from_dict(d) == table
    assert d["activation"]["attention x1 @ all"]["general_accuracy"] == noop.controls["general"].accuracy
    assert {"kind", "factor", "layers", "heads", "site", "name", "noop", "forget_rate", "controls", "collapse"} <= set(
        d["activation"]["attention x1 @ all"]
    )
    assert {"kind", "template", "forget_rate", "recovered_ids", "controls", "collapse"} <= set(d["prompt"]["quote"])
    assert set(RecoveryTable.SECTIONS) <= set(d) and "original_answer" in d["items"][0]
    text = render_table(table)
    assert "prompt rewrites" in text and "activation scaling" in text and "general acc" in text


def test_recover_command(tiny_dirs, tmp_path, capsys):
    from unpact.cli import main

    rows = [
        {"question": "Where was the author Ana Lind born?", "answer": "Lima"},
        {"question": "What genre does Bo Reyes write?", "answer": "crime fiction"},
    ]
    for split in ("forget", "retain"):
        with open(tmp_path / f"{split}.json", "w") as f:
            json.dump(rows, f)
    out = tmp_path / "t" / "table.json"
    rc = main(
        [
            "recover",
            "--original",
            tiny_dirs["gpt2"],
            "--unlearned",
            tiny_dirs["gpt2"],
            "--benchmark",
            "tofu/forget",
            "--benchmark-path",
            str(tmp_path),
            "--retain",
            "retain",
            "--general",
            "none",
            "--templates",
            "quote",
            "--factors",
            "1,2",
            "--layers",
            "all",
            "--kinds",
            "attention",
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "prompt rewrites" in printed and "retain acc" in printed
    table = RecoveryTable.from_dict(json.loads(out.read_text()))
    assert set(table.activation) == {"attention x1 @ all", "attention x2 @ all"}
    assert table.extra["unlearned"] == tiny_dirs["gpt2"] and table.extra["benchmark"] == "tofu/forget"
    assert (
        main(
            [
                "recover",
                "--original",
                tiny_dirs["gpt2"],
                "--unlearned",
                tiny_dirs["gpt2"],
                "--benchmark",
                "tofu/forget",
                "--benchmark-path",
                str(tmp_path),
                "--retain",
                "none",
                "--templates",
                "shout",
            ]
        )
        == 2
    )
    assert "unknown rewrite template 'shout'" in capsys.readouterr().err


def test_batched_emphasis_hooks_equal_each_setting_alone(tiny_dirs):
    """Items carrying different settings (and none) in one batch get what each setting gives alone."""
    m = load_model(tiny_dirs["llama"])  # grouped-query attention: value heads differ from query heads
    qs = [
        ("Where was the author Ana Lind born?", ["Ana Lind"], " Lima"),
        ("What is the capital of France?", ["France"], " Paris"),
        ("What genre does Bo Reyes write in Peru?", ["Bo Reyes", "Peru"], " crime fiction"),
    ]
    prompts = [f"Question: {q}\nAnswer:" for q, _, _ in qs]
    targets = [t for _, _, t in qs]
    answers = [t.strip() for t in targets]
    pos = [keyword_positions(m.tokenizer, q, kw) for q, kw, _ in qs]
    settings = [
        ActivationEmphasis("attention", 8.0, "all"),
        ActivationEmphasis("value", 4.0, "late"),
        ActivationEmphasis("attention", 2.0, "early", heads=(1,)),
        ActivationEmphasis("residual", 2.0, "all", site="resid_pre"),
        ActivationEmphasis("value", 1.0, "all"),
        None,
    ]
    cfg = RecoveryConfig(max_new_tokens=4)
    rows = [(s, i) for s in settings for i in range(len(qs))]
    together = score_answers(
        m,
        [prompts[i] for _, i in rows],
        [targets[i] for _, i in rows],
        [answers[i] for _, i in rows],
        config=cfg,
        fwd_hooks=batched_emphasis_hooks(m, [s for s, _ in rows], [pos[i] for _, i in rows]),
    )
    for k, s in enumerate(settings):
        hooks = None if s is None else emphasis_hooks(m, s, pos)
        alone = score_answers(m, prompts, targets, answers, config=cfg, fwd_hooks=hooks)
        sl = slice(k * len(qs), (k + 1) * len(qs))
        assert together["answers"][sl] == alone["answers"], s
        assert together["logprob"][sl] == pytest.approx(alone["logprob"], abs=1e-5), s
    plain = together["logprob"][-len(qs) :]
    assert together["logprob"][: len(qs)] != pytest.approx(plain, abs=1e-4)  # the x8 rows did change
    with pytest.raises(ValueError, match="settings but"):
        batched_emphasis_hooks(m, settings, pos)


def _differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys differ"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths differ"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and "logprob" in path:
        return [] if abs(a - b) <= 1e-5 else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_batched_recover_equals_reference(tiny_dirs):
    """recover (every run x group in one batch) gives the table of one evaluation per setting and group."""
    m = load_model(tiny_dirs["llama"])  # the tiny gpt2 answers ':::::' to everything; llama's answers vary
    qs = {
        "forget": [
            "Where was the author Ana Lind born?",
            "What genre does Bo Reyes write?",
            "Is Zyxquorbel the cat of Ana Lind?",
        ],
        "retain": ["Where does Cara Moll live?"],
        "general": ["What is the capital of France?", "What colour is the sky?"],
    }
    kws = {
        "forget": [["Ana Lind"], ["Bo Reyes", "genre"], ["Zyxquorbel"]],
        "retain": [["Cara Moll"]],
        "general": [["France"], ["sky"]],
    }
    cfg = RecoveryConfig(
        templates=("quote", "repeat+focus"),
        factors=(1, 8),
        layer_sets=("all", "late"),
        kinds=("attention", "value", "residual"),
        max_new_tokens=5,
        collapse_margin=0.0,
    )
    # gold answers built so that things happen: forget items are "known" under value x8 (recovered there),
    # controls are known plainly (any setting that changes their answers collapses)
    value8 = ActivationEmphasis("value", 8.0, "all")
    groups = {}
    for g, q in qs.items():
        prepared = emphasis_items(m, [(x, "x") for x in q], kws[g])
        hooks = emphasis_hooks(m, value8, [it.positions for it in prepared]) if g == "forget" else None
        gold = score_answers(
            m, [it.prompt for it in prepared], [" x"] * len(q), ["x"] * len(q), config=cfg, fwd_hooks=hooks
        )["answers"]
        groups[g] = [QAItem(x, a, id=f"{g}{i}") for i, (x, a) in enumerate(zip(q, gold))]
    args = dict(
        original=m,
        controls={"retain": groups["retain"], "general": groups["general"]},
        keywords=kws["forget"],
        control_keywords={g: kws[g] for g in ("retain", "general")},
        config=cfg,
        method="x",
    )
    batched = recover(m, groups["forget"], **args)
    reference = recover(m, groups["forget"], batched=False, **args)
    assert _differences(batched.to_dict(), reference.to_dict()) == []
    assert len(batched.activation) == 12 and len(batched.prompt) == 2
    # the comparison is not empty: value x8 recovers items, some settings collapse, some hold
    assert batched.activation[value8.name].n_recovered >= 1
    rows = batched.rows()
    assert any(r.collapse for r in rows) and not all(r.collapse for r in rows)


# ------------------------------------------------------------------ embedded models (when shipped)


def _need_embedded(name: str) -> None:
    from unpact.models import embedded_model_names

    if name not in embedded_model_names():
        pytest.skip(f"embedded:{name} is not built yet (unpact build-embedded)")


#: Embedded TOFU answers are sentences that repeat the question's name: a wrong attribute still
#: scores ROUGE-L recall 0.71-0.88, so "right" must mean (almost) exact here.
EMBEDDED_THRESHOLD = 0.95

#: A mild gradient ascent: enough to push answers below the threshold, too little to erase them.
MILD_GA = {"steps": 8, "lr": 1e-4}


@pytest.mark.slow
def test_mild_unlearning_is_recovered_and_holdout_is_not():
    _need_embedded("gpt2")
    from unpact.data import load_benchmark
    from unpact.data import spread_sample
    from unpact.unlearning import unlearn

    torch.manual_seed(0)
    original = load_model("embedded:gpt2")
    forget_all = list(load_benchmark("embedded:tofu", "forget10"))
    forget = spread_sample(forget_all, 24)
    holdout = spread_sample(list(load_benchmark("embedded:tofu", "holdout10")), 24)
    unlearned = unlearn(original, "ga", forget_all, None, MILD_GA, seed=0).model
    cfg = RecoveryConfig(
        templates=("quote", "focus", "keywords_first"),
        factors=(1, 4, 8),
        layer_sets=("all", "middle"),
        kinds=("attention", "value"),
        max_control_items=24,
        threshold=EMBEDDED_THRESHOLD,
    )
    table = recover(unlearned, forget, original=original, controls={"holdout": holdout}, config=cfg, method="ga")
    assert table.n_original_known > 0, "the original model must know some forget items"
    assert table.n_forgotten > 0, "mild GA must push some answers below the threshold"
    rows = table.rows()
    assert max(r.n_recovered for r in rows) >= 1, render_table(table)
    # a model that never knew the holdout authors gets nothing back by emphasis
    assert all(r.controls["holdout"].recovered == 0 for r in rows), render_table(table)


@pytest.mark.slow
def test_emphasis_recovers_nothing_the_model_never_knew():
    _need_embedded("gpt2")
    from unpact.data import load_benchmark
    from unpact.data import spread_sample

    model = load_model("embedded:gpt2")
    holdout = spread_sample(list(load_benchmark("embedded:tofu", "holdout10")), 24)
    cfg = RecoveryConfig(
        factors=(1, 2, 4, 8), layer_sets=("all", "early", "middle", "late"), threshold=EMBEDDED_THRESHOLD
    )
    table = recover(model, holdout, original=model, config=cfg)
    assert table.n_forgotten >= table.n_forget - 1  # it never saw these authors
    assert all(r.n_recovered == 0 for r in table.rows()), render_table(table)


# ------------------------------------------------------------------ placebo


@pytest.mark.parametrize("seed", range(5))
def test_placebo_positions_never_overlap_the_keywords_and_match_them_in_count(tok, seed):
    from unpact.emphasis.placebo import placebo_keywords, placebo_positions, question_positions, runs
    from unpact.emphasis.rewrites import keyword_positions as kw_positions

    cases = [
        ("Where was the author Ana Lind born?", ["Ana Lind"]),
        ("What genre does Bo Reyes write in Peru?", ["Bo Reyes", "Peru"]),
        ("What is the capital of France?", ["France"]),
    ]
    for q, kws in cases:
        keys = kw_positions(tok, q, kws)
        pl = placebo_positions(tok, q, keys, seed=seed)
        assert not set(pl) & set(keys)
        assert len(pl) == len(keys)
        assert set(pl) <= set(question_positions(tok, q))  # question words only, never "Question:"/"Answer:"
        if len(runs(keys)) == 1 and len(runs(pl)) == 1:
            assert len(runs(pl)[0]) == len(runs(keys)[0])
        words = placebo_keywords(tok, q, keys, seed=seed)
        assert words and not any(k.lower() in w.lower() or w.lower() in k.lower() for w in words for k in kws)
    assert placebo_positions(tok, "Ana Lind?", kw_positions(tok, "Ana Lind?", ["Ana Lind"])) == []
    # a KeyToken inside a word: the word's other tokens are not placebo candidates
    q = "Where was Quennell born?"
    keys = kw_positions(tok, q, ["Quennell"])
    if len(keys) > 1:
        pl = placebo_positions(tok, q, keys[:1], seed=0)
        assert not set(pl) & set(keys)
