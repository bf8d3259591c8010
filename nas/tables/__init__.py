"""Benchmark tables: search and judge controllers on a tabulated space (NAS-Bench-201) without training."""

from nas.tables.table import (
    NATS_COLUMNS,
    BenchmarkTable,
    TableError,
    found_summary,
    load_table,
    resolve_source,
)

__all__ = ["NATS_COLUMNS", "BenchmarkTable", "TableError", "found_summary", "load_table", "resolve_source"]
