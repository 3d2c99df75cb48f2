"""The chat prompt format end to end on a tiny checkpoint whose tokenizer has a chat
template: the token ids are the template's own, keyword positions and KeyTokens fall
inside the question (never on template tokens), and run, unlearn and recover use it."""

from __future__ import annotations

import json

import pytest

from unpact import load_model
from unpact.attribution import Attribution, attribute, key_tokens
from unpact.cli import main
from unpact.data import QAItem, format_answer, resolve_format
from unpact.emphasis import keyword_positions, rewrite
from unpact.errors import ConfigError
from unpact.scoring import encode_pair
from unpact.testing import CHAT_TEMPLATE, make_tiny_checkpoint, write_toy_tofu

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    bench = root / "bench"
    write_toy_tofu(bench, 4, genre=False, n_perturbed=2)
    model = make_tiny_checkpoint("llama", root / "chat-llama", chat_template=CHAT_TEMPLATE)
    plain = make_tiny_checkpoint("gpt2", root / "plain-gpt2")
    return root, bench, str(model), str(plain)


@pytest.fixture(scope="module")
def chat_model(world):
    return load_model(world[2])


def test_chat_ids_are_the_templates_own(chat_model):
    """[BOS] + tokens(prompt) + tokens(answer) is what apply_chat_template tokenises for
    the whole conversation (open-unlearning's input ids of a TOFU chat example)."""
    tok = chat_model.tokenizer
    fmt = resolve_format("chat", tok, SYSTEM)
    q, a = "Where was Ana Lind born?", "Ana Lind was born in Lima."
    p_ids, a_ids = encode_pair(tok, fmt.prompt(q), format_answer(a, fmt))
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    want = tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=False)
    want = list(want["input_ids"] if hasattr(want, "keys") else want)
    assert p_ids + a_ids == want
    assert p_ids.count(tok.bos_token_id) == 1  # the template's BOS is not doubled


def test_keywords_and_keytokens_stay_inside_the_template(chat_model):
    tok = chat_model.tokenizer
    fmt = resolve_format("chat", tok, SYSTEM)
    q = "Where was Ana Lind born?"
    ids = encode_pair(tok, fmt.prompt(q), "x")[0]
    pos = keyword_positions(tok, q, ["Ana Lind"], fmt)
    assert tok.decode([ids[i] for i in pos]).strip() == "Ana Lind"
    assert pos[0] > 10  # after the system message and the user header
    rw = rewrite(q, ["Ana Lind"], "focus", tok, fmt)
    rw_ids = encode_pair(tok, rw.prompt, "x")[0]
    assert all(tok.decode([rw_ids[i]]).strip() in "Ana Lind" for i in rw.positions)
    a = attribute(chat_model, QAItem(q, "Lima"), fmt=fmt)
    body = [t for t, s in zip(a.tokens, a.special) if not s]
    assert "".join(body) == q  # every template token (system, headers, end-of-turn) is special
    for i in a.key_tokens():
        assert not a.special[i]


def test_chat_without_template_and_system_without_chat_are_errors(world, capsys):
    from transformers import AutoTokenizer

    with pytest.raises(ConfigError, match="no chat template"):
        resolve_format("chat", AutoTokenizer.from_pretrained(world[3]))
    with pytest.raises(ConfigError, match="system prompt"):
        resolve_format("plain", None, SYSTEM)
    root, bench = world[0], world[1]
    rc = main(
        [
            "run",
            "--model",
            world[3],
            "--reference-model",
            "none",
            "--benchmark",
            "tofu",
            "--benchmark-path",
            str(bench),
            "--general",
            "none",
            "--methods",
            "ga",
            "--prompt-format",
            "chat",
            "--out",
            str(root / "never"),
        ]
    )
    assert rc == 2 and "no chat template" in capsys.readouterr().err
    assert not (root / "never").exists()  # checked before anything is written


