"""The main job: unlearn -> evaluate -> attribute -> track -> recover -> collapse -> report.

``unpact run`` unlearns each method into the run directory and then runs the registered stages
(:data:`unpact.stages.STAGES`) on that checkpoint; ``unpact audit`` runs the same stages on
checkpoints someone else made (``RunConfig.checkpoints``). One code path:
:meth:`Study.subject_stages` differs only in where the model comes from.

Every stage writes its result atomically into the run directory (see
:mod:`unpact.rundir`); a rerun reads finished stages and computes only what is
missing, so a run killed at any point resumes and ends with the same
``results.json`` as an uninterrupted one (each stage is seeded from the run's
seed and its own name, and unlearned models are read back from their saved
checkpoints, never kept only in memory).

Layout of a run directory::

    config.json           the resolved settings
    stages/*.json         one file per finished stage
    models/<method>/      each unlearned model, a plain HF checkpoint (audited checkpoints stay where they are)
    results.json          every number (written last)
    report.html, figures/ the report (``unpact report RUN_DIR`` rebuilds it)

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.config import RunConfig
    >>> results = run_study(RunConfig(methods=["ga_gdr"], max_items=8, out="runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from unpact import stages, validation
from unpact.analyses.assemble import forget_precondition, not_applicable, run_analyses  # noqa: F401 (re-exported)
from unpact.config import RunConfig
from unpact.data import resolve_format
from unpact.errors import ConfigError
from unpact.models import load_model, model_info, save_model
from unpact.progress import ProgressFactory, null_progress
from unpact.report import build_report
from unpact.results import (  # noqa: F401 (re-exported: the names the grid, scripts and tests use)
    assemble_results,
    general_score,
    model_utility_components_of,
    model_utility_of,
    route_rows,
    summary_rows,
    summary_table,
    utility_degenerate,
    utility_drop,
)
from unpact.rundir import RunDir, RunLock, write_json_atomic
from unpact.stages import GROUPS, StudyData, load_study_data, seed_everything, stage_budgets, stage_seed  # noqa: F401

_not_applicable = not_applicable  # the name tests import


def validate(cfg: RunConfig) -> StudyData:
    """Check every input before anything is written (see :mod:`unpact.validation`): option
    types and ranges, names against their registries (aliases such as ``ig`` become their
    canonical names in ``cfg``), the device, the output path, the models, the audited checkpoints
    against the original (their lineage is kept in the returned data) and the benchmark splits."""
    validation.check_types(cfg)
    validation.check_ranges(cfg)
    validation.check_names(cfg)
    validation.check_inputs(cfg)
    lineage = validation.check_checkpoints(cfg)
    data = load_study_data(cfg)
    data.lineage = lineage
    return data


class Study:
    """One run of the main job over a run directory: shared inputs (loaded lazily) and named stages."""

    def __init__(
        self,
        cfg: RunConfig,
        progress: ProgressFactory = null_progress,
        on_stage: Callable[[str, bool], None] | None = None,
    ):
        self.cfg = cfg
        self.progress = progress
        self.on_stage = on_stage or (lambda name, computed: None)
        self.run_dir = RunDir(cfg.out)
        self.budgets = stage_budgets(cfg.max_batch_tokens)
        self._original = None
        self._fmt = None
        self._data: StudyData | None = None
        self._results: dict[str, Any] = {}

    def stage(self, name: str, compute: Callable[[], Any], require: Callable[[], bool] | None = None) -> Any:
        """The result of stage ``name``: from memory, from its file, or computed (seeded) and written.

        ``require``: what must exist beside the file for it to count (the unlearned model's checkpoint).
        """
        if name in self._results:
            return self._results[name]
        if require is not None and self.run_dir.has(name) and not require():
            self.run_dir.stage_file(name).unlink()

        def seeded():
            seed_everything(stage_seed(self.cfg.seed, name))
            return compute()

        result, computed = self.run_dir.stage(name, seeded)
        self._results[name] = result
        self.on_stage(name, computed)
        return result

    def finished(self) -> Mapping[str, Any]:
        """The stages finished in this session (computed or read back), name -> result, in the
        order they finished (read-only)."""
        return MappingProxyType(self._results)

    # ----------------------------------------------------------- shared inputs
    @property
    def data(self) -> StudyData:
        if self._data is None:
            self._data = load_study_data(self.cfg)
        return self._data

    def original(self):
        """The original model, loaded once."""
        if self._original is None:
            self._original = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
        return self._original

    @property
    def fmt(self):
        """The run's :class:`~unpact.data.PromptFormat` (``chat``: built from the original's tokenizer)."""
        if self._fmt is None:
            tok = self.original().tokenizer if self.cfg.prompt_format == "chat" else None
            self._fmt = resolve_format(self.cfg.prompt_format, tok, self.cfg.system_prompt, self.cfg.chat_template_args)
        return self._fmt

    def model_dir(self, name: str) -> str:
        """Where measured model ``name`` is: a method's checkpoint in the run directory, or the
        audited checkpoint's spec (a directory, hub id or embedded:<name>)."""
        spec = self.cfg.checkpoints.get(name)
        return str(self.run_dir.model_dir(name)) if spec is None else spec

    def unlearned(self, name: str):
        """Measured model ``name`` loaded from :meth:`model_dir`."""
        return load_model(self.model_dir(name), device=self.cfg.device, dtype=self.cfg.dtype)

    # ------------------------------------------------------------ study stages
    def reference_ratios(self) -> list[float] | None:
        if not self.cfg.reference_model:
            return None
        # on the whole forget split (TOFU's forget quality), hence a new stage name
        return self.stage("reference/truth_ratios_forget_split", lambda: stages.reference_ratios(self))["truth_ratios"]

    def reference_mia(self) -> dict[str, Any] | None:
        """The reference model's MIA AUCs (privleak's reference); None without a reference model or holdout split."""
        if not self.cfg.reference_model or not self.cfg.holdout_split:
            return None
        return self.stage("reference/mia_forget_holdout", lambda: stages.reference_mia(self)) or None

    def original_evaluation(self) -> dict[str, Any]:
        return self.stage(
            "original/evaluate",
            lambda: stages.evaluation(self, self.original(), self.reference_ratios(), self.reference_mia()),
        )

    def original_attribution(self) -> dict[str, Any]:
        return self.stage("original/attribute", lambda: stages.attribution(self, self.original()))

    def attack_controls(self) -> dict[str, Any]:
        return self.stage("controls/attacks", lambda: stages.attack_controls(self))

    def presence_controls(self) -> dict[str, Any]:
        """The probes on the original and both controls, and their sensitivity/specificity (once per study)."""
        return self.stage("controls/presence", lambda: stages.presence_controls(self))

    def model_info(self) -> dict[str, Any]:
        return self.stage("original/model_info", lambda: model_info(self.original()))

    def unlearned_stage(self, method: str) -> dict[str, Any]:
        """Stage ``<method>/unlearn``: unlearn a fresh copy of the original with ``method`` and save
        the model into the run directory (a stage file without its model counts as missing)."""

        def compute() -> dict[str, Any]:
            res = stages.unlearning(self, method)
            self.run_dir.save_model_atomic(method, lambda d: save_model(res.model, d))
            return stages.unlearning_summary(method, res)

        return self.stage(f"{method}/unlearn", compute, require=lambda: self.run_dir.has_model(method))

    def subject_stages(self, subject: str) -> dict[str, Any]:
        """The stages of one measured model: a method is unlearned first (into the run directory),
        an audited checkpoint is taken as given; then every stage of :data:`unpact.stages.STAGES`
        that applies, in order, on it (the ``unlearning_only`` ones for methods only), each given
        the model and the results before it as a :class:`~unpact.stages.Subject`."""
        is_method = subject not in self.cfg.checkpoints
        done: dict[str, Any] = {}
        if is_method:
            done["unlearn"] = self.unlearned_stage(subject)
        loaded: list = []

        def model():
            if not loaded:
                loaded.append(self.unlearned(subject))
            return loaded[0]

        measured = stages.Subject(subject, model, MappingProxyType(done), self.stage)
        for stage in stages.subject_stages(self.cfg, is_method):
            result = self.stage(f"{subject}/{stage.name}", lambda stage=stage: stage.run(self, measured))
            done[stage.key] = stage.complete(self, measured, result)
        loaded.clear()
        return done

    def run(self) -> dict[str, Any]:
        """Run (or resume) the study's shared stages, each subject's stages and the analyses; write
        ``results.json`` and the report; return the results dict."""
        cfg = self.cfg
        self.run_dir.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.clean_temporaries()
        write_json_atomic(self.run_dir.root / "config.json", cfg.to_dict())
        subjects = cfg.subjects()
        with self.progress(total=3 + len(subjects), desc="study") as bar:
            self.reference_ratios()  # first, so fresh and resumed runs list the stages in one order
            self.reference_mia()
            orig_eval = self.original_evaluation()
            orig_attr = self.original_attribution()
            if cfg.attacks.names:
                self.attack_controls()  # here, so fresh and resumed runs list the stages in one order
            presence = self.presence_controls() if cfg.presence.probes else None
            bar.update()
            methods = {}
            for m in subjects:
                methods[m] = self.subject_stages(m)
                bar.update()
            pre = forget_precondition(orig_eval, cfg.min_forget_accuracy, cfg.emphasis.threshold)
            analyses = self.stage("analyses", lambda: run_analyses(methods, pre, presence))
            bar.update()
            results = assemble_results(cfg, self.model_info(), orig_eval, orig_attr, methods, analyses).to_dict()
            write_json_atomic(self.run_dir.root / "results.json", results)
            build_report(self.run_dir.root)
            bar.update()
        return results


