"""Shared fixtures: tiny real HF checkpoints built in a temporary directory."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from unpact.testing import TINY_ARCHITECTURES, make_tiny_checkpoint  # noqa: E402

#: Real TOFU files (MIT licence, see LICENSE there), copied from shared/data/tofu.
TOFU_DIR = os.path.join(os.path.dirname(__file__), "data", "tofu")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    """One tiny random checkpoint per architecture, built once per session."""
    root = tmp_path_factory.mktemp("tiny")
    return {a: str(make_tiny_checkpoint(a, root / a)) for a in TINY_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dirs):
    from unpact import load_model

    return load_model(tiny_dirs["gpt2"])


@pytest.fixture(scope="session")
def tofu_dir() -> str:
    return os.path.abspath(TOFU_DIR)
