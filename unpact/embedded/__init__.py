"""The embedded world: small benchmarks and small LMs built by the project and shipped."""

from __future__ import annotations

# the shipped folders and the embedded benchmarks' loader live with the data loaders (one place,
# no import cycle): the embedded world provides files, the loaders read them
from unpact.data.loaders import embedded_benchmark_names, load_embedded_benchmark
from unpact.data.shipped import DATA_DIR, MODELS_DIR, SHIPPED_DIR

__all__ = ["DATA_DIR", "MODELS_DIR", "SHIPPED_DIR", "embedded_benchmark_names", "load_embedded_benchmark"]
