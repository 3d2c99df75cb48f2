"""unpact: see what LLM unlearning really does to a model.

Load any causal LM as a TransformerLens bridge, unlearn a forget set with the
mainstream methods, attribute the answer to the prompt's tokens before and
after, emphasise the keywords to test whether the "forgotten" answer comes back,
and check whether general ability collapsed.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> import unpact
    >>> model = unpact.load_model("embedded:gpt2")                 # doctest: +SKIP
    >>> bench = unpact.load_benchmark("embedded:tofu", "forget10")  # doctest: +SKIP
"""

import importlib

from unpact.errors import UnpactError

__version__ = "0.1.0"

__all__ = ["load_model", "save_model", "model_info", "load_benchmark", "UnpactError", "__version__"]

#: names imported on first use, so ``import unpact`` (and the ``unpact`` command) does not import
#: torch before the command line has set its thread policy (see :mod:`unpact.threads`)
_LAZY = {
    "load_model": "unpact.models",
    "save_model": "unpact.models",
    "model_info": "unpact.models",
    "load_benchmark": "unpact.data",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unpact' has no attribute {name!r}")
