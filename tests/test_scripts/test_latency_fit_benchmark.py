"""bench_latency_fit on synthetic timings: it resumes, adds a session only when asked, refits every session
from its timings, and the fit learns what every running op costs (skips included) from whole networks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_latency_fit as bench  # noqa: E402


def _args(**kw) -> argparse.Namespace:
    base = dict(
        space="nb201", networks=240, test=40, fit_sizes="50,200", splits=2, threads=1, batch=1, seed=0,
        repeats=2, chunk=120, no_calibration=True, new_session=False,
    )  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def synthetic_timer(monkeypatch):
    """Whole-network 'timings' from a known per-edge op table (a skip costs its addition: 0.03 ms), with
    0.3% noise per call; counts the networks timed."""
    rng = np.random.default_rng(7)
    cost = {0: 0.0, 1: 0.03, 2: 0.08, 3: 0.21, 4: 0.05}  # none, skip, 1x1, 3x3, pool (ms, stage 0)
    timed: list[int] = []

    def fake(self, archs, threads, batch, repeats):
        op_ids = self.space.lower(self.space.encode_batch(archs))
        stage = (np.arange(op_ids.shape[1]) - 1) // 6  # slot 0 fixed, then 6 edges per cell, one cell a stage
        per = np.vectorize(cost.get)(op_ids) * np.where(stage >= 0, 0.5**stage, 0.0)
        timed.append(len(archs))
        return (0.4 + per.sum(axis=1)) * (1 + 0.003 * rng.standard_normal(len(archs)))

    monkeypatch.setattr(bench._Timer, "__call__", fake)
    return timed


def test_sessions_resume_refit_and_report_their_spread(tmp_path, synthetic_timer):
    path = tmp_path / "data" / "latency_fit.json"
    raw = bench.measure(_args(), None, path)
    assert len(raw["timings"]) == 1 and synthetic_timer == [120, 120, 40]  # 2 chunks, then held-out
    fits = raw["timings"][0]["fits"]
    at200 = [f["fit"] for f in fits if f["n"] == 200]
    assert at200 and all(f["kendall_tau"] >= 0.95 and f["within_10pct"] >= 0.9 for f in at200)
    bench.measure(_args(), json.loads(path.read_text()), path)  # resumed: the session is complete
    assert len(synthetic_timer) == 3
    raw = bench.measure(_args(new_session=True), json.loads(path.read_text()), path)
    assert len(raw["timings"]) == 2 and len(synthetic_timer) == 6
    (md,) = bench.render(raw, tmp_path)
    text = md.read_text()
    assert "in 2 session(s)" in text and "the target is met in 2 of 2 session(s)" in text
    assert text.count("| met |") == 2


def test_a_data_file_of_other_settings_is_refused(tmp_path, synthetic_timer):
    path = tmp_path / "data" / "latency_fit.json"
    bench.measure(_args(), None, path)
    with pytest.raises(SystemExit, match="these settings differ"):
        bench.measure(_args(repeats=3), json.loads(path.read_text()), path)