def test_run_unlearn_recover_in_the_chat_format(world, capsys):
    root, bench, model, _ = world
    cfg = {
        "model": model,
        "reference_model": None,
        "benchmark": "tofu",
        "benchmark_path": str(bench),
        "general": None,
        "holdout_split": None,
        "methods": ["ga_gdr"],
        "method_config": {"ga_gdr": {"steps": 2}},
        "max_items": 2,
        "attribution": {"methods": ["loo"], "subset": 1},
        "emphasis": {"templates": ["focus"], "factors": [1.0, 4.0], "layer_sets": ["all"], "max_control_items": 1},
        "trajectory": {"enabled": False},  # the trajectory stage has its own tests (test_trajectory_stage.py)
        # every attack runs in the chat format, relearning at one step and one rate (its default sweep is
        # most of the run's time): no assertion here reads an attack's numbers
        "attacks": {"options": {"relearning": {"steps": [1], "lrs": [1e-3]}}},
    }
    (root / "run.json").write_text(json.dumps(cfg))
    out = root / "run"
    assert (
        main(
            [
                "run",
                "--config",
                str(root / "run.json"),
                "--prompt-format",
                "chat",
                "--system-prompt",
                SYSTEM,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["prompt_format"] == "chat" and res["config"]["system_prompt"] == SYSTEM
    tok = load_model(model).tokenizer
    for d in res["original"]["attribution"]["loo"]["forget"]:
        assert "<|start_header_id|>" in d["tokens"] and SYSTEM.split()[0] in d["prompt"]
        q = d["prompt"].split("user<|end_header_id|>\n\n")[1].split("<|eot_id|>")[0]
        assert "".join(t for t, s in zip(d["tokens"], d["special"]) if not s) == q
        keys = key_tokens(Attribution.from_dict(d))
        assert keys and all(not d["special"][i] for i in keys)
    rec = res["methods"]["ga_gdr"]["recovery"]
    for it in rec["items"]:
        ids = encode_pair(tok, it["prompt"], "x")[0]
        assert it["positions"] and it["keywords"]
        for i in it["positions"]:  # each keyword position decodes to a piece of a keyword, inside the template
            piece = tok.decode([ids[i]]).strip()
            assert piece and any(piece in k for k in it["keywords"]), (piece, it["keywords"])
        assert it["prompt"].startswith("<|start_header_id|>system")

    # unlearn and recover on the command line, in the same format
    ckpt = root / "unlearned"
    assert (
        main(
            [
                "unlearn",
                model,
                "--method",
                "ga",
                "--benchmark",
                "tofu",
                "--benchmark-path",
                str(bench),
                "--forget",
                "forget10",
                "--out",
                str(ckpt),
                "--set",
                "steps=2",
                "--prompt-format",
                "chat",
                "--system-prompt",
                SYSTEM,
            ]
        )
        == 0
    )
    assert json.loads((ckpt / "unlearn.json").read_text())["prompt_format"] == "chat"
    table = root / "recover.json"
    assert (
        main(
            [
                "recover",
                "--original",
                model,
                "--unlearned",
                str(ckpt),
                "--benchmark",
                "tofu/forget10",
                "--benchmark-path",
                str(bench),
                "--general",
                "none",
                "--templates",
                "focus",
                "--factors",
                "1,2",
                "--layers",
                "all",
                "--kinds",
                "attention",
                "--max-control-items",
                "1",
                "--prompt-format",
                "chat",
                "--system-prompt",
                SYSTEM,
                "--out",
                str(table),
            ]
        )
        == 0
    )
    items = json.loads(table.read_text())["items"]
    assert items and all(it["prompt"].startswith("<|start_header_id|>system") for it in items)
    capsys.readouterr()


def test_template_arguments_reach_the_template():
    """open-unlearning renders Llama-3.2-3B TOFU examples with date_string="10 Apr 2025"."""
    from unpact.testing import make_tokenizer

    tok = make_tokenizer(chat_template=CHAT_TEMPLATE.replace("{{ bos_token }}", "{{ bos_token }}[{{ date_string }}]"))
    fmt = resolve_format("chat", tok, SYSTEM, {"date_string": "10 Apr 2025"})
    assert fmt.prompt("Q?").startswith("[10 Apr 2025]<|start_header_id|>system")
