"""Quantization attack: round the unlearned weights to a few bits, then ask plainly.

Zhang et al. (2024), "Does your LLM truly unlearn? An embarrassingly simple
approach to recover unlearned knowledge", found that 4-bit quantization of an
unlearned model brings much of the forgotten knowledge back: unlearning moves
the weights so little that rounding returns them to the original's bins.

This is round-to-nearest (RTN) symmetric quantization in plain torch, per
output channel (or per group of ``group_size`` input weights within a channel):
``scale = max|w| / (2**(bits-1) - 1)``, ``code = round(w / scale)`` clamped to
``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``, and the model computes with the
dequantised ``code * scale`` (weights are stored back in their own dtype, so no
special kernel is needed). Every linear layer of the transformer blocks is
quantized (``nn.Linear`` and GPT-2's ``Conv1D``, whose output channels are its
columns); embeddings, norms and biases stay as they are, and the unembedding
too unless ``include_lm_head``.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.5, -1.0, 0.26]])
    >>> codes, scale = quantize_rtn(w, bits=4)
    >>> codes.tolist(), round(float(scale[0, 0]), 4)
    ([[3.0, -7.0, 2.0]], 0.1429)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from unpact.attacks.base import Attack, Attacked, question_answer, register_attack
from unpact.errors import ConfigError
from unpact.models import hf_model_of
from unpact.unlearning.base import copy_model


def quantize_rtn(
    weight: Float[Tensor, "out d_in"], bits: int, group_size: int | None = None
) -> tuple[Float[Tensor, "out d_in"], Float[Tensor, "out n_groups"]]:
    """Symmetric round-to-nearest codes and scales of ``weight``, row = output channel.

    Returns ``(codes, scales)``: ``codes`` has ``weight``'s shape with integer values in
    ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` (as floats), ``scales`` one per row and group;
    the dequantised weight is :func:`dequantize` of them. A row (group) of zeros keeps scale 1.
    """
    if bits < 2 or bits > 16:
        raise ConfigError(f"quantization bits must be in 2..16, got {bits}")
    out, d_in = weight.shape
    g = d_in if group_size is None else int(group_size)
    if g < 1 or d_in % g:
        raise ConfigError(f"group_size {group_size} must divide the layer's input size {d_in}")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float().reshape(out, d_in // g, g)
    scale = w.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.clamp(torch.round(w / scale), -qmax, qmax)
    return codes.reshape(out, d_in), scale.squeeze(-1)


def dequantize(codes: Float[Tensor, "out d_in"], scales: Float[Tensor, "out n_groups"]) -> Float[Tensor, "out d_in"]:
    """``codes * scale``, each scale repeated over its group."""
    out, d_in = codes.shape
    g = d_in // scales.shape[1]
    return (codes.reshape(out, -1, g) * scales.unsqueeze(-1)).reshape(out, d_in)


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - very old transformers
        return ()
    return Conv1D


def quantizable_layers(model, include_lm_head: bool = False) -> Iterator[tuple[str, nn.Module, bool]]:
    """``(name, module, transposed)`` of each linear layer to quantize (``transposed``: GPT-2's Conv1D)."""
    hf = hf_model_of(model)
    conv1d = _conv1d_type()
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    for name, mod in hf.named_modules():
        if mod is head and not include_lm_head:
            continue
        if isinstance(mod, nn.Linear):
            yield name, mod, False
        elif conv1d and isinstance(mod, conv1d):
            yield name, mod, True


@torch.no_grad()
def quantize_model_(model, bits: int, group_size: int | None = None, include_lm_head: bool = False) -> dict[str, Any]:
    """Quantize ``model``'s linear weights in place (RTN, see the module docstring); returns a summary.

    The bridge computes with split q/k/v layers beside the fused one for some
    architectures; per-output-channel rounding gives the same values in both, so
    every copy is quantized the same way.
    """
    n_layers = n_weights = 0
    max_err = 0.0
    for _name, mod, transposed in quantizable_layers(model, include_lm_head):
        w = mod.weight
        rows = w.data.t() if transposed else w.data
        codes, scales = quantize_rtn(rows, bits, group_size)
        deq = dequantize(codes, scales).to(w.dtype)
        max_err = max(max_err, float((deq.float() - rows.float()).abs().max()))
        rows.copy_(deq)
        n_layers += 1
        n_weights += w.numel()
    return {"bits": bits, "group_size": group_size, "layers": n_layers, "weights": n_weights, "max_abs_error": max_err}


@dataclass
class QuantizationConfig:
    """RTN quantization settings.

    Attributes:
        bits: the bit widths swept (8 and 4 as in Zhang et al. 2024).
        group_size: input weights per scale within an output channel (None: one scale per channel).
        include_lm_head: quantize the unembedding too (off: as the usual weight-only schemes).
    """

    bits: tuple[int, ...] = (8, 4)
    group_size: int | None = None
    include_lm_head: bool = False

    def __post_init__(self) -> None:
        self.bits = tuple(int(b) for b in self.bits)
        for b in self.bits:
            if b < 2 or b > 16:
                raise ConfigError(f"quantization bits must be in 2..16, got {b}")
        if self.group_size is not None and self.group_size < 1:
            raise ConfigError(f"group_size must be >= 1 or None, got {self.group_size}")


@register_attack
class Quantization(Attack):
    """Round the weights to ``bits`` bits (RTN per channel), then ask the plain questions."""

    name = "quantization"
    config_class = QuantizationConfig
    description = "round-to-nearest weight quantization, then the plain question (Zhang et al. 2024)"
    edits_weights = True

    def settings(self) -> list[dict[str, Any]]:
        g = self.config.group_size
        return [{"name": f"int{b}" + (f"-g{g}" if g else ""), "bits": b, "group_size": g} for b in self.config.bits]

    def apply(self, model, items: Sequence, setting, *, fmt, pool, seed: int = 0) -> Attacked:
        q = copy_model(model)
        info = quantize_model_(q, setting["bits"], setting["group_size"], self.config.include_lm_head)
        prompts = [fmt.prompt(question_answer(it, i)[1]) for i, it in enumerate(items)]
        return Attacked(q, prompts, list(range(len(items))), info)
