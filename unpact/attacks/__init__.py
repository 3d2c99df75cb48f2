"""Recovery attacks beyond emphasis, measured the way emphasis recovery is.

One registry (:data:`ATTACKS`), one class per attack, each config in one dataclass:

* ``relearning`` (:mod:`~unpact.attacks.relearning`): a few fine-tuning steps on a disjoint
  part of the forget set or on retain data, then the rest is asked;
* ``quantization`` (:mod:`~unpact.attacks.quantization`): round-to-nearest 8/4-bit weights;
* ``in_context`` (:mod:`~unpact.attacks.in_context`): solved examples before the question;
* ``paraphrase`` (:mod:`~unpact.attacks.paraphrase`): the question in other words.

:func:`run_attack` runs one attack's settings on the unlearned model, the original
and a negative control and returns its route table; see :mod:`unpact.attacks.base`.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.attacks import run_attack                                  # doctest: +SKIP
    >>> table = run_attack("quantization", unlearned, forget, original=original,
    ...                    negative=retain_model)                              # doctest: +SKIP
    >>> table["settings"]["int4"]["controlled_rate"]                           # doctest: +SKIP
"""

from unpact.attacks.base import (
    ATTACKS,
    Attack,
    Attacked,
    controlled_row,
    get_attack,
    make_attack,
    register_attack,
    render_attack_table,
    role_runs,
    run_attack,
)

# Importing the attack modules registers them, in this order: the order a study runs them in
# when it names none (unpact.config.AttackSettings) and ``unpact attack`` lists them in.
from unpact.attacks.quantization import QuantizationConfig, dequantize, quantize_model_, quantize_rtn
from unpact.attacks.paraphrase import ParaphraseConfig
from unpact.attacks.in_context import InContextConfig
from unpact.attacks.relearning import RelearningConfig, split_forget

__all__ = [
    "ATTACKS",
    "Attack",
    "Attacked",
    "controlled_row",
    "get_attack",
    "make_attack",
    "register_attack",
    "render_attack_table",
    "role_runs",
    "run_attack",
    "InContextConfig",
    "ParaphraseConfig",
    "QuantizationConfig",
    "RelearningConfig",
    "dequantize",
    "quantize_model_",
    "quantize_rtn",
    "split_forget",
]
