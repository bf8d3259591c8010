"""`nas latency fit`: an op table fitted from whole-network latencies, and `nas latency predict --archs`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nas.cli import main
from nas.cost import CostModel, DeviceProfile
from nas.cost.calibrate import distinct_samples
from nas.cost.fit import fit_op_table, fitted_profile
from nas.cost.store import profile_for
from nas.run.context import build_space, resolve_config

SPACE = build_space(
    resolve_config(None, None, ["space.name=tiny", "data.resolution=16"])
)  # as TINY builds it
TINY = ["--space=tiny", "--data.resolution=16", "--quiet"]


def _truth(seed: int = 0) -> tuple[np.ndarray, float]:
    """A device we choose: every op that costs something gets its own latency, 0.05 to 0.5 ms."""
    feats = SPACE.cost_table().features
    rng = np.random.default_rng(seed)
    return np.where(feats.any(axis=2), rng.uniform(0.05, 0.5, feats.shape[:2]), 0.0), 0.3


def _measured(n: int, noise: float, seed: int = 1):
    table, intercept = _truth()
    archs = distinct_samples(SPACE, n, seed)
    ops = SPACE.lower(SPACE.encode_batch(archs))
    y = table[np.arange(table.shape[0]), ops].sum(axis=1) + intercept
    return archs, y * np.random.default_rng(seed).normal(1.0, noise, len(y))


def _write_csv(path, archs, y, rows=None):
    rows = (
        rows
        if rows is not None
        else [{"arch": a.to_json(), "latency_ms": f"{v:.6f}"} for a, v in zip(archs, y)]
    )
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_fit_recovers_a_known_op_table_from_noisy_whole_network_latencies():
    """2% noise on 150 networks: every op's latency relative to the other ops of its slot, and the absolute
    latency of every op of a slot a network can skip, come back within 0.03 ms (ops cost 0.05-0.5 ms)."""
    truth, _ = _truth()
    archs, y = _measured(150, 0.02)
    fit, diag = fit_op_table(SPACE, archs, y)
    feats = SPACE.cost_table().features
    depths = SPACE.cfg.depths
    for s, name in enumerate(SPACE.cost_table().slot_names[1:], start=1):
        ops = np.flatnonzero(feats[s].any(axis=1))
        # within a slot, differences between ops are identified by the data alone
        assert np.abs(np.diff(fit.table[s, ops]) - np.diff(truth[s, ops])).max() < 0.03, name
        block = int(name.split(".b")[1])
        if block >= min(depths):  # a block some networks skip: its ops' own latencies are identified too
            assert np.abs(fit.table[s, ops] - truth[s, ops]).max() < 0.03, name
    assert diag["ops_covered"] == diag["ops_total"] == int(feats.any(axis=2).sum())
    assert diag["mape"] < 0.03 and diag["kendall_tau"] > 0.85 and diag["within_10pct"] > 0.95
    # the fitted table is what the analytical prior could not say on its own
    assert diag["mape"] < diag["prior_only"]["mape"]


def test_ops_no_network_uses_keep_the_prior():
    """Networks that never use kernel 5 in the last block: those ops stay at the prior's latency."""
    archs, y = _measured(120, 0.0)
    keep = [i for i, a in enumerate(archs) if a["s1.depth"] == 1 or a["s1.b1.kernel"] == 3]
    fit, diag = fit_op_table(SPACE, [archs[i] for i in keep], y[keep], cross_validate=False)
    slot = SPACE.cost_table().slot_names.index("s1.b1")
    k5 = [1 + 1 * len(SPACE.cfg.expands) + e for e in range(len(SPACE.cfg.expands))]
    assert not fit.covered[slot, k5].any() and diag["ops_covered"] == diag["ops_total"] - len(k5)
    np.testing.assert_allclose(fit.table[slot, k5], fit.prior.table[slot, k5])


def test_fitted_profile_predicts_the_fit_and_round_trips(tmp_path):
    archs, y = _measured(60, 0.01)
    fit, _ = fit_op_table(SPACE, archs, y, cross_validate=False)
    profile = fitted_profile(SPACE, fit, "board", {"runtime": "litert"})
    again = DeviceProfile.load(profile.save(tmp_path / "board.json"))
    np.testing.assert_allclose(CostModel(SPACE, again).predict(archs), fit.predict(SPACE, archs), rtol=1e-12)
    assert again.runtime == "litert"


