"""Tabular evaluation: benchmark tables read by network, the shipped NATS-Bench tables, `nas search
--search.evaluator=table` without a trained supernet, and every way a table or its settings can be wrong."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.tables import TableError, load_table
from search_spaces import create_space
from search_spaces.nb201 import NATS_TABLE

BASE = ["--trackers=jsonl", "--quiet", "--search.devices=[laptop-cpu]"]  # spec-derived latency: no timing


def _pool_space():
    return create_space("resnet20_pool", num_classes=10, in_channels=1, resolution=32, width_mult=0.5)


def _write_table(path: Path, rows: list[dict], gz: bool = False) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if gz:
        path.write_bytes(gzip.compress(buf.getvalue().encode()))
    else:
        path.write_text(buf.getvalue())
    return path


def _pool_rows(seed: int = 0) -> list[dict]:
    """Every resnet20_pool network once (arch as JSON), a made-up accuracy (%) and latency; the first network
    twice (its two rows are averaged)."""
    space = _pool_space()
    rng = np.random.default_rng(seed)
    archs = space.enumerate()
    rows = [
        {"arch": a.to_json(), "accuracy": f"{80 + 15 * rng.random():.3f}", "lat": f"{1 + i / 10:.2f}"}
        for i, a in enumerate(archs)
    ]
    rows.append({"arch": archs[0].to_json(), "accuracy": "50.0", "lat": "3.0"})
    return rows


# --- reading tables ---------------------------------------------------------------------------------------
def test_a_table_is_read_by_network_with_duplicates_averaged(tmp_path):
    rows = _pool_rows()
    space = _pool_space()
    table = load_table(space, str(_write_table(tmp_path / "t.csv.gz", rows, gz=True)), latency_column="lat")
    assert table.percent and len(table.accuracy) == 36
    first = space.arch(json.loads(rows[0]["arch"]))
    assert table.rows[first.id] == 2
    assert table.accuracy_of(first) == pytest.approx((float(rows[0]["accuracy"]) + 50.0) / 200)
    assert table.latency_of(first) == pytest.approx((float(rows[0]["lat"]) + 3.0) / 2)
    best, acc = table.best()
    assert acc == max(table.accuracy.values()) and table.rank_of(best) == 1


@pytest.mark.parametrize(
    "name, column, optimum",
    [
        ("nats:cifar10", "CIFAR10TestAccuracy200Epochs", 94.37),
        ("nats:cifar100", "CIFAR100TestAccuracy200Epochs", 73.51),
        ("nats:imagenet16", "ImageNetTestAccuracy200Epochs", 47.31),
    ],
)
def test_the_shipped_nats_tables_have_the_published_optima(name, column, optimum):
    space = create_space("nb201")
    table = load_table(space, name)
    assert table.column == column and len(table.accuracy) == 6466 and sum(table.rows.values()) == 15625
    best, acc = table.best()
    assert round(100 * acc, 2) == optimum
    with gzip.open(NATS_TABLE, "rt", encoding="utf-8", newline="") as fh:
        by_unique: dict[str, list[float]] = {}
        for row in csv.DictReader(fh):
            by_unique.setdefault(row["UniqueString"], []).append(float(row[column]) / 100)
            if space.parse_arch(row["ArchitectureString"]) == best:
                assert table.rows[best.id] == 1 and float(row[column]) / 100 == acc
    # a network is the mean of its rows: the same figures grouped by NATS-Bench's own UniqueString
    assert sorted(table.accuracy.values()) == pytest.approx(sorted(np.mean(v) for v in by_unique.values()))


@pytest.mark.parametrize(
    "edit, source, kwargs, message",
    [
        ("none", "missing.csv", {}, "missing.csv: file not found"),
        ("no arch column", None, {}, "has none of the columns ArchitectureString, arch"),
        ("no such column", None, {"column": "top1"}, "search.table_column='top1'.*has no such column"),
        ("bad number", None, {}, "row 3 of .* has accuracy='n/a'"),
        ("bad arch", None, {}, "row 2 of .* is not an architecture of space 'resnet20_pool'"),
        ("missing network", None, {}, "covers 35 of the 36 networks"),
        ("not a fraction", None, {}, "neither a fraction nor a percentage"),
        ("none", "nats:cifar11", {}, "no such named table; named tables: nats:cifar10"),
        ("none", "nats:cifar10", {}, "NAS-Bench-201 cells.*use --space=nb201"),
    ],
)
def test_a_bad_table_is_one_error_naming_what_is_wrong(tmp_path, edit, source, kwargs, message):
    rows = _pool_rows()
    if edit == "no arch column":
        rows = [{"architecture": r["arch"], "accuracy": r["accuracy"]} for r in rows]
    elif edit == "bad number":
        rows[1]["accuracy"] = "n/a"
    elif edit == "bad arch":
        rows[0]["arch"] = '{"downsample_at": "9,9"}'
    elif edit == "missing network":
        rows = rows[1:-1]
    elif edit == "not a fraction":
        rows[0]["accuracy"] = "1000"
    path = source if source is not None else str(_write_table(tmp_path / "t.csv", rows))
    with pytest.raises(TableError, match=message):
        load_table(_pool_space(), path, **kwargs)


# --- nas search --search.evaluator=table -----------------------------------------------------------------
def _run(argv: list[str]) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_a_tabular_search_needs_no_supernet_and_reports_the_tables_accuracy(tmp_path):
    rows = _pool_rows()
    path = _write_table(tmp_path / "t.csv", rows)
    run_dir = tmp_path / "run"
    summary = _run(
        [
            "search", "--run-dir", str(run_dir), "--space=resnet20_pool", "--width-mult=0.5",
            "--search.evaluator=table", f"--search.table={path}", "--search.table_latency_column=lat",
            "--controller=evolution", "--trials=12", *BASE, "--json",
        ]
    )  # fmt: skip
    assert not (run_dir / "checkpoints").exists()  # nothing was trained
    table = load_table(_pool_space(), str(path), latency_column="lat")
    found = summary["search"]["table"]
    assert summary["search"]["trials"] == 12
    assert found["optimum"] == pytest.approx(table.best()[1])
    assert found["regret"] == pytest.approx(found["optimum"] - found["accuracy"])
    with (run_dir / "search" / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    space = _pool_space()
    by_id = {a.id: a for a in space.enumerate()}
    for row in history:  # every trial's accuracy and latency are the table's
        arch = by_id[row["arch_id"]]
        assert float(row["val_accuracy"]) == pytest.approx(table.accuracy_of(arch), abs=1e-6)
        assert float(row["latency_pred_ms_laptop-cpu"]) == pytest.approx(table.latency_of(arch), abs=1e-6)
    assert found["accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in history), abs=1e-6)


def test_nas_search_on_nb201_with_a_nats_table(tmp_path):
    summary = _run(
        [
            "search", "--run-dir", str(tmp_path / "run"), "--space=nb201", "--search.evaluator=table",
            "--search.table=nats:cifar100", "--controller=evolution", "--trials=30", *BASE, "--json",
        ]
    )  # fmt: skip
    found = summary["search"]["table"]
    space = create_space("nb201")
    table = load_table(space, "nats:cifar100")
    arch = space.parse_arch(found["arch"])
    assert found["accuracy"] == pytest.approx(table.accuracy_of(arch))
    assert found["rank"] == table.rank_of(arch) and found["networks"] == 6466
    assert round(100 * found["optimum"], 2) == 73.51


@pytest.mark.parametrize(
    "settings, message",
    [
        (["--search.evaluator=table"], "search.evaluator=table needs search.table"),
        (["--search.table=nats:cifar10"], "search.table is read only by the table evaluator"),
        (
            ["--search.evaluator=table", "--search.table=nats:cifar10", "--controller=darts"],
            "search.controller='darts' learns on the supernet",
        ),
        (["--search.evaluator=table", "--search.table=nats:cifar10", "--space=tiny"], "use --space=nb201"),
        (
            ["--search.evaluator=table", "--search.table=nats:cifar10", "--search.table_column=top1"],
            "search.table_column='top1'",
        ),
        (["--search.evaluator=table", "--search.table=nats:cifar10", "--latency-budget-ms=1e-6"], "below"),
    ],
)
def test_bad_tabular_settings_are_refused_before_anything_is_written(tmp_path, capsys, settings, message):
    run_dir = tmp_path / "new" / "run"
    rc = main(["search", "--run-dir", str(run_dir), "--space=nb201", *BASE, *settings])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("nas: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "new").exists()


def test_a_run_directory_keeps_its_evaluator(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["--space=nb201", "--search.evaluator=table", "--search.table=nats:cifar10", "--trials=3", *BASE]
    assert main(["search", "--run-dir", str(run_dir), *argv]) == 0
    capsys.readouterr()
    rc = main(["search", "--run-dir", str(run_dir), "--search.table=nats:cifar100", *BASE])
    err = capsys.readouterr().err
    assert rc == 2 and "other settings for search.table" in err, err
