"""Capture activations, and their gradients, at named hooks.

Forward hooks record the activation; backward hooks record the gradient of
whatever is back-propagated with respect to it. Both must stay attached until
``backward()`` has run, so call backward inside the ``model.hooks`` context.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> cap = Capture(["blocks.0.hook_resid_post"])                                  # doctest: +SKIP
    >>> with model.hooks(fwd_hooks=cap.fwd_hooks, bwd_hooks=cap.bwd_hooks):          # doctest: +SKIP
    ...     model(tokens, return_type="logits")[0, -1, 42].backward()
    >>> cap.acts["blocks.0.hook_resid_post"].shape, cap.grads["blocks.0.hook_resid_post"].shape  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor


class Capture:
    """Records ``acts[name]`` (forward) and ``grads[name]`` (backward) for each hook name.

    ``detach=True`` (default) stores detached copies, so nothing keeps the graph alive.
    """

    def __init__(self, names: Sequence[str], detach: bool = True):
        self.names = list(names)
        self.detach = detach
        self.acts: dict[str, Tensor] = {}
        self.grads: dict[str, Tensor] = {}

    # keyed by the name we were given: on the bridge ``hook.name`` may be the
    # canonical name behind an alias (e.g. hook_z is attn.o.hook_in)
    def _fwd(self, name: str) -> Callable:
        def fn(act: Tensor, hook) -> Tensor:
            self.acts[name] = act.detach().clone() if self.detach else act
            return act

        return fn

    def _bwd(self, name: str) -> Callable:
        def fn(grad, hook):
            g = grad[0] if isinstance(grad, tuple) else grad
            self.grads[name] = g.detach().clone()
            return None

        return fn

    @property
    def fwd_hooks(self) -> list[tuple[str, Callable]]:
        return [(n, self._fwd(n)) for n in self.names]

    @property
    def bwd_hooks(self) -> list[tuple[str, Callable]]:
        return [(n, self._bwd(n)) for n in self.names]
