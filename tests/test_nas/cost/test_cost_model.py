"""Cost model: kernel vs reference, profile I/O and validation, calibration, caching."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nas.cost.store as cost_store_mod
from nas.cost import (
    FORMAT_VERSION,
    CostModel,
    DeviceProfile,
    ProfileError,
    calibrate,
    default_profile_path,
    load_or_calibrate,
    measure_latency_ms,
    predict_reference,
    predict_table_numba,
    space_signature,
)
from nas.cost.kernel import PARALLEL_MIN_BATCH
from search_spaces import create_space


@pytest.fixture(scope="module")
def space():
    return create_space("tiny", num_classes=4, in_channels=1)


def _profile(space, coef=(1e-6, 2e-6, 1e-7, 0.01), intercept=0.25, **overrides) -> DeviceProfile:
    fields = dict(
        name="test-cpu",
        feature_names=space.cost_table().feature_names,
        coef=coef,
        intercept=intercept,
        space_signature=space_signature(space),
        meta={"threads": 1},
    )
    fields.update(overrides)
    return DeviceProfile(**fields)


# --- kernel ------------------------------------------------------------------------------------
# The engine's kernel gathers from the [S, O] latency table a CostModel folds its profile into;
# the reference computes the linear model one architecture, slot and feature at a time.
@pytest.mark.parametrize(
    "batch", [0, 1, 1000, PARALLEL_MIN_BATCH + 7]
)  # the last one takes the parallel kernel
def test_kernel_matches_reference(batch):
    rng = np.random.default_rng(batch)
    n_slots, n_ops, n_feats = 21, 10, 4
    features = rng.random((n_slots, n_ops, n_feats)) * 10.0 ** rng.integers(0, 8, size=n_feats)
    coef, intercept = rng.random(n_feats) * 1e-6, float(rng.random())
    op_ids = rng.integers(0, n_ops, size=(batch, n_slots)).astype(np.int32)
    got = predict_table_numba(op_ids, features @ coef, intercept)
    want = predict_reference(op_ids, features, coef, intercept)
    assert got.shape == (batch,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_kernel_accepts_other_int_dtypes_and_layouts():
    rng = np.random.default_rng(1)
    features, coef = rng.random((5, 3, 2)), rng.random(2)
    op_ids = rng.integers(0, 3, size=(5, 8)).T  # int64, non-contiguous
    np.testing.assert_allclose(
        predict_table_numba(op_ids, features @ coef, 0.0),
        predict_reference(op_ids, features, coef, 0.0),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "bad,dtype",
    [
        (-1, np.int32),
        (3, np.int32),
        (2**31 - 1, np.int32),
        (-1, np.int64),
        (2**32 + 1, np.int64),
        (3, np.uint8),
    ],
)
def test_kernel_rejects_out_of_range_op_ids(bad, dtype):
    op_ids = np.zeros((4, 5), dtype=dtype)
    op_ids[2, 3] = bad
    with pytest.raises(
        ValueError, match=rf"op id {bad} at architecture 2, slot 3 is out of range.*valid ids 0\.\.2"
    ):
        predict_table_numba(op_ids, np.ones((5, 3)), 0.0)
    with pytest.raises(ValueError, match="out of range"):
        predict_reference(op_ids, np.ones((5, 3, 2)), np.ones(2), 0.0)


def test_kernel_rejects_bad_shapes_and_dtypes():
    with pytest.raises(TypeError, match="op_ids must be integers"):
        predict_table_numba(np.zeros((2, 5)), np.ones((5, 3)), 0.0)
    with pytest.raises(ValueError, match=r"op_ids must have shape \[B, 5\]"):
        predict_table_numba(np.zeros((2, 4), dtype=np.int32), np.ones((5, 3)), 0.0)
    with pytest.raises(ValueError, match=r"latency table must be a finite \[S, O\] array"):
        predict_table_numba(np.zeros((2, 5), dtype=np.int32), np.ones((5, 3, 2)), 0.0)
    with pytest.raises(ValueError, match=r"latency table must be a finite \[S, O\] array"):
        predict_table_numba(np.zeros((2, 5), dtype=np.int32), np.full((5, 3), np.nan), 0.0)


# --- cost model --------------------------------------------------------------------------------
def test_predict_equals_manual_sum(space):
    profile = _profile(space)
    model = CostModel(space, profile)
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(5)]
    feats = space.cost_table().features
    coef = np.array(profile.coef)
    for arch, got in zip(archs, model.predict(archs)):
        ops = space.lower(space.encode(arch)[None])[0]
        manual = profile.intercept + sum(float(coef @ feats[s, op]) for s, op in enumerate(ops))
        assert got == pytest.approx(manual, rel=1e-12)
    codes = space.encode_batch(archs)
    np.testing.assert_array_equal(model.predict_codes(codes), model.predict(archs))
    table = model.latency_table()
    assert table.shape == feats.shape[:2]
    np.testing.assert_allclose(
        model.predict(archs),
        profile.intercept + table[np.arange(len(table)), space.lower(codes)].sum(1),
        rtol=1e-12,
    )
    assert model.predict([]).shape == (0,)
    p_small, p_large = model.predict([space.smallest(), space.largest()])
    assert p_large > p_small


def test_signature_depends_on_space_configuration(space):
    assert space_signature(space) == space_signature(create_space("tiny", num_classes=4, in_channels=1))
    assert space_signature(space).startswith("tiny-1x16x16-")
    for other in (
        create_space("tiny", num_classes=4, in_channels=1, resolution=32),
        create_space("tiny", num_classes=4, in_channels=1, width_mult=2.0),
    ):
        assert space_signature(other) != space_signature(space)
        with pytest.raises(
            ProfileError, match=r"calibrated for space .*re-run `nas latency calibrate` for this space"
        ):
            CostModel(other, _profile(space))


def test_feature_names_must_match_space(space):
    profile = _profile(space, feature_names=("a", "b", "c", "d"))
    with pytest.raises(
        ProfileError, match=r"has features \['a', 'b', 'c', 'd'\] but the space's cost table has"
    ):
        CostModel(space, profile)


# --- profile I/O -------------------------------------------------------------------------------
def test_profile_json_round_trip(space, tmp_path):
    profile = _profile(
        space, coef=(1 / 3, 0.0, 1e-9, 2.5), meta={"threads": 1, "fit": {"kendall_tau": float("nan")}}
    )
    path = profile.save(tmp_path / "sub" / "p.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == FORMAT_VERSION and data["meta"]["fit"]["kendall_tau"] is None
    loaded = DeviceProfile.load(path)
    assert loaded.coef == profile.coef and loaded.intercept == profile.intercept
    assert (loaded.name, loaded.feature_names, loaded.space_signature) == (
        profile.name,
        profile.feature_names,
        profile.space_signature,
    )
    assert [p.name for p in path.parent.iterdir()] == ["p.json"]  # no temp file left behind


def _write(tmp_path, data) -> str:
    path = tmp_path / "p.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_profile_errors(space, tmp_path):
    good = _profile(space).to_dict()
    with pytest.raises(
        ProfileError, match=r"no device profile at .*missing\.json; run `nas latency calibrate`"
    ):
        DeviceProfile.load(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match=r"is not valid JSON \(.* at line 1"):
        DeviceProfile.load(_write(tmp_path, "{not json"))
    with pytest.raises(ProfileError, match="must be a JSON object, got list"):
        DeviceProfile.load(_write(tmp_path, "[1, 2]"))
    with pytest.raises(
        ProfileError, match=r"format_version is 99, this version of nas reads format_version \[1, 2\]"
    ):
        DeviceProfile.load(_write(tmp_path, {**good, "format_version": 99}))
    with pytest.raises(ProfileError, match=r"missing field\(s\) \['coef', 'space_signature'\]"):
        DeviceProfile.load(
            _write(tmp_path, {k: v for k, v in good.items() if k not in ("coef", "space_signature")})
        )
    with pytest.raises(
        ProfileError, match=r"coefficient of 'depthwise_macs' is -0\.5; coefficients must be finite and >= 0"
    ):
        DeviceProfile.load(_write(tmp_path, {**good, "coef": [0.1, -0.5, 0.0, 0.0]}))
    with pytest.raises(ProfileError, match=r"coefficient of 'dense_macs' is nan"):
        DeviceProfile.load(_write(tmp_path, json.dumps({**good, "coef": [math.nan, 0.0, 0.0, 0.0]})))
    with pytest.raises(ProfileError, match=r"intercept is -1\.0"):
        DeviceProfile.load(_write(tmp_path, {**good, "intercept": -1.0}))
    with pytest.raises(ProfileError, match=r"has 3 coefficients for 4 feature names"):
        DeviceProfile.load(_write(tmp_path, {**good, "coef": [0.1, 0.1, 0.1]}))
    with pytest.raises(ProfileError, match="must be JSON numbers"):
        DeviceProfile.load(_write(tmp_path, {**good, "intercept": "0.5"}))
    assert issubclass(ProfileError, ValueError)


def test_default_profile_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_profile_path("my cpu/1", "tiny-1x16x16-abc")
    assert path.parent == tmp_path / "nas-engine" / "profiles"
    assert path.name.startswith("my_cpu_1-") and path.suffix == ".json"
    assert default_profile_path("my cpu/1", "tiny-1x16x16-abd") != path
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ".cache/nas-engine/profiles" in default_profile_path("cpu", "x").as_posix()


# --- calibration -------------------------------------------------------------------------------
def test_measure_latency_restores_state(space):
    import torch

    net = space.build_static(space.smallest()).train()
    before = torch.get_num_threads()
    ms = measure_latency_ms(net, space.input_shape, batch=2, threads=1, warmup=1, repeats=3)
    assert ms > 0 and net.training and torch.get_num_threads() == before


def test_calibrate_tiny(space):
    profile, diag = calibrate(space, n_archs=12, seed=0, warmup=2, repeats=5)
    assert all(c >= 0 for c in profile.coef) and profile.intercept >= 0
    assert profile.space_signature == space_signature(space) and profile.name == "cpu"
    assert {"kendall_tau", "mape", "within_10pct", "n_train", "n_holdout"} <= set(diag)
    assert diag["n_archs"] == 12 and diag["n_holdout"] == 3 and diag["evaluated_on"] == "holdout"
    assert {"threads", "batch", "torch", "platform", "processor", "date"} <= set(profile.meta)
    model = CostModel(space, profile)
    rng = np.random.default_rng(5)
    preds = model.predict([space.smallest(), space.largest()] + [space.sample(rng) for _ in range(20)])
    assert (preds > 0).all()
    assert preds[1] > preds[0]


def test_load_or_calibrate_caches(space, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = load_or_calibrate(space, device="testcpu", n_archs=6, warmup=1, repeats=3)
    path = default_profile_path("testcpu", space_signature(space))
    assert path.exists()

    def no_calibration(*args, **kwargs):
        raise AssertionError("should have used the cached profile")

    monkeypatch.setattr(cost_store_mod, "calibrate", no_calibration)
    again = load_or_calibrate(space, device="testcpu", threads=1)
    assert again.profile.to_dict() == model.profile.to_dict()
    with pytest.raises(AssertionError, match="cached profile"):
        load_or_calibrate(space, device="testcpu", recalibrate=True)
    with (
        pytest.raises(AssertionError, match="cached profile"),
        pytest.warns(UserWarning, match="other \\['threads'\\]"),
    ):
        load_or_calibrate(space, device="testcpu", threads=2)

    path.write_text("{broken")
    calls = []
    monkeypatch.setattr(cost_store_mod, "calibrate", lambda sp, **kw: calls.append(kw) or (model.profile, {}))
    with pytest.warns(UserWarning, match="not valid JSON"):
        load_or_calibrate(space, device="testcpu")
    assert (
        calls == [{"device_name": "testcpu"}]
        and DeviceProfile.load(path).to_dict() == model.profile.to_dict()
    )


def test_lookup_table_profile_predicts_measured_ops_and_falls_back(tmp_path):
    """A LUT profile: measured ops come from the table, unmeasured ones from the analytical model."""
    from nas.cost import calibrate, space_signature
    from search_spaces import create_space

    space = create_space("tiny", num_classes=3, in_channels=1)
    profile, diag = calibrate(space, n_archs=8, seed=0, repeats=3, warmup=1, lut=True)
    assert diag["model"] == "lookup table + analytical fallback" and diag["lut_ops_measured"] == len(
        space.op_modules()
    )
    lut = np.array(profile.lut, dtype=float)
    assert (
        np.isnan(lut[0]).all() and np.isfinite(lut[1:, 1:]).all()
    )  # fixed slot via fallback; every block op measured
    again = DeviceProfile.load(profile.save(tmp_path / "p.json"))
    assert (
        np.array_equal(np.array(again.lut, dtype=float), lut, equal_nan=True)
        and again.lut_scale == profile.lut_scale
    )
    model = CostModel(space, again)
    archs = [space.smallest(), space.largest()]
    ops = space.lower(space.encode_batch(archs))
    analytic = space.cost_table().features @ np.array(profile.coef)
    table = profile.lut_scale * np.where(np.isnan(lut), analytic, lut)
    manual = profile.intercept + table[np.arange(table.shape[0]), ops].sum(axis=1)
    assert np.allclose(model.predict(archs), manual, rtol=1e-12)
    # a partial table (a user's measurements for some ops only) still predicts every architecture
    partial = lut.copy()
    partial[2:, :] = np.nan
    user = DeviceProfile(
        "user",
        profile.feature_names,
        profile.coef,
        0.0,
        space_signature(space),
        {},
        lut=tuple(map(tuple, partial)),
    )
    assert np.all(np.isfinite(CostModel(space, user).predict(archs)))


def test_version_1_profiles_still_load(tmp_path):
    from nas.cost import calibrate
    from search_spaces import create_space

    space = create_space("tiny", num_classes=3, in_channels=1)
    profile, _ = calibrate(space, n_archs=4, seed=0, repeats=2, warmup=1, lut=False)
    d = profile.to_dict()
    d["format_version"] = 1
    del d["lut"], d["lut_scale"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(d))
    loaded = DeviceProfile.load(path)
    assert loaded.lut is None and np.allclose(
        CostModel(space, loaded).predict([space.largest()]),
        CostModel(space, profile).predict([space.largest()]),
    )
