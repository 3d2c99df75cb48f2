"""Control models with known answers, and damage-matched null models.

An instrument that says "hidden" or "erased" must be shown to say the right
thing where the answer is known:

* the **negative control** is a model that never saw the forget facts (the
  embedded world ships one per architecture: ``embedded:<arch>-retain``): no
  probe may find the facts there, and nothing may be "recovered";
* the **positive control** (:func:`hide_facts`) is the original model taught to
  answer the plain-format forget questions with a refusal while the same facts
  asked in other formats (``keep``: e.g. the paraphrased questions or the
  biography cloze) and the retain set are trained to stay as they were: the
  facts are there, hidden from the plain prompt only, so a probe that misses
  them there is blind.

A verdict about what unlearning did is compared with **nulls** that do the same
amount of damage without the unlearning objective:

* :func:`noise_model`: every weight matrix plus Gaussian noise of ``scale``
  times its own standard deviation (a fixed seed);
* :func:`match_noise`: the noise scale at which a measure (say, forget
  accuracy) falls to a target, found by bisection, so the null is damage-matched;
* :func:`retain_finetune_model`: plain fine-tuning on the retain set only (the
  "it's just any training" null).

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.controls import noise_model                       # doctest: +SKIP
    >>> null = noise_model(original, scale=0.5, seed=0)                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unpact.attacks.relearning import fine_tune_method
from unpact.data.records import QAItem
from unpact.errors import ConfigError, InputError
from unpact.models import hf_model_of, sync_fused_weights
from unpact.unlearning import unlearn
from unpact.unlearning.base import UnlearnConfig, copy_model, train

# ------------------------------------------------------------------ positive control


@dataclass
class HideConfig:
    """How the positive control hides the facts.

    Attributes:
        lr, steps, batch_size: the fine-tune (IDK towards refusals on the plain questions).
        keep_weight: weight of the NLL that keeps ``keep`` (other formats, retain) answered.
    """

    lr: float = 1e-3
    steps: int = 30
    batch_size: int = 16
    keep_weight: float = 1.0


def paraphrase_keep(items: Sequence[QAItem]) -> list[QAItem]:
    """The forget facts asked by their paraphrased questions (the format the positive control must keep)."""
    out = [
        QAItem(it.paraphrased_question, it.answer, id=f"{it.id}/paraphrase", meta=dict(it.meta or {}))
        for it in items
        if isinstance(it, QAItem) and it.paraphrased_question and it.paraphrased_question != it.question
    ]
    if not out:
        raise InputError("no forget item has a paraphrased_question to keep; give keep=... explicitly")
    return out


def hide_facts(
    original,
    forget: Sequence[QAItem],
    keep: Sequence,
    config: HideConfig | None = None,
    *,
    seed: int = 0,
    fmt=None,
    training: Mapping[str, Any] | None = None,
):
    """The positive control: ``original`` fine-tuned to refuse the plain forget questions, keeping ``keep``.

    ``keep`` should hold the same facts in the probe formats (see :func:`paraphrase_keep`)
    and some retain items. ``fmt``: the prompt format the study asks in (a chat model's template;
    default plain), so the refusals are taught where they are measured. ``training``: how the
    fine-tune's passes run, not what it learns (``max_batch_tokens``, ``gradient_checkpointing``
    of :class:`~unpact.unlearning.UnlearnConfig`; a study passes its own). Returns the edited copy
    (the original is untouched); its plain accuracy on ``forget`` falls while the kept formats
    stay answered.
    """
    cfg = config or HideConfig()
    res = unlearn(
        original,
        "idk",
        list(forget),
        list(keep),
        {
            **(training or {}),
            "lr": cfg.lr,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "retain_weight": cfg.keep_weight,
        },
        seed=seed,
        fmt=fmt,
    )
    if res.stopped_early:
        raise ConfigError(f"the positive control's fine-tune stopped: {res.message}")
    return res.model


# ------------------------------------------------------------------ nulls


@torch.no_grad()
def noise_model(model, scale: float, seed: int = 0):
    """A copy of ``model`` whose every weight matrix got N(0, (scale * its std)^2) noise (biases, norms untouched).

    Storage shared between parameters (tied embeddings) gets one draw; the bridge's
    split q/k/v copies are then written back into the fused weights
    (:func:`unpact.models.sync_fused_weights`), so the bridge and a saved checkpoint agree.
    """
    if scale < 0:
        raise ConfigError(f"noise scale must be >= 0, got {scale}")
    out = copy_model(model)
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for _name, p in hf_model_of(out).named_parameters():
        key = p.untyped_storage().data_ptr()
        if p.dim() < 2 or key in seen:
            continue
        seen.add(key)
        std = float(p.float().std())
        p.add_((torch.randn(p.shape, generator=gen) * (scale * std)).to(p.dtype).to(p.device))
    sync_fused_weights(out)
    return out


def match_noise(
    model,
    measure: Callable[[Any], float],
    target: float,
    *,
    lo: float = 0.0,
    hi: float = 2.0,
    iters: int = 8,
    seed: int = 0,
    tolerance: float = 0.05,
) -> dict[str, Any]:
    """The noise scale whose :func:`noise_model` brings ``measure`` (falling with damage) to ``target``.

    Bisection on ``[lo, hi]``; stops when ``|measure - target| <= tolerance`` or after ``iters``
    steps. Returns ``{"scale", "value", "target", "trace"}`` (the model itself is rebuilt with
    :func:`noise_model` by the caller, to keep one copy in memory).
    """
    trace = []
    if measure(noise_model(model, hi, seed)) > target:
        raise ConfigError(f"noise scale {hi} does not bring the measure down to {target}; raise hi")
    best = (hi, None)
    for _ in range(iters):
        mid = (lo + hi) / 2
        v = float(measure(noise_model(model, mid, seed)))
        trace.append({"scale": mid, "value": v})
        if best[1] is None or abs(v - target) < abs(best[1] - target):
            best = (mid, v)
        if abs(v - target) <= tolerance:
            break
        if v > target:
            lo = mid
        else:
            hi = mid
    return {"scale": best[0], "value": best[1], "target": target, "trace": trace}


def retain_finetune_model(
    model, retain: Sequence, *, lr: float = 1e-4, steps: int = 20, batch_size: int = 16, seed: int = 0
):
    """A copy of ``model`` fine-tuned (NLL) on ``retain`` only: training without any forget objective."""
    cfg = UnlearnConfig(lr=lr, steps=steps, batch_size=batch_size)
    cfg.validate()
    out = copy_model(model)
    _losses, stopped, message = train(fine_tune_method(cfg), out, list(retain), None, seed=seed)
    if stopped:
        raise ConfigError(f"the retain fine-tune null stopped: {message}")
    return out


__all__ = ["HideConfig", "hide_facts", "match_noise", "noise_model", "paraphrase_keep", "retain_finetune_model"]
