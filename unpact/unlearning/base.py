"""The training loop every unlearning method runs through, and its result type.

A method (one class per method, see :mod:`unpact.unlearning.registry`) only says
what its loss is; this module does everything else the same way for all of them:

* encodes forget/retain items with :func:`unpact.data.prompt_answer_pair` and
  :func:`unpact.scoring.encode_many` (``[BOS] + prompt + answer``, right padded);
* draws a seeded schedule of forget (and retain) batches up front, so a method
  can precompute what it needs for exactly those items (reference log-probs,
  frozen activations) once, with the initial weights, before the first update;
* trains through HF Accelerate (``Accelerator.prepare`` + ``accelerator.backward``):
  on one process nothing is wrapped; under ``torchrun --nproc_per_node N`` (or
  ``accelerate launch``) the objective is wrapped in DDP, each rank takes its
  share of every batch and gradients are averaged, so every rank ends with the
  same weights;
* stops at the first NaN/inf loss, restoring the last weights whose loss was finite.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.unlearning import unlearn
    >>> result = unlearn(model, "npo_gdr", forget, retain)      # doctest: +SKIP
    >>> result.losses[-1]["loss"], result.stopped_early          # doctest: +SKIP
    (0.61, False)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer

from unpact.data import prompt_answer_pair
from unpact.errors import ConfigError, InputError
from unpact.models import hf_model_of
from unpact.progress import ProgressFactory, null_progress
from unpact.scoring import Packed, answer_row_logits, encode_many, pack, pad_id, row_logprobs

Seq = tuple[list[int], list[int]]


@dataclass
class UnlearnConfig:
    """Hyperparameters every method shares (each method's dataclass extends this).

    Attributes:
        lr: AdamW learning rate.
        steps: optimizer steps.
        batch_size: forget items per step (and retain items per step, for methods with a retain loss).
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping (None: off).
        max_batch_tokens: token budget of one forward+backward pass (rows x padded length;
            None: each step's batch in one pass). A step whose forget (or retain) rows exceed
            it is split into the fewest equal micro-batches that fit, their gradients
            accumulated with weights micro rows / step rows: the same update as one pass for
            the losses that are means over items (GA, NPO, SimNPO, IdK, the GDR retain term);
            for the ones averaged over tokens (the KLR retain term, RMU) each micro-batch's
            mean is weighted by its rows, not its tokens.
        gradient_checkpointing: recompute activations in the backward pass instead of
            keeping them (HF ``gradient_checkpointing_enable``): less memory for a large
            model, about a third more compute, the same gradients.
        warmup_steps: the learning rate rises linearly from ``lr / warmup_steps`` to ``lr``
            over the first ``warmup_steps`` steps, then stays at ``lr`` (0: constant ``lr``,
            the default). AdamW's first updates move every weight by about ``lr`` whatever
            the gradient's size; a warm-up keeps them from being the run's largest jumps
            (:mod:`unpact.trajectory` uses it for its gentle schedule).
        on_step: called as ``on_step(step, model)`` after each optimizer step (``step``
            counts from 0: the model then holds the weights after ``step + 1`` updates) for
            logging, checkpoints (:func:`unpact.trajectory.run_trajectory`) or to inject
            faults in tests; returning ``True`` stops the run there (the method's
            ``finish`` still applies). Not saved with the config.
        preset: ``"embedded"`` (the dataclass defaults, tuned on the small embedded
            models), ``"reference"`` (each method's :attr:`REFERENCE` values, its reference
            repository's defaults, over the dataclass defaults) or ``"auto"`` (default:
            ``"embedded"`` for an ``embedded:`` model, ``"reference"`` for any other).
            Options set explicitly (a key of the overrides dict; for a config instance,
            a value differing from the dataclass default) always win.

    ``REFERENCE`` (a class attribute of each method's config) holds the reference
    repository's values for the options where the embedded defaults differ; the
    table in docs/unlearning.md ("Compared with the references") names the source.
    """

    REFERENCE: ClassVar[dict[str, Any]] = {}

    lr: float = 1e-4
    steps: int = 20
    batch_size: int = 16
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_batch_tokens: int | None = None
    gradient_checkpointing: bool = False
    warmup_steps: int = 0
    on_step: Callable[[int, Any], None] | None = field(default=None, repr=False, compare=False)
    preset: str = "auto"

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be at least 1 or None, got {self.max_batch_tokens}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def to_dict(self) -> dict[str, Any]:
        """The hyperparameters as plain JSON-able values (hooks left out)."""
        return {k: v for k, v in asdict(self).items() if not callable(v)}


#: where a method's defaults come from (see :class:`UnlearnConfig`)
PRESETS = ("auto", "embedded", "reference")


def is_embedded_model(model) -> bool:
    """True for a model loaded from an ``embedded:`` spec (the shipped small models)."""
    return str(getattr(model, "unpact_spec", "") or "").startswith("embedded:")


def resolve_preset(cfg: UnlearnConfig, model) -> UnlearnConfig:
    """``cfg`` with its preset applied: for ``"reference"`` (or ``"auto"`` on a model that is not
    embedded) each ``REFERENCE`` value replaces a field still at its dataclass default.
    The returned config's ``preset`` says which was used.

    Example (+SKIP lines need a model, data or files, so the doctest run skips them):
        >>> resolve_preset(RMUConfig(), real_model).param_set                   # doctest: +SKIP
        'down_proj'
    """
    preset = cfg.preset
    if preset == "auto":
        preset = "embedded" if is_embedded_model(model) else "reference"
    changes: dict[str, Any] = {"preset": preset}
    if preset == "reference":
        explicit = getattr(cfg, "_explicit", None)  # the keys of a dict of overrides (make_config)
        defaults = {f.name: f.default for f in fields(cfg) if f.default is not MISSING}
        for k, v in type(cfg).REFERENCE.items():
            unset = (k not in explicit) if explicit is not None else (getattr(cfg, k) == defaults.get(k))
            if unset:
                changes[k] = v
    out = replace(cfg, **changes)
    out.validate()
    return out


def make_config(config_class: type[UnlearnConfig], config: UnlearnConfig | dict | None) -> UnlearnConfig:
    """``config`` as an instance of ``config_class``: None -> defaults, a dict -> overrides."""
    if config is None:
        cfg = config_class()
    elif isinstance(config, dict):
        known = {f.name for f in fields(config_class)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for {config_class.__name__}; known: {', '.join(sorted(known))}"
            )
        cfg = config_class(**config)
        object.__setattr__(cfg, "_explicit", frozenset(config))  # resolve_preset keeps these
    elif isinstance(config, config_class):
        cfg = config
    else:
        raise ConfigError(f"config must be a {config_class.__name__} or a dict, got {type(config).__name__}")
    cfg.validate()
    return cfg


@dataclass
class UnlearnResult:
    """What :func:`unpact.unlearning.unlearn` returns.

    Attributes:
        model: the edited bridge (a copy unless ``inplace=True``); save it with
            :func:`unpact.save_model`.
        losses: one dict per completed step: ``step``, ``loss`` and the method's parts.
        config: the method's config dataclass as used.
        method: the registry name.
        stopped_early: True when a NaN/inf loss stopped the run.
        message: why it stopped early ("" otherwise).
    """

    model: Any
    losses: list[dict[str, float]]
    config: UnlearnConfig
    method: str
    stopped_early: bool = False
    message: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no model)."""
        return {
            "method": self.method,
            "config": self.config.to_dict(),
            "losses": self.losses,
            "stopped_early": self.stopped_early,
            "message": self.message,
        }


@dataclass
class Batch:
    """One step's data: the packed forget rows and (optionally) retain rows, with item indices."""

    forget: Packed
    forget_idx: list[int]
    retain: Packed | None = None
    retain_idx: list[int] | None = None
    #: factor on the retain term: a micro-batch's share of the step's retain rows over its share of
    #: the forget rows (1 in one pass), so a step's micro-batches add up to its one-pass loss when
    #: the two splits are not proportional (fewer forget than retain rows)
    retain_scale: float = 1.0


@dataclass
class Run:
    """Everything a method may look at while setting up: model, encoded items, schedule."""

    model: Any
    forget_items: list
    retain_items: list
    forget_seqs: list[Seq]
    retain_seqs: list[Seq]
    forget_schedule: list[list[int]]
    retain_schedule: list[list[int]] | None
    seed: int
    device: torch.device
    rank: int = 0
    world: int = 1

    def retain_used(self) -> list[int]:
        """Sorted indices of retain items any step will use."""
        if not self.retain_schedule:
            return []
        return sorted({i for b in self.retain_schedule for i in b})


def encode_items(model, items: Sequence, *, what: str, fmt=None) -> list[Seq]:
    """``(prompt_ids, answer_ids)`` of each item through the one formatter (with ``fmt``) and encoder."""
    if len(items) == 0:
        raise InputError(f"the {what} set is empty; give at least one item")
    prompts, answers, names = [], [], []
    for i, it in enumerate(items):
        p, a = prompt_answer_pair(it, fmt)
        if not p.strip() and " " in a.strip():  # a raw passage (e.g. a WMDP corpus text): score all but its first word
            text = a.strip()
            cut = text.index(" ")
            p, a = text[:cut], text[cut:]
        prompts.append(p)
        answers.append(a)
        names.append(getattr(it, "id", None) or f"{what}[{i}]")
    return encode_many(model, prompts, answers, names=names, truncate=True)


def make_schedule(n: int, batch_size: int, steps: int, gen: torch.Generator) -> list[list[int]]:
    """Item indices of each step: consecutive chunks of seeded permutations (epochs)."""
    b = min(batch_size, n)
    out: list[list[int]] = []
    pool: list[int] = []
    while len(out) < steps:
        while len(pool) < b:
            pool += torch.randperm(n, generator=gen).tolist()
        out.append(pool[:b])
        pool = pool[b:]
    return out


def micro_batches(idx: list[int], seqs: Sequence[Seq], max_batch_tokens: int | None, parts: int = 1) -> list[list[int]]:
    """``idx`` cut into at least ``parts`` contiguous near-equal micro-batches, as few as
    keep each one's rows x longest sequence within ``max_batch_tokens`` (None: no limit).

    Example:
        >>> micro_batches([0, 1, 2, 3], [([0, 1], [2])] * 4, max_batch_tokens=6)
        [[0, 1], [2, 3]]
    """

    def split(k: int) -> list[list[int]]:
        q, r = divmod(len(idx), k)
        out, start = [], 0
        for j in range(k):
            n = q + (1 if j < r else 0)
            out.append(idx[start : start + n])
            start += n
        return out

    k = max(1, min(parts, len(idx)))
    while max_batch_tokens is not None and k < len(idx):
        if all(len(g) * max(len(seqs[i][0]) + len(seqs[i][1]) for i in g) <= max_batch_tokens for g in split(k) if g):
            break
        k += 1
    return split(k)


def answer_logits_of(model, packed: Packed) -> Float[Tensor, "n_targets vocab"]:
    """Training forward: the wrapped HF model's logits only at the positions that predict an
    answer token (row-major, :func:`unpact.scoring.answer_rows`), with grad."""
    return answer_row_logits(hf_model_of(model), packed.input_ids, packed.target_mask)


def answer_logprobs_of(model, packed: Packed) -> tuple[Float[Tensor, "n_targets vocab"], Float[Tensor, "batch pos"]]:
    """``(answer-row logits, token log-probs)`` of a packed batch (with grad), via :mod:`unpact.scoring`:
    the logits only at the positions that predict an answer token (:func:`answer_logits_of`)."""
    rows = answer_logits_of(model, packed)
    return rows, row_logprobs(rows, packed.input_ids, packed.target_mask)


class UnlearningMethod:
    """Base class of one unlearning method: a loss over a forget (and retain) batch.

    Subclasses set ``name``, ``config_class`` and implement :meth:`loss`; they may
    override :meth:`setup` (precompute references with the initial weights),
    :meth:`trainable` (which parameters move) and :meth:`finish` (post-training
    edit, e.g. task-vector negation).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[UnlearnConfig]] = UnlearnConfig
    #: "none", "optional" or "required"
    retain: ClassVar[str] = "none"
    description: ClassVar[str] = ""

    def __init__(self, config: UnlearnConfig):
        self.config = config

    def trainable(self, model) -> list[nn.Parameter]:
        return [p for p in hf_model_of(model).parameters()]

    def setup(self, run: Run) -> None:  # noqa: B027 - optional hook
        """Precompute whatever the loss needs from the initial weights (no grad)."""

    def loss(self, model, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def finish(self, run: Run) -> None:  # noqa: B027 - optional hook
        """Edit the weights after the last step (default: nothing)."""

    def checkpoint_model(self, live, original):
        """The model as it stands at a checkpoint taken during training (what
        :func:`unpact.trajectory.run_trajectory` measures and saves): ``live`` is the model being
        trained, ``original`` the model before unlearning; neither may be changed.

        Default: the trained model itself. A method whose :meth:`finish` edits the weights after
        training (task vector's negation) returns that edit applied to a copy of ``live``; a
        method that overrides :meth:`finish` without saying how its checkpoints look is refused.
        """
        if type(self).finish is not UnlearningMethod.finish:
            raise ConfigError(
                f"method {self.name!r} edits its weights after training (finish); give it a "
                "checkpoint_model(live, original) to take checkpoints along its training"
            )
        return live


class _Objective(nn.Module):
    """The bridge plus the method's loss, as one module so DDP can wrap it."""

    def __init__(self, model, method: UnlearningMethod):
        super().__init__()
        self.model = model
        self._method = method

    def forward(self, batch: Batch):
        return self._method.loss(self.model, batch)


def unique_storage(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """One parameter per storage (the bridge's split q/k/v are views of a fused qkv)."""
    best: dict[int, nn.Parameter] = {}
    for p in params:
        key = p.untyped_storage().data_ptr()
        if key not in best or p.numel() > best[key].numel():
            best[key] = p
    return list(best.values())


def copy_model(model):
    """A deep copy of a bridge whose parameters keep sharing storage the way the original's do.

    ``copy.deepcopy`` clones every parameter separately, which would cut the
    bridge's split q/k/v loose from the fused qkv weight that the HF model (and
    :func:`unpact.save_model`) use; here each storage is cloned once and every
    parameter becomes the same view of the clone.
    """
    groups: dict[int, list[nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault(p.untyped_storage().data_ptr(), []).append(p)
    memo: dict[int, Any] = {}
    with torch.no_grad():
        for ps in groups.values():
            storage = ps[0].untyped_storage().clone()
            for p in ps:
                t = torch.empty(0, dtype=p.dtype, device=p.device)
                t.set_(storage, p.storage_offset(), p.size(), p.stride())
                memo[id(p)] = nn.Parameter(t, requires_grad=p.requires_grad)
        for t in _non_leaf_tensors(model):  # activations a hook or cache kept with their graph
            memo[id(t)] = t.detach().clone()
    out = copy.deepcopy(model, memo)
    _rewire_capture_hooks(model, out)
    return out


#: a module's hook tables, keyed by the hook's handle id
_HOOK_TABLES = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _rewire_capture_hooks(original, copied) -> None:
    """Give ``copied`` its own TransformerLens capture hooks.

    A TransformerLens 4 block wires PyTorch hooks (``hook_mlp_in``'s capture, the split-qkv
    fork, scaled contributions) as closures over *its own* hook points, through weak
    proxies. ``deepcopy`` copies the hook tables but not the closures, so a copy would run
    the original's hook points (a hook added to the copy never fires, one added to the
    original fires on the copy) and fail once the original is freed. Here the copied
    closures are dropped and each copied block wires its own.
    """
    copies = dict(copied.named_modules())
    for name, block in original.named_modules():
        handles = getattr(block, "_capture_hook_handles", None)
        if not handles:
            continue
        ids = {h.id for h in handles}
        target = copies[name]
        for sub in target.modules():
            for table in _HOOK_TABLES:
                hooks = getattr(sub, table, None)
                for i in ids if hooks is not None else ():
                    hooks.pop(i, None)
        target._capture_hook_handles = []
        target._capture_hooks_wired = False
        target._maybe_wire_capture_hooks()


def _non_leaf_tensors(root) -> list[Tensor]:
    """Tensors with autograd history reachable from ``root`` through attributes and containers."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            if not obj.is_leaf:
                found.append(obj)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())
    return found


def _checkpointing_on(hf) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers >= 5.2x, older
        if hasattr(type(hf), name):
            return bool(getattr(hf, name))
    return False


def _set_checkpointing(hf, on: bool) -> None:
    """Switch HF activation (gradient) checkpointing on or off, non-reentrant (works in eval mode
    and with inputs that need no grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):
        hf.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs
        ) if on else hf.activation_checkpointing_disable()
    else:
        hf.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=kwargs
        ) if on else hf.gradient_checkpointing_disable()


def _checkpointed_layers(hf) -> list[nn.Module]:
    """The layers HF checkpoints (``gradient_checkpointing`` set on them by :func:`_set_checkpointing`)."""
    return [m for m in hf.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing is True]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier at ``step`` (from 0) of a linear warm-up over ``warmup_steps``.

    Example:
        >>> [warmup_factor(s, 4) for s in range(6)]
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def _shard(idx: list[int], rank: int, world: int) -> list[int]:
    return idx[rank::world]


def train(
    method: UnlearningMethod,
    model,
    forget: Sequence,
    retain: Sequence | None,
    *,
    seed: int = 0,
    progress: ProgressFactory = null_progress,
    fmt=None,
) -> tuple[list[dict[str, float]], bool, str]:
    """Run ``method`` on ``model`` in place; returns ``(losses, stopped_early, message)``."""
    cfg = method.config
    accelerator = _accelerator(model, cfg.batch_size, len(forget))
    run = _make_run(method, model, forget, retain, seed, accelerator, fmt)
    hf = hf_model_of(model)
    was_training = hf.training
    model.eval()  # no dropout: the loss is a deterministic function of the weights
    method.setup(run)
    checkpointing = bool(cfg.gradient_checkpointing) and not _checkpointing_on(hf)
    if checkpointing:
        if not getattr(hf, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"gradient_checkpointing: the {type(hf).__name__} model does not support it; "
                "set gradient_checkpointing = false"
            )
        _set_checkpointing(hf, True)
    # HF checkpoints a layer only in training mode; the model stays in eval mode (no dropout), so
    # the checkpointed layers alone are marked training (their sub-modules, dropout included, are not)
    layers = _checkpointed_layers(hf) if checkpointing else []
    for layer in layers:
        layer.training = True
    trainable = method.trainable(model)
    trainable_ids = {id(p) for p in trainable}
    old_flags = [(p, p.requires_grad) for p in hf.parameters()]
    for p in hf.parameters():
        p.requires_grad_(id(p) in trainable_ids)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective, optimizer = accelerator.prepare(_Objective(model, method), optimizer)
    loop = _Loop(method, run, objective, optimizer, accelerator, trainable, pad_id(model.tokenizer))
    try:
        with progress(total=cfg.steps, desc=f"unlearn {method.name}") as bar:
            loop.run_steps(bar)
        loop.check_final_weights()
        optimizer.zero_grad(set_to_none=True)
        if not loop.stopped:
            with torch.no_grad():
                method.finish(run)
    finally:
        for layer in layers:
            layer.training = False
        if checkpointing:
            _set_checkpointing(hf, False)
        for p, flag in old_flags:
            p.requires_grad_(flag)
        accelerator.free_memory()
        hf.train(was_training)
        if not was_training:
            model.eval()
    return loop.losses, loop.stopped, loop.message


def _accelerator(model, batch_size: int, n_forget: int):
    """accelerate's ``Accelerator`` for the model's device; every process needs an item per step."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device = next(iter(hf_model_of(model).parameters())).device
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    world = accelerator.num_processes
    if min(batch_size, n_forget) < world:
        raise ConfigError(
            f"batch_size {batch_size} (or the forget set of {n_forget}) is smaller than the "
            f"{world} processes; every process needs at least one item per step"
        )
    return accelerator


def _make_run(
    method: UnlearningMethod, model, forget: Sequence, retain: Sequence | None, seed: int, accelerator, fmt
) -> Run:
    """The run's items, encoded sequences and batch schedules, seeded by ``seed``."""
    cfg = method.config
    torch.manual_seed(seed)
    # separate streams, so a shorter run's schedule is a prefix of a longer one's
    gen = torch.Generator().manual_seed(seed)
    gen_retain = torch.Generator().manual_seed(seed + 7919)
    forget_items = list(forget)
    retain_items = list(retain) if retain is not None else []
    use_retain = method.retain != "none" and len(retain_items) > 0
    return Run(
        model=model,
        forget_items=forget_items,
        retain_items=retain_items,
        forget_seqs=encode_items(model, forget_items, what="forget", fmt=fmt),
        retain_seqs=encode_items(model, retain_items, what="retain", fmt=fmt) if use_retain else [],
        forget_schedule=make_schedule(len(forget_items), cfg.batch_size, cfg.steps, gen),
        retain_schedule=make_schedule(len(retain_items), cfg.batch_size, cfg.steps, gen_retain) if use_retain else None,
        seed=seed,
        device=accelerator.device,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
    )


class _Loop:
    """The optimisation steps of one :func:`train` call, with the weights of the last finite step
    kept so that a non-finite loss or weight can be undone."""

    def __init__(
        self,
        method: UnlearningMethod,
        run: Run,
        objective,
        optimizer,
        accelerator,
        trainable: list[nn.Parameter],
        pad: int,
    ) -> None:
        self.method, self.run, self.cfg = method, run, method.config
        self.objective, self.optimizer, self.accelerator = objective, optimizer, accelerator
        self.trainable, self.pad = trainable, pad
        self.kept = unique_storage(trainable)
        self.snapshot = [p.detach().clone() for p in self.kept]
        self.losses: list[dict[str, float]] = []
        self.stopped, self.message = False, ""

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.kept], self.snapshot)

    def run_steps(self, bar) -> None:
        cfg = self.cfg
        for step in range(cfg.steps):
            row = self.step_losses(step)
            if not math.isfinite(row["loss"]):
                self.stop_at(step, row["loss"])
                return
            self.losses.append(row)
            with torch.no_grad():
                torch._foreach_copy_(self.snapshot, [p.data for p in self.kept])
            if cfg.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
            if cfg.warmup_steps:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * warmup_factor(step, cfg.warmup_steps)
            self.optimizer.step()
            bar.update()
            if cfg.on_step is not None and cfg.on_step(step, self.run.model) is True:
                return

    def micro_batches(self, step: int) -> tuple[list[int], list[list[int]], list[list[int]] | None]:
        """This process's forget rows of ``step`` and their micro-batches (forget, and retain when used)."""
        run, cfg = self.run, self.cfg
        f_idx = _shard(run.forget_schedule[step], run.rank, run.world)
        f_parts = micro_batches(f_idx, run.forget_seqs, cfg.max_batch_tokens)
        r_parts = None
        if run.retain_schedule is not None:
            r_idx = _shard(run.retain_schedule[step], run.rank, run.world)
            r_parts = micro_batches(r_idx, run.retain_seqs, cfg.max_batch_tokens, len(f_parts))
            if len(r_parts) > len(f_parts):
                f_parts = micro_batches(f_idx, run.forget_seqs, cfg.max_batch_tokens, len(r_parts))
            if len(r_parts) > len(f_parts):  # more retain passes than forget rows: pair them, over budget
                r_parts = micro_batches(r_idx, run.retain_seqs, None, len(f_parts))
        return f_idx, f_parts, r_parts

    def step_losses(self, step: int) -> dict[str, float]:
        """Forward and backward over the step's micro-batches; the step's loss and its parts."""
        run, accelerator = self.run, self.accelerator
        f_idx, f_parts, r_parts = self.micro_batches(step)
        self.optimizer.zero_grad(set_to_none=True)
        total: Tensor | None = None
        for j, fp in enumerate(f_parts):
            batch = Batch(pack([run.forget_seqs[i] for i in fp], self.pad).to(accelerator.device), fp)
            w = len(fp) / len(f_idx)  # accumulate: weight each micro-batch by its share of the rows
            if r_parts is not None and j < len(r_parts) and r_parts[j]:
                batch.retain = pack([run.retain_seqs[i] for i in r_parts[j]], self.pad).to(accelerator.device)
                batch.retain_idx = r_parts[j]
                batch.retain_scale = len(r_parts[j]) / sum(map(len, r_parts)) / w
            loss, parts = self.objective(batch)
            if len(f_parts) > 1:
                loss, parts = loss * w, {k: v * w for k, v in parts.items()}
            # gradients of all but the last micro-batch stay local (one all-reduce per step
            # under DDP, whatever each rank's number of micro-batches); a non-finite loss is
            # still back-propagated (so ranks stay in step) and its gradient never applied
            with accelerator.no_sync(self.objective) if j < len(f_parts) - 1 else nullcontext():
                accelerator.backward(loss)
            values = torch.stack([loss.detach().float(), *[v.detach().float() for v in parts.values()]])
            total = values if total is None else total + values
        names = ["loss", *parts]
        values = accelerator.reduce(total, "mean") if run.world > 1 else total
        return {"step": step, **{k: float(v) for k, v in zip(names, values.tolist())}}  # type: ignore[union-attr]

    def stop_at(self, step: int, loss: float) -> None:
        """A non-finite loss at ``step``: back to the last finite step's weights, and say so."""
        name = self.method.name
        if self.losses:
            self.restore()
            self.message = (
                f"{name}: the loss became {loss} at step {step}; stopped, the model holds the weights of "
                f"step {step - 1} (last finite loss {self.losses[-1]['loss']:.6g})"
            )
        else:
            self.message = (
                f"{name}: the loss is {loss} at step 0, before any update; "
                "stopped, the weights are unchanged (check the model and the data)"
            )
        self.stopped = True

    def check_final_weights(self) -> None:
        """Weights made non-finite by the last update go back to the step before it."""
        if self.stopped or all(bool(torch.isfinite(p).all()) for p in self.kept):
            return
        self.restore()
        self.stopped = True
        steps = self.cfg.steps
        self.message = (
            f"{self.method.name}: the weights became non-finite in the last update (step {steps - 1}); "
            f"the model holds the weights of step {steps - 1} (last finite loss {self.losses[-1]['loss']:.6g})"
        )
