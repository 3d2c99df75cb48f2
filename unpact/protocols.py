"""The ``model`` type of every signature: a structural Protocol, as TransformerLens types its own
utilities (``transformer_lens.model_protocol.TransformerLensModel``).

:func:`unpact.load_model` returns a TransformerLens 4 ``TransformerBridge``, which matches
:class:`Model`; so does any object with the same surface (a remote bridge, a wrapper). The
members are typed loosely on purpose, as in TransformerLens: implementations differ in
signature detail but agree in use.

Example:
    >>> class Fake:
    ...     cfg = tokenizer = None
    ...     def __call__(self, *a, **k): ...
    ...     def run_with_hooks(self, *a, **k): ...
    ...     def hooks(self, *a, **k): ...
    ...     def parameters(self, *a, **k): ...
    >>> isinstance(Fake(), Model), isinstance(object(), Model)
    (True, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Model(Protocol):
    """What unpact uses of a model: its config (``n_layers``, ``n_heads``, ``d_model``, ...), its
    tokenizer, a forward pass (logits), forward passes with hooks on named hook points
    (:mod:`unpact.hooks`), and its parameters (unlearning edits them in place)."""

    cfg: Any
    tokenizer: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, *args: Any, **kwargs: Any) -> Any: ...
