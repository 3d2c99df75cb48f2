"""What every recovery attack shares: the registry, the settings sweep, and the controlled table.

An attack is one way of bringing "unlearned" knowledge back without the
emphasis of :mod:`unpact.emphasis`: fine-tune a little on related data
(relearning), round the weights (quantization), show a few solved examples
(in-context), or ask in other words (paraphrase). Every attack is one class
behind :data:`ATTACKS` with its hyperparameters in one config dataclass, and is
run the same way, by :func:`run_attack`:

1. each setting of the attack's sweep (:meth:`Attack.settings`) turns a model
   and the forget items into an :class:`Attacked` (a possibly changed *copy* of
   the model, the prompts to ask, and which items are asked);
2. the attacked answers are judged exactly as emphasis recovery judges them
   (:func:`unpact.emphasis.recovery.score_answers`: greedy answer, ROUGE-L recall at
   :attr:`~unpact.emphasis.RecoveryConfig.threshold`, teacher-forced answer
   log-prob) against the same model's plain answers;
3. the same setting is applied to the **original** model (does the attack keep
   knowledge that was never removed?) and to the **negative control**, a model
   that never saw the forget set (the retain-only model: what it "recovers" is
   taught or guessed, not recovered).

An item counts as *recovered beyond both controls* when the unlearned model
misses it plainly, answers it under the attack, the original answers it under
the same attack, and the negative control does not. That count over the items
the unlearned model forgot and the original knows under the attack is the
route's controlled rate; the raw rate (as emphasis reports it) comes with it.

Example:
    >>> from unpact.attacks import ATTACKS
    >>> sorted(ATTACKS)
    ['in_context', 'paraphrase', 'quantization', 'relearning']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from unpact.data.formatting import PromptFormat, get_format
from unpact.data.records import question_answer  # noqa: F401 (the attacks' item dispatch, re-exported)
from unpact.emphasis.recovery import RecoveryConfig, score_answers
from unpact.errors import ConfigError, InputError
from unpact.progress import ProgressFactory, null_progress
from unpact.protocols import Model
from unpact.registry import Registry
from unpact.stats import mean

#: name -> attack class, in registration order (the order a study runs them in by default);
#: add your own with :func:`register_attack`.
ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make ``cls`` available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    ATTACKS.add(cls.name, cls)
    return cls


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name`` (a :class:`~unpact.errors.ConfigError` names the known ones)."""
    return ATTACKS.get(name)


def make_attack(name: str, config: Any = None) -> Attack:
    """An instance of attack ``name``: ``config`` is None (defaults), a dict of overrides or its config dataclass."""
    cls = get_attack(name)
    if config is None:
        cfg = cls.config_class()
    elif isinstance(config, Mapping):
        known = {f.name for f in fields(cls.config_class)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for attack {name!r}; known: {', '.join(sorted(known))}"
            )
        cfg = cls.config_class(**config)
    elif isinstance(config, cls.config_class):
        cfg = config
    else:
        raise ConfigError(f"attack {name!r} takes a {cls.config_class.__name__} or a dict, got {type(config).__name__}")
    return cls(cfg)


@dataclass
class Attacked:
    """One setting of an attack applied to one model.

    Attributes:
        model: the model to ask (a changed copy, or the given model itself when the
            attack only changes prompts; never the given model changed in place).
        prompts: the prompt of each asked item, in the order of ``asked``.
        asked: indices (into the forget items) of the items asked.
        info: what the setting did, JSON-able (e.g. which items it trained on).
    """

    model: Any
    prompts: list[str]
    asked: list[int]
    info: dict[str, Any] = field(default_factory=dict)


