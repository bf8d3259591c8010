"""Tabular evaluation: a network's accuracy (and optionally latency) read from a benchmark table.

A tabular benchmark (NAS-Bench-201 / NATS-Bench) publishes the trained accuracy of every architecture of a
space, so a search can be run, and a controller judged, without training anything: ``nas search
--search.evaluator=table --search.table=nats:cifar10``. A table is a CSV file (gzipped or not) with one row
per architecture: an architecture column (``ArchitectureString`` or ``arch``, in anything the space's
:meth:`~search_spaces.SearchSpace.parse_arch` reads: JSON, or a NATS-Bench cell string) and numeric columns.

Rows are grouped by the network they describe (the canonical architecture's id): strings that compute the
same function are the same network, and its accuracy is the mean of their rows (independent trainings of
one network). A table must cover every network of the space, or the search could propose one it cannot
score. Accuracies above 1 are read as percent (the NATS-Bench files are in percent); the engine's
accuracies are fractions.

Named tables: ``nats:cifar10``, ``nats:cifar100``, ``nats:imagenet16`` are NATS-Bench's 200-epoch test
accuracies shipped in ``search_spaces/data/`` (MIT-licensed data, see the README there).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import Arch, InvalidArchitectureError, SearchSpace
from search_spaces.errors import UserError
from search_spaces.nb201 import NATS_TABLE, NB201Space

NATS_COLUMNS = {
    "nats:cifar10": "CIFAR10TestAccuracy200Epochs",
    "nats:cifar100": "CIFAR100TestAccuracy200Epochs",
    "nats:imagenet16": "ImageNetTestAccuracy200Epochs",
}
"""Named tables -> their accuracy column in the shipped NATS-Bench file (test accuracy after 200 epochs)."""

ARCH_COLUMNS = ("ArchitectureString", "arch")
"""Column names an architecture is read from, in this order of preference."""

ACCURACY_COLUMNS = ("accuracy", "test_accuracy", "val_accuracy")
"""Accuracy columns found without ``search.table_column`` in a table of your own."""


class TableError(UserError, ValueError):
    """A benchmark table that cannot be used (the message names the file, the row or the column)."""


@dataclass(frozen=True)
class BenchmarkTable:
    """One column of a benchmark table, by network: accuracy (a fraction) and optionally latency (ms)."""

    source: str  # as the user named it: nats:cifar10, or the file path
    path: Path
    column: str
    latency_column: str | None
    accuracy: Mapping[str, float]  # canonical architecture id -> mean accuracy of its rows
    latency: Mapping[str, float] | None
    rows: Mapping[str, int]  # arch id -> how many rows of the table describe that network
    archs: Mapping[str, Arch]
    percent: bool  # whether the file holds percentages

    def accuracy_of(self, arch: Arch) -> float:
        return self.accuracy[arch.id]

    def latency_of(self, arch: Arch) -> float | None:
        """The table's latency (ms) of ``arch``, or None when the cost model predicts it."""
        return None if self.latency is None else self.latency[arch.id]

    def best(self) -> tuple[Arch, float]:
        """The table's most accurate network and its accuracy."""
        arch_id = max(self.accuracy, key=lambda k: (self.accuracy[k], k))
        return self.archs[arch_id], self.accuracy[arch_id]

    def rank_of(self, arch: Arch) -> int:
        """1 for the table's most accurate network, ``len(accuracy)`` for its least."""
        acc = self.accuracy[arch.id]
        return 1 + sum(v > acc for v in self.accuracy.values())

    def describe(self) -> str:
        return f"table {self.source} ({self.column})"


