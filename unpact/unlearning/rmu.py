"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, the WMDP paper).

At layer ``layer`` (hook ``blocks.{layer}.hook_resid_post``) the forget
activations are pushed towards a fixed random direction scaled by
``steering_coef``, and the retain activations are held at their values under
the initial model:

``L = MSE(h_l(forget), c · u) + alpha · MSE(h_l(retain), h_l^frozen(retain))``

``u`` is a seeded random unit vector (uniform [0, 1) entries, normalised, as in
the paper). Only MLP weights of ``update_layers`` move (default: ``layer``
and the two below it, as in the paper): with ``param_set="down_proj"`` only the
MLP's output projection weight (``down_proj``/``c_proj``: the WMDP repository's
``--param_ids 6``), with ``"mlp"`` every MLP parameter. The frozen retain
activations are computed once, in a no-grad pass with the initial weights, for
exactly the retain items the schedule uses (no second model in memory). When
``steering_coef`` is None it is ``steering_scale`` times the mean per-token norm
of the forget activations at ``layer``.

Presets (:class:`~unpact.unlearning.base.UnlearnConfig`): ``"reference"`` (the default
for any model that is not embedded) is the WMDP repository's ``rmu/unlearn.py``:
``down_proj`` only, a fixed steering coefficient 20, alpha 100, lr 5e-5, batch 4, 80
steps (its Zephyr-7B run used c = 6.5, alpha = 1200). The embedded defaults (every MLP
parameter, c = 4 x the mean activation norm, alpha 4) were tuned on the small models,
whose activation norms are far from a 7B model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from unpact.errors import ConfigError
from unpact.hooks.names import act_name
from unpact.scoring import chunks, forward_rows, pack, pad_id
from unpact.unlearning.base import Batch, Run, UnlearnConfig, UnlearningMethod
from unpact.unlearning.losses import masked_mse
from unpact.unlearning.registry import register


@dataclass
class RMUConfig(UnlearnConfig):
    """RMU's layer, steering coefficient, retain weight and the layers it updates.

    ``layer`` None: the middle layer (``n_layers // 2``); negative counts from the end.
    ``update_layers`` None: ``layer - 2 .. layer`` (clipped at 0).
    ``param_set``: ``"mlp"`` (every MLP parameter of those layers) or ``"down_proj"``
    (only the MLP output projection weight, as the WMDP repository).
    """

    #: the WMDP repository's rmu/unlearn.py defaults (--param_ids 6 = mlp.down_proj.weight,
    #: --steering_coeffs 20, --alpha 100, --lr 5e-5, --batch_size 4, --max_num_batches 80)
    REFERENCE: ClassVar[dict[str, Any]] = {
        "param_set": "down_proj",
        "steering_coef": 20.0,
        "alpha": 100.0,
        "lr": 5e-5,
        "batch_size": 4,
        "steps": 80,
    }

    # tuned on the embedded models (docs/unlearning.md); a larger steering_scale
    # unlearns faster but costs retain ROUGE-L
    lr: float = 2e-3
    steps: int = 30
    layer: int | None = None
    steering_coef: float | None = None
    steering_scale: float = 4.0
    alpha: float = 4.0
    update_layers: tuple[int, ...] | None = None
    param_set: str = "mlp"

    def validate(self) -> None:
        super().validate()
        if self.param_set not in PARAM_SETS:
            raise ConfigError(f"rmu param_set must be one of {', '.join(PARAM_SETS)}, got {self.param_set!r}")


#: which MLP parameters RMU trains
PARAM_SETS = ("mlp", "down_proj")
#: the name of an MLP's output projection (d_mlp -> d_model) across HF architectures
OUT_PROJ_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc_out", "fc2", "w2")


def mlp_out_weights(mlp: nn.Module) -> list[nn.Parameter]:
    """The output-projection weight of one MLP block (``down_proj``, GPT-2's ``c_proj``, ...)."""
    found = [
        p
        for n, p in mlp.named_parameters()
        if n.endswith("weight") and any(f"{o}." in n or n.startswith(o) for o in OUT_PROJ_NAMES)
    ]
    if not found:
        names = [n for n, _ in mlp.named_parameters()]
        raise ConfigError(
            f"rmu param_set='down_proj' found no output projection among the MLP's parameters {names}; "
            "use param_set='mlp'"
        )
    return found[:1]


