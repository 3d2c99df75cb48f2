"""Build the embedded world: data files, tokenizer and models, reproducibly from a seed.

The shipped files under ``unpact/embedded/shipped/`` are the output of
``build_embedded(SHIPPED_DIR, seed=0)`` (``unpact build-embedded``):

* ``data/<benchmark>/<split>.jsonl``: benchmark rows in the published field names;
* ``models/<arch>/`` and ``models/<arch>-retain/``: HF checkpoints (float16
  weights, tokenizer files), the second trained without the forget10 authors.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> build_embedded("/tmp/world", seed=0, tiny=True)          # doctest: +SKIP
    PosixPath('/tmp/world')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from unpact.embedded.train import ARCHITECTURES, ModelSize, TrainConfig, train_model, train_tokenizer
from unpact.embedded.world import World, WorldConfig, generate_world
from unpact.progress import ProgressFactory, null_progress

#: Vocabulary size of the shipped tokenizer.
VOCAB_SIZE = 2048


def write_data(world: World, out: str | os.PathLike) -> Path:
    """Write ``world``'s benchmark rows to ``out/data/<benchmark>/<split>.jsonl``."""
    data = Path(out) / "data"
    for bench, splits in world.benchmarks.items():
        d = data / bench
        d.mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            with open(d / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return data


def save_checkpoint(model, tokenizer, directory: str | os.PathLike) -> Path:
    """Save ``model`` with float16 weights and ``tokenizer`` as a HF checkpoint directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(str(directory), safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(str(directory))
    return directory


def build_embedded(
    out: str | os.PathLike,
    seed: int = 0,
    tiny: bool = False,
    archs: Sequence[str] = ARCHITECTURES,
    retain: bool = True,
    train_config: TrainConfig | None = None,
    original: bool = True,
    progress: ProgressFactory = null_progress,
    retain_all: bool = False,
) -> Path:
    """Generate the data and train ``archs`` (each also without the forget10 authors) into ``out``.

    ``tiny`` builds a seconds-long toy configuration (for tests); the default is the
    shipped build. ``original=False`` trains only the ``-retain`` twins (with
    ``retain``), so the twins can be trained in another process; each model is
    seeded on its own, so the weights do not depend on the split. ``retain_all`` also trains
    ``-retain-all`` twins: without the forget10 authors, the MUSE forget passages and facts and
    the WMDP hazard domain (every example with a :attr:`~unpact.embedded.world.TrainExample.topic`),
    the negative control of a MUSE- or WMDP-shaped study. Returns ``out``.
    """
    out = Path(out)
    world_cfg = WorldConfig.tiny() if tiny else WorldConfig()
    size = ModelSize.tiny() if tiny else ModelSize()
    tcfg = train_config or (TrainConfig.tiny() if tiny else TrainConfig())
    tcfg.seed = seed
    world = generate_world(world_cfg, seed=seed)
    write_data(world, out)
    tokenizer = train_tokenizer(world.texts(), vocab_size=256 + 64 if tiny else VOCAB_SIZE)
    forget = set(world.forget10_authors)
    variants = [("", world.train)] if original else []
    if retain:
        variants.append(("-retain", [e for e in world.train if e.author not in forget]))
    if retain_all:
        variants.append(("-retain-all", [e for e in world.train if e.author not in forget and e.topic is None]))
    for arch in archs:
        for suffix, examples in variants:
            model = train_model(arch, tokenizer, examples, size, tcfg, progress=progress, desc=f"{arch}{suffix}")
            save_checkpoint(model, tokenizer, out / "models" / f"{arch}{suffix}")
    return out
