"""unpact: see what LLM unlearning really does to a model.

Load any causal LM as a TransformerLens bridge, unlearn a forget set with the
mainstream methods, attribute the answer to the prompt's tokens before and
after, emphasise the keywords to test whether the "forgotten" answer comes back,
and check whether general ability collapsed.

Example:
    >>> import unpact
    >>> model = unpact.load_model("embedded:gpt2")                 # doctest: +SKIP
    >>> bench = unpact.load_benchmark("embedded:tofu", "forget10")  # doctest: +SKIP
"""

from unpact.data import load_benchmark
from unpact.errors import UnpactError
from unpact.models import load_model, model_info, save_model

__version__ = "0.1.0"

__all__ = ["load_model", "save_model", "model_info", "load_benchmark", "UnpactError", "__version__"]