class Attack:
    """Base class of one recovery attack.

    Subclasses set ``name``, ``config_class``, ``description`` and implement
    :meth:`settings` (the sweep, as named JSON-able dicts) and :meth:`apply`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    description: ClassVar[str] = ""
    #: True when the attack changes weights (then :meth:`apply` works on a copy).
    edits_weights: ClassVar[bool] = False

    def __init__(self, config):
        self.config = config

    def settings(self) -> list[dict[str, Any]]:
        """The settings the attack sweeps; each has a ``name``."""
        return [{"name": self.name}]

    def apply(
        self,
        model,
        items: Sequence,
        setting: dict[str, Any],
        *,
        fmt: PromptFormat,
        pool: Mapping[str, Sequence],
        seed: int = 0,
    ) -> Attacked:
        """Apply one setting to ``model`` for the forget ``items`` (``pool``: other data, e.g. ``retain``)."""
        raise NotImplementedError


# --------------------------------------------------------------------- judging


@dataclass
class RoleRun:
    """One model's plain and attacked answers on the asked items (a role: unlearned, original, negative)."""

    plain_rouge: list[float]
    attacked_rouge: list[float]
    plain_logprob: list[float]
    attacked_logprob: list[float]
    attacked_answers: list[str]

    def correct(self, threshold: float) -> tuple[list[bool], list[bool]]:
        return [r >= threshold for r in self.plain_rouge], [r >= threshold for r in self.attacked_rouge]


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def controlled_row(runs: Mapping[str, RoleRun], ids: Sequence[str], threshold: float) -> dict[str, Any]:
    """The route row of one setting: raw recovery on the unlearned model and recovery beyond both controls.

    ``runs`` holds ``"unlearned"`` and optionally ``"original"`` and ``"negative"``, all on the
    same asked items. Eligible items: forgotten by the unlearned model plainly and (when the
    original is given) answered by the original under the same attack. Recovered beyond both:
    eligible, answered by the unlearned model under the attack and (when given) not by the
    negative control under it.
    """
    u = runs["unlearned"]
    u_plain, u_att = u.correct(threshold)
    forgotten = [not p for p in u_plain]
    raw = [f and a for f, a in zip(forgotten, u_att)]
    o = runs.get("original")
    n = runs.get("negative")
    o_att = o.correct(threshold)[1] if o is not None else [True] * len(ids)
    n_att = n.correct(threshold)[1] if n is not None else [False] * len(ids)
    eligible = [f and k for f, k in zip(forgotten, o_att)]
    beyond = [e and a and not t for e, a, t in zip(eligible, u_att, n_att)]
    d_u = [a - p for a, p in zip(u.attacked_logprob, u.plain_logprob)]
    row: dict[str, Any] = {
        "n_asked": len(ids),
        "n_forgotten": sum(forgotten),
        "n_recovered": sum(raw),
        "forget_rate": sum(raw) / sum(forgotten) if sum(forgotten) else None,
        "n_eligible": sum(eligible),
        "n_recovered_beyond_controls": sum(beyond),
        "controlled_rate": sum(beyond) / sum(eligible) if sum(eligible) else None,
        "delta_logprob": mean(d_u),
        "recovered_ids": [i for i, r in zip(ids, beyond) if r],
        "roles": {},
    }
    for role, r in runs.items():
        p, a = r.correct(threshold)
        row["roles"][role] = {
            "plain_accuracy": _share(p),
            "attacked_accuracy": _share(a),
            "delta_logprob": mean([x - y for x, y in zip(r.attacked_logprob, r.plain_logprob)]),
        }
    if n is not None:
        d_n = [a - p for a, p in zip(n.attacked_logprob, n.plain_logprob)]
        row["delta_logprob_beyond_negative"] = mean([x - y for x, y in zip(d_u, d_n)])
        row["negative_answers"] = sum(n_att)
    return row