def _real_mask(packed) -> Tensor:
    n = packed.input_ids.shape[1]
    return torch.arange(n, device=packed.input_ids.device)[None, :] < packed.lengths[:, None]


@register
class RMU(UnlearningMethod):
    """Steer layer-l forget activations to a random direction, keep retain activations."""

    name = "rmu"
    config_class = RMUConfig
    retain = "required"
    description = "push forget activations at one layer to a random vector; hold retain activations"

    def _layer(self, model) -> int:
        n = model.cfg.n_layers
        layer = self.config.layer if self.config.layer is not None else n // 2
        layer = layer + n if layer < 0 else layer
        if not 0 <= layer < n:
            raise ConfigError(f"rmu layer {self.config.layer} is outside the model's {n} layers")
        return layer

    def hook_name(self, model) -> str:
        return act_name("resid_post", self._layer(model))

    def trainable(self, model) -> list[nn.Parameter]:
        layer = self._layer(model)
        layers = self.config.update_layers
        if layers is None:
            layers = tuple(range(max(0, layer - 2), layer + 1))
        for i in layers:
            if not 0 <= i < model.cfg.n_layers:
                raise ConfigError(f"rmu update_layers has {i}, outside the model's {model.cfg.n_layers} layers")
        if self.config.param_set == "down_proj":
            return [p for i in layers for p in mlp_out_weights(model.blocks[i].mlp)]
        return [p for i in layers for p in model.blocks[i].mlp.parameters()]

    def _acts(self, model, ids: Tensor) -> Tensor:
        store: dict[str, Tensor] = {}

        def capture(t, hook):
            store["h"] = t
            return t

        none = torch.zeros(0, dtype=torch.long)  # the activations only: no position is unembedded
        forward_rows(model, ids, none, none, [(self.hook_name(model), capture)])
        return store["h"]

    def setup(self, run: Run) -> None:
        model = run.model
        pad = pad_id(model.tokenizer)
        d = model.cfg.d_model
        gen = torch.Generator().manual_seed(run.seed + 2)
        u = torch.rand(d, generator=gen)
        self.direction = (u / u.norm()).to(run.device)
        with torch.no_grad():
            if self.config.steering_coef is None:
                norms, count = 0.0, 0
                lengths = [len(p) + len(a) for p, a in run.forget_seqs]
                for group in chunks(lengths, 8192):
                    packed = pack([run.forget_seqs[i] for i in group], pad).to(run.device)
                    h = self._acts(model, packed.input_ids)
                    m = _real_mask(packed)
                    norms += float(h.norm(dim=-1)[m].sum())
                    count += int(m.sum())
                self.coef = self.config.steering_scale * norms / max(count, 1)
            else:
                self.coef = float(self.config.steering_coef)
            self.frozen: dict[int, Tensor] = {}
            used = run.retain_used()
            lengths = [len(run.retain_seqs[i][0]) + len(run.retain_seqs[i][1]) for i in used]
            for group in chunks(lengths, 8192):
                items = [used[g] for g in group]
                packed = pack([run.retain_seqs[i] for i in items], pad).to(run.device)
                h = self._acts(model, packed.input_ids)
                for j, i in enumerate(items):
                    self.frozen[i] = h[j, : int(packed.lengths[j])].cpu()

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        h_f = self._acts(model, batch.forget.input_ids)
        forget = masked_mse(h_f, self.coef * self.direction, _real_mask(batch.forget))
        loss, parts = forget, {"forget_loss": forget}
        if batch.retain is not None:
            h_r = self._acts(model, batch.retain.input_ids)
            target = torch.zeros_like(h_r)
            for j, i in enumerate(batch.retain_idx):  # type: ignore[arg-type]
                f = self.frozen[i]
                target[j, : f.shape[0]] = f.to(target.device, target.dtype)
            retain = masked_mse(h_r, target, _real_mask(batch.retain)) * batch.retain_scale
            loss = loss + self.config.alpha * retain
            parts["retain_loss"] = retain
        return loss, parts