def resolve_source(source: str) -> tuple[Path, str | None]:
    """The file a table setting names, and its default accuracy column (named tables have one)."""
    name = source.strip().lower()
    if name in NATS_COLUMNS:
        return NATS_TABLE, NATS_COLUMNS[name]
    if name.startswith("nats:"):
        raise TableError(
            f"search.table={source!r}: no such named table; named tables: {', '.join(NATS_COLUMNS)} (or give"
            " the path of a CSV file)"
        )
    return Path(source).expanduser(), None


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"search.table: {path}: file not found") from None
    except OSError as exc:
        raise TableError(f"search.table: {path}: cannot read file ({exc})") from None
    try:
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TableError(f"search.table: {path}: not a (gzipped) UTF-8 CSV file ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = list(reader)
    if not header or not rows:
        raise TableError(
            f"search.table: {path}: no header and rows (a CSV file with one row per architecture)"
        )
    return header, rows


def _column(header: Sequence[str], wanted: str | None, found: Sequence[str], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in header:
            raise TableError(
                f"{what}={wanted!r}: {path} has no such column; its columns: {', '.join(header)}"
            )
        return wanted
    hit = next((c for c in found if c in header), None)
    if hit is None:
        raise TableError(
            f"{what}: {path} has none of the columns {', '.join(found)}; name the one to use (its columns:"
            f" {', '.join(header)})"
        )
    return hit


def _numbers(rows: list[dict[str, str]], column: str, path: Path, setting: str) -> list[float]:
    out = []
    for i, row in enumerate(rows):
        try:
            v = float(row[column])
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise TableError(
                f"{setting}: row {i + 2} of {path} has {column}={row[column]!r}; every row needs a finite"
                " number >= 0"
            )
        out.append(v)
    return out


def load_table(
    space: SearchSpace, source: str, column: str | None = None, latency_column: str | None = None
) -> BenchmarkTable:
    """Read ``source`` (a named table or a CSV path) for ``space``, checked: every row an architecture of the
    space, numbers where they must be, every network of the space covered."""
    path, default_column = resolve_source(source)
    if default_column is not None and not isinstance(space, NB201Space):
        raise TableError(
            f"search.table={source}: NATS-Bench's table holds NAS-Bench-201 cells, and this run's space is"
            f" {space.name!r}; use --space=nb201"
        )
    header, rows = _read_rows(path)
    arch_column = _column(header, None, ARCH_COLUMNS, "search.table", path)
    column = _column(header, column or default_column, ACCURACY_COLUMNS, "search.table_column", path)
    values = _numbers(rows, column, path, "search.table_column")
    percent = max(values) > 1
    if percent and max(values) > 100:
        raise TableError(
            f"search.table_column={column!r}: {path} holds values up to {max(values):g}, which is neither a"
            " fraction nor a percentage; name an accuracy column"
        )
    latencies = None
    if latency_column is not None:
        _column(header, latency_column, (), "search.table_latency_column", path)
        latencies = _numbers(rows, latency_column, path, "search.table_latency_column")
    sums: dict[str, list[float]] = {}
    archs: dict[str, Arch] = {}
    for i, row in enumerate(rows):
        try:
            arch = space.parse_arch(row[arch_column] or "")
        except InvalidArchitectureError as exc:
            raise TableError(
                f"search.table: row {i + 2} of {path} is not an architecture of space {space.name!r}: {exc}"
            ) from None
        archs[arch.id] = arch
        acc = values[i] / 100.0 if percent else values[i]
        entry = sums.setdefault(arch.id, [0.0, 0.0, 0.0])
        entry[0] += acc
        entry[1] += latencies[i] if latencies is not None else 0.0
        entry[2] += 1
    _check_coverage(space, source, archs)
    return BenchmarkTable(
        source=source,
        path=path,
        column=column,
        latency_column=latency_column,
        accuracy={k: s / n for k, (s, _, n) in sums.items()},
        latency=None if latencies is None else {k: t / n for k, (_, t, n) in sums.items()},
        rows={k: int(n) for k, (_, _, n) in sums.items()},
        archs=archs,
        percent=percent,
    )


ENUMERABLE = 100_000  # a table can only cover a space this small


def _check_coverage(space: SearchSpace, source: str, archs: Mapping[str, Arch]) -> None:
    """Every network of ``space`` must have a row: a search cannot score a network the table lacks."""
    total = space.num_architectures()
    if total > ENUMERABLE:
        raise TableError(
            f"search.table={source}: space {space.name!r} has {total:.3g} networks, too many for a table to"
            " cover; tabular evaluation is for spaces a benchmark tabulates whole (e.g. nb201)"
        )
    if len(archs) < total:
        missing = next(a for a in space.enumerate() if a.id not in archs)
        raise TableError(
            f"search.table={source}: the table covers {len(archs)} of the {total} networks of space"
            f" {space.name!r} (no row for {space.format_arch(missing)}, for one); a search could propose"
            " a network it cannot score"
        )


def found_summary(table: BenchmarkTable, space: SearchSpace, rows: Sequence[Mapping[str, Any]]) -> dict:
    """What a tabular search found: its most accurate feasible trial against the table's optimum."""
    feasible = [r for r in rows if r["feasible"]] or list(rows)
    best_row = max(feasible, key=lambda r: (r["accuracy"], -r["trial"]))
    arch = space.arch(best_row["arch"])
    optimum_arch, optimum = table.best()
    return {
        "table": table.source,
        "column": table.column,
        "trial": int(best_row["trial"]),
        "arch_id": arch.id,
        "arch": space.format_arch(arch),
        "accuracy": float(best_row["accuracy"]),
        "optimum": float(optimum),
        "optimum_arch": space.format_arch(optimum_arch),
        "regret": float(optimum - best_row["accuracy"]),
        "rank": table.rank_of(arch),
        "networks": len(table.accuracy),
    }