def role_runs(
    attack: Attack | str,
    model: Model,
    forget: Sequence,
    *,
    config: Any = None,
    pool: Mapping[str, Sequence] | None = None,
    recovery=None,
    fmt: str | PromptFormat | None = None,
    seed: int = 0,
    bar=None,
) -> dict[str, Any]:
    """One model's plain answers and its answers under every setting of ``attack`` (JSON-able).

    Returns ``{"plain": {"rouge", "logprob"}, "settings": {name: {"asked", "info", "run"}}}``,
    ``run`` a :class:`RoleRun` as a dict. The controls' runs do not depend on the unlearning
    method, so a study computes them once and passes them to :func:`run_attack` for every method.
    """
    atk = make_attack(attack, config) if isinstance(attack, str) else attack
    rcfg = recovery or RecoveryConfig()
    f = get_format(fmt)
    items = list(forget)
    if not items:
        raise InputError("the forget set is empty; give at least one item to attack")
    qas = [question_answer(it, i, "an attack") for i, it in enumerate(items)]
    targets = [f.answer(a) for _, _, a in qas]
    plain = score_answers(model, [f.prompt(q) for _, q, _ in qas], targets, [a for _, _, a in qas], config=rcfg)
    if bar is not None:
        bar.update()
    out: dict[str, Any] = {"plain": {"rouge": plain["rouge"], "logprob": plain["logprob"]}, "settings": {}}
    for s in atk.settings():
        att = atk.apply(model, items, s, fmt=f, pool=pool or {}, seed=seed)
        res = score_answers(
            att.model, att.prompts, [targets[i] for i in att.asked], [qas[i][2] for i in att.asked], config=rcfg
        )
        run = RoleRun(
            [plain["rouge"][i] for i in att.asked],
            res["rouge"],
            [plain["logprob"][i] for i in att.asked],
            res["logprob"],
            res["answers"],
        )
        out["settings"][s["name"]] = {"setting": s, "asked": list(att.asked), "info": att.info, "run": asdict(run)}
        del att
        if bar is not None:
            bar.update()
    return out


def run_attack(
    attack: Attack | str,
    unlearned: Model,
    forget: Sequence,
    *,
    original: Model | None = None,
    negative: Model | None = None,
    controls: Mapping[str, Mapping[str, Any]] | None = None,
    pool: Mapping[str, Sequence] | None = None,
    config: Any = None,
    recovery=None,
    fmt: str | PromptFormat | None = None,
    seed: int = 0,
    progress: ProgressFactory = null_progress,
) -> dict[str, Any]:
    """One attack's route table: every setting on the unlearned model, with the original and negative controls.

    Args:
        attack: an :class:`Attack` or a registered name (then ``config`` overrides its defaults).
        unlearned: the model after unlearning. Never changed: weight attacks work on copies.
        forget: the forget items (QA or MC items).
        original: the model before unlearning (its answers under the attack give the denominator).
        negative: a model that never saw the forget set (e.g. ``embedded:gpt2-retain``).
        controls: precomputed :func:`role_runs` of ``"original"`` / ``"negative"`` (same attack,
            items, pool, seed and judgement) instead of the models.
        pool: other data an attack may use: ``{"retain": items, ...}`` (in-context examples,
            relearning on retain).
        recovery: a :class:`unpact.emphasis.RecoveryConfig` (threshold, answer length, batching):
            the same judgement as emphasis recovery.

    Returns:
        ``{"attack", "config", "settings": {name: row}, "best_setting", "best_controlled_rate", "items"}``;
        a row (see :func:`controlled_row`) holds the raw ``forget_rate`` and the ``controlled_rate``.
    """
    atk = make_attack(attack, config) if isinstance(attack, str) else attack
    rcfg = recovery or RecoveryConfig()
    items = list(forget)
    qas = [question_answer(it, i, "an attack") for i, it in enumerate(items)]
    given = dict(controls or {})
    models = {k: v for k, v in (("original", original), ("negative", negative)) if v is not None and k not in given}
    n_settings = len(atk.settings())
    kw = dict(config=None, pool=pool, recovery=rcfg, fmt=fmt, seed=seed)
    with progress(total=(1 + len(models)) * (1 + n_settings), desc=f"attack {atk.name}") as bar:
        runs_by_role = {"unlearned": role_runs(atk, unlearned, items, bar=bar, **kw)}
        for role, m in models.items():
            runs_by_role[role] = role_runs(atk, m, items, bar=bar, **kw)
    runs_by_role.update(given)
    per_item: dict[str, dict[str, Any]] = {q[0]: {"question": q[1], "answer": q[2]} for q in qas}
    rows = _setting_rows(atk.name, runs_by_role, qas, per_item, rcfg.threshold)
    for role, rr in runs_by_role.items():
        for (iid, _, _), r in zip(qas, rr["plain"]["rouge"]):
            per_item[iid][f"{role}_plain_rouge"] = r
    best = _best_setting(rows)
    return {
        "attack": atk.name,
        "description": atk.description,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(atk.config).items()},
        "threshold": rcfg.threshold,
        "roles": sorted(runs_by_role),
        "n_forget": len(items),
        "settings": rows,
        "best_setting": best,
        "best_controlled_rate": rows[best]["controlled_rate"] if best else None,
        "items": [{"id": iid, **d} for iid, d in per_item.items()],
    }


