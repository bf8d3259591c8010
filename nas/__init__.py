"""NAS engine: supernet training, search controllers, cost model, export, tracking, CLI."""

from __future__ import annotations

from typing import Any

__all__ = ["load_subnet"]


def __getattr__(name: str) -> Any:
    # lazy: `import nas.<module>` stays free of torch/search-space imports it does not need
    if name == "load_subnet":
        from nas.export.formats import load_subnet

        return load_subnet
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
