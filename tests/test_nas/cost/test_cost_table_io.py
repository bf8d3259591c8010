"""Latency tables from a user's device: CSV template, import, and clear errors."""

import csv

import numpy as np
import pytest

from nas.cost import CostModel, ProfileError
from nas.cost.table_io import import_table, write_template
from search_spaces import create_space

SPACE = create_space("tiny", num_classes=3, in_channels=1)


def _filled(tmp_path, every=1, mutate=None):
    rows = list(csv.DictReader(open(write_template(SPACE, tmp_path / "t.csv"))))
    for i, r in enumerate(rows):
        if not r["latency_ms"] and i % every == 0:
            r["latency_ms"] = f"{0.05 + 0.01 * i:.3f}"
    if mutate:
        mutate(rows)
    out = tmp_path / "filled.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out, rows


def test_template_lists_every_op_and_import_predicts_from_it(tmp_path):
    path, rows = _filled(tmp_path)
    table = SPACE.cost_table()
    assert {r["slot"] for r in rows} == set(table.slot_names)
    model = CostModel(SPACE, import_table(SPACE, path, "board"))
    slots = {n: i for i, n in enumerate(table.slot_names)}
    lut = np.zeros(table.features.shape[:2])
    for r in rows:
        lut[slots[r["slot"]], int(r["op"])] = float(r["latency_ms"])
    arch = SPACE.largest()
    ops = SPACE.lower(SPACE.encode_batch([arch]))[0]
    assert model.predict([arch])[0] == pytest.approx(lut[np.arange(len(ops)), ops].sum())


def test_partial_table_is_filled_by_the_fitted_model(tmp_path):
    path, _ = _filled(tmp_path, every=2)
    model = CostModel(SPACE, import_table(SPACE, path, "board"))
    assert np.all(model.latency_table()[SPACE.cost_table().features.any(axis=2)] > 0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[1].update(slot="s9.b9"), "unknown slot 's9.b9'"),
        (lambda rows: rows[1].update(latency_ms="fast"), "latency_ms must be a number"),
        (lambda rows: rows[1].update(latency_ms="-1"), "must be finite and >= 0"),
        (lambda rows: rows[1].update(op="99"), "op 99 out of range"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, mutate, message):
    path, _ = _filled(tmp_path, mutate=mutate)
    with pytest.raises(ProfileError, match=message) as err:
        import_table(SPACE, path, "board")
    assert "line 3" in str(err.value)


def test_missing_column_is_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("slot,op\nfixed,0\n")
    with pytest.raises(ProfileError, match=r"missing column\(s\) \['latency_ms'\]"):
        import_table(SPACE, bad, "board")