def check_resumable(cfg: RunConfig) -> None:
    """Raise a :class:`ConfigError` when ``cfg.out`` holds a run with other settings (the device
    aside). A setting its ``config.json`` lacks, at any depth, counts as its default: a setting is
    only ever added with a default that does what the code did before it existed (``float32``, the
    default trajectory, no audited checkpoints, ``presence.negative_items`` unset)."""
    cfg_file = Path(cfg.out) / "config.json"
    if not cfg_file.is_file():
        return
    old = _with_defaults(json.loads(cfg_file.read_text()), json.loads(json.dumps(RunConfig().to_dict())))
    new = json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in set(old) | set(new) if k not in ("device",) and old.get(k) != new.get(k))
    if diff:
        raise ConfigError(
            f"run directory {cfg.out!r} holds a run with different settings ({', '.join(diff)}); "
            "give a new --out, or the same settings to resume it"
        )


def _with_defaults(old: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``old`` with every key it lacks taken from ``defaults``, recursively into nested settings."""
    out = dict(old)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict) and k not in ("method_config", "checkpoints"):
            out[k] = _with_defaults(out[k], v)
    return out


def run_study(
    cfg: RunConfig,
    progress: ProgressFactory = null_progress,
    on_stage: Callable[[str, bool], None] | None = None,
    on_start: Callable[[], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole study described by ``cfg``; return the results dict.

    Every input is validated before the run directory is created, so bad input
    leaves nothing behind; ``on_warning`` gets each warning of the checks (an audited checkpoint
    identical to the original: the run goes on, the warning is in results.json too). An existing run directory with a different config is an
    error (use a new ``out``), so a resumed run never mixes two studies.
    """
    data = validate(cfg)
    if on_warning is not None:
        for lineage in data.lineage.values():
            for warning in lineage.get("warnings", []):
                on_warning(warning)
    check_resumable(cfg)
    existed = Path(cfg.out).exists()
    lock = RunLock(cfg.out)
    try:
        lock.acquire()  # a second run on the same directory stops here, naming the holder
    except OSError as exc:
        if not existed:
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise ConfigError(f"cannot lock the run directory {cfg.out!r}: {exc}") from None
    try:
        if on_start is not None:  # every input checked, the directory locked: the run starts
            on_start()
        study = Study(cfg, progress=progress, on_stage=on_stage)
        study._data = data
        return study.run()
    finally:
        lock.release()