def test_latency_fit_cli_writes_a_profile_for_search_devices_and_constraints(tmp_path, capsys):
    archs, y = _measured(60, 0.02)
    path = _write_csv(tmp_path / "board.csv", archs, y)
    assert main(["latency", "fit", "--csv", str(path), "--device", "myboard", "--json", *TINY]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 60 and out["folds"] == 5 and out["kendall_tau"] > 0.8 and out["mape"] < 0.05
    assert 0 <= out["within_10pct"] <= 1
    # found by name in the cache, as --search.devices finds it
    model = profile_for(SPACE, "myboard")
    assert model.profile.meta["kind"] == "fitted from whole-network latencies"
    big = float(model.predict([SPACE.largest()])[0])
    capsys.readouterr()
    assert (
        main(
            [
                "profile",
                *TINY,
                "--samples=300",
                "--json",
                "--search.devices=myboard",
                f"--search.constraints={{latency_ms:myboard: {0.9 * big:.4f}}}",
            ]
        )
        == 0
    ), capsys.readouterr().err
    report = capsys.readouterr().out
    assert "myboard" in report


@pytest.mark.parametrize(
    "edit, line, message",
    [
        (
            lambda rows: [{"architecture_json": r["arch"], "latency_ms": r["latency_ms"]} for r in rows],
            None,
            "missing column(s) ['arch']",
        ),
        (lambda rows: [{"arch": r["arch"]} for r in rows], None, "missing column(s) ['latency_ms']"),
        (
            lambda rows: rows[2].update(
                arch=rows[2]["arch"]
                .replace('"s0.b0.kernel":3', '"s0.b0.kernel":9')
                .replace('"s0.b0.kernel":5', '"s0.b0.kernel":9')
            ),
            4,
            "s0.b0.kernel=9 is not allowed",
        ),
        (lambda rows: rows[1].update(arch="{not json"), 3, "invalid architecture"),
        (lambda rows: rows[3].update(latency_ms="-1.5"), 5, "latency_ms must be a finite number > 0 ms"),
        (
            lambda rows: rows[0].update(latency_ms="nan"),
            2,
            "latency_ms must be a finite number > 0 ms, got 'nan'",
        ),
        (lambda rows: rows[0].update(latency_ms="fast"), 2, "latency_ms must be a number of milliseconds"),
    ],
    ids=["no arch column", "no latency column", "unknown op", "not json", "negative", "nan", "not a number"],
)
def test_malformed_csv_is_refused_in_one_line_naming_the_row(tmp_path, capsys, edit, line, message):
    archs, y = _measured(12, 0.0)
    rows = [{"arch": a.to_json(), "latency_ms": f"{v:.4f}"} for a, v in zip(archs, y)]
    changed = edit(rows)
    path = _write_csv(tmp_path / "bad.csv", None, None, rows=changed if changed is not None else rows)
    profile = tmp_path / "out.json"
    assert (
        main(["latency", "fit", "--csv", str(path), "--device", "b", "--profile", str(profile), *TINY]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and message in err, err
    if line is not None:
        assert f"{path}, line {line}:" in err
    assert not profile.exists()


def test_predict_archs_writes_one_batched_prediction_per_architecture(tmp_path, capsys):
    archs, y = _measured(25, 0.0)
    fit, _ = fit_op_table(SPACE, archs, y, cross_validate=False)
    prof = fitted_profile(SPACE, fit, "board", {}).save(tmp_path / "board.json")
    expected = CostModel(SPACE, DeviceProfile.load(prof)).predict(archs)
    csv_in = _write_csv(tmp_path / "archs.csv", archs, y)
    jsonl = tmp_path / "archs.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"arch": a.to_dict(), "note": i}) + "\n" for i, a in enumerate(archs))
    )
    for src in (csv_in, jsonl):
        capsys.readouterr()
        args = ["latency", "predict", "--archs", str(src), "--profile", str(prof), *TINY]
        assert main([*args, "--devices", "mobile-big-core"]) == 0
        rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
        assert [r["arch_id"] for r in rows] == [a.id for a in archs]
        np.testing.assert_allclose([float(r["latency_ms"]) for r in rows], expected, rtol=1e-5)
        assert all(float(r["latency_ms_mobile-big-core"]) > 0 for r in rows)
        assert [SPACE.parse_arch(r["arch"]) for r in rows] == archs  # the arch column reads back
    out = tmp_path / "pred.csv"
    assert (
        main(["latency", "predict", "--archs", str(jsonl), "--profile", str(prof), "--out", str(out), *TINY])
        == 0
    )
    assert len(list(csv.DictReader(out.open()))) == len(archs)


def test_predict_archs_names_the_bad_line(tmp_path, capsys):
    jsonl = tmp_path / "archs.jsonl"
    good = SPACE.largest().to_json()
    jsonl.write_text(f"{good}\n\n{good.replace(':2', ':7', 1)}\n")
    assert main(["latency", "predict", "--archs", str(jsonl), "--device", "mobile-big-core", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{jsonl}, line 3: invalid architecture" in err, err
