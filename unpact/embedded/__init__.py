"""The embedded world: small benchmarks and small LMs built by the project and shipped."""

from __future__ import annotations

from pathlib import Path

from unpact.errors import DataError

SHIPPED_DIR = Path(__file__).parent / "shipped"
DATA_DIR = SHIPPED_DIR / "data"


def embedded_benchmark_names() -> list[str]:
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir())


def load_embedded_benchmark(name: str, split: str, data_dir: str | Path | None = None):
    """Load ``embedded:<benchmark>`` split ``split`` from the shipped files.

    ``data_dir`` reads from another build's ``data/`` directory instead
    (``unpact build-embedded --out DIR`` writes ``DIR/data``).
    """
    from unpact.data.loaders import read_records, records_from_rows
    from unpact.data.records import Benchmark

    bench = name.split(":", 1)[-1]
    directory = Path(data_dir or DATA_DIR) / bench
    if not directory.is_dir():
        known = ", ".join(f"embedded:{n}" for n in embedded_benchmark_names()) or "none (run `unpact build-embedded`)"
        raise DataError(f"unknown embedded benchmark {name!r}; known: {known}")
    file = directory / f"{split}.jsonl"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.jsonl")))
        raise DataError(f"unknown split {split!r} of {name!r}; known splits: {known}")
    rows = read_records(file)
    return Benchmark(name=name, split=split, items=records_from_rows(rows, str(file)), source=str(file))