def _setting_rows(
    attack_name: str,
    runs_by_role: Mapping[str, Mapping[str, Any]],
    qas: Sequence[tuple],
    per_item: dict[str, dict[str, Any]],
    threshold: float,
) -> dict[str, dict]:
    """Each setting's :func:`controlled_row` over the roles' runs; the unlearned answers go into ``per_item``."""
    rows: dict[str, dict] = {}
    for name, u in runs_by_role["unlearned"]["settings"].items():
        runs: dict[str, RoleRun] = {}
        for role, rr in runs_by_role.items():
            if name not in rr["settings"] or rr["settings"][name]["asked"] != u["asked"]:
                raise InputError(
                    f"attack {attack_name}: the {role} control's runs do not match setting {name!r} "
                    "(compute them with the same attack settings, items and seed)"
                )
            runs[role] = RoleRun(**rr["settings"][name]["run"])
        ids = [qas[i][0] for i in u["asked"]]
        rows[name] = {"setting": u["setting"], **controlled_row(runs, ids, threshold), "info": u["info"]}
        for j, iid in enumerate(ids):
            per_item[iid].setdefault("attacked_answers", {})[name] = runs["unlearned"].attacked_answers[j]
    return rows


def _best_setting(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The setting with the highest controlled rate (ties: the larger log-prob gain); None if none has a rate."""
    scored = [(n, r) for n, r in rows.items() if r["controlled_rate"] is not None]
    return (
        max(scored, key=lambda nr: (nr[1]["controlled_rate"], nr[1]["delta_logprob"] or -math.inf))[0]
        if scored
        else None
    )


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_attack_table(tables: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text rendering of one or more :func:`run_attack` tables (for the command line)."""
    head = ["attack", "setting", "asked", "raw", "beyond controls", "Δ logprob", "original acc", "negative acc"]
    body = []
    for t in tables:
        for name, r in t["settings"].items():
            roles = r["roles"]
            body.append(
                [
                    t["attack"],
                    name,
                    str(r["n_asked"]),
                    f"{r['n_recovered']}/{r['n_forgotten']}",
                    f"{r['n_recovered_beyond_controls']}/{r['n_eligible']} ({_pct(r['controlled_rate'])})",
                    "-" if r["delta_logprob"] is None else f"{r['delta_logprob']:+.3f}",
                    _pct(roles.get("original", {}).get("attacked_accuracy")),
                    _pct(roles.get("negative", {}).get("attacked_accuracy")),
                ]
            )
    if not body:
        return "no attack settings"
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in body]
    thr = tables[0].get("threshold") if tables else None
    lines.append(
        f"\nraw = forgotten items answered under the attack (ROUGE-L recall >= {thr}); beyond controls = "
        "of those the original also answers under the attack, the ones the negative control does not answer"
    )
    return "\n".join(lines)
