"""Where the embedded world's shipped files live: one place for the data and the models folders.

A leaf module (it imports nothing of unpact), so the data loaders, the model loader
and the embedded builder all take the folders from here and none imports another
for them.

Example:
    >>> (SHIPPED_DIR / "data") == DATA_DIR and (SHIPPED_DIR / "models") == MODELS_DIR
    True
"""

from __future__ import annotations

from pathlib import Path

#: the shipped files of the embedded world (``unpact build-embedded`` writes here by default)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "embedded" / "shipped"
#: the embedded benchmarks, one folder per benchmark with ``<split>.jsonl`` files
DATA_DIR = SHIPPED_DIR / "data"
#: the embedded models, one HF checkpoint folder per name
MODELS_DIR = SHIPPED_DIR / "models"
#: data files shipped with the library (TOFU's refusal strings, hand-written paraphrases)
RESOURCES_DIR = Path(__file__).resolve().parent / "resources"
