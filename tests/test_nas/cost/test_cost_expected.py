"""Expected (differentiable) latency, several devices at once, spec-derived profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.cost import (
    SPECS,
    CostModel,
    DeviceProfile,
    DeviceSpec,
    SpecError,
    expected_latency,
    expected_latency_batch,
    list_specs,
    load_specs,
    predict_many,
    space_signature,
    spec_profile,
)
from nas.cost.specs import SPECS_PATH
from search_spaces import SearchSpace, create_space

SPACES = {
    "tiny": lambda: create_space("tiny", num_classes=4, in_channels=1),
    "mbv3": lambda: create_space("mbv3", num_classes=10, in_channels=1, width_mult=0.35),
}


@pytest.fixture(scope="module", params=sorted(SPACES))
def space(request):
    return SPACES[request.param]()


@pytest.fixture(scope="module")
def tiny():
    return SPACES["tiny"]()


def _model(space, seed: int = 0, name: str = "hand-made") -> CostModel:
    """Cost model from random non-negative coefficients of a realistic size (no calibration, no timing)."""
    rng = np.random.default_rng(seed)
    ct = space.cost_table()
    scale = np.array([1e-6, 3e-6, 1e-7, 1e-2])[: len(ct.feature_names)]
    profile = DeviceProfile(
        name,
        ct.feature_names,
        tuple(rng.random(len(ct.feature_names)) * scale),
        float(rng.random()),
        space_signature(space),
    )
    return CostModel(space, profile)


def _random_probs(space, rng: np.random.Generator, concentration: float = 0.5) -> dict[str, torch.Tensor]:
    """Non-uniform random probabilities (Dirichlet), float64."""
    return {
        k: torch.as_tensor(rng.dirichlet(np.full(len(v), concentration))) for k, v in space.choices.items()
    }


# --- op probabilities ------------------------------------------------------------------------
def test_op_probabilities_rows_sum_to_one_and_match_lowering(space):
    rng = np.random.default_rng(0)
    ct = space.cost_table()
    P = space.op_probabilities(_random_probs(space, rng))
    assert P.shape == ct.features.shape[:2] and P.dtype == torch.float64
    assert bool((P >= 0).all())
    torch.testing.assert_close(P.sum(-1), torch.ones(P.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    for _ in range(10):  # one-hot probabilities put all mass on the lowered op
        a = space.sample(rng)
        P = space.op_probabilities(space.one_hot_probabilities(a))
        ids = space.lower(space.encode_batch([a]))[0]
        expected = torch.zeros_like(P)
        expected[torch.arange(len(ids)), torch.as_tensor(ids, dtype=torch.long)] = 1.0
        assert torch.equal(P, expected)


def test_op_probabilities_formula_on_tiny(tiny):
    probs = tiny.uniform_probabilities()
    probs["s0.depth"] = torch.tensor([0.3, 0.7], dtype=torch.float64)  # depths (1, 2): block 1 runs w.p. 0.7
    probs["s0.b1.kernel"] = torch.tensor([0.2, 0.8], dtype=torch.float64)
    probs["s0.b1.expand"] = torch.tensor([0.6, 0.4], dtype=torch.float64)
    P = tiny.op_probabilities(probs)
    slot = 1 + 0 * tiny.max_depth + 1
    want = torch.tensor(
        [0.3, 0.7 * 0.2 * 0.6, 0.7 * 0.2 * 0.4, 0.7 * 0.8 * 0.6, 0.7 * 0.8 * 0.4], dtype=torch.float64
    )
    torch.testing.assert_close(P[slot], want, rtol=0, atol=1e-15)
    assert P[1, 0] == 0 and P[0, 0] == 1 and bool((P[0, 1:] == 0).all())  # block 0 always runs; fixed slot


def test_op_probabilities_batched_matches_single(tiny):
    rng = np.random.default_rng(1)
    rows = [_random_probs(tiny, rng) for _ in range(3)]
    batched = tiny.op_probabilities({k: torch.stack([r[k] for r in rows]) for k in tiny.keys})
    assert batched.shape[0] == 3
    for b, r in enumerate(rows):
        assert torch.equal(batched[b], tiny.op_probabilities(r))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.pop("s1.depth"), "missing choice 's1.depth'"),
        (lambda p: p.update({"s9.depth": torch.ones(1)}), "no choice 's9.depth'"),
        (lambda p: p.update({"s0.b0.kernel": torch.ones(3) / 3}), r"'s0.b0.kernel' must have length 2"),
        (
            lambda p: p.update({"s0.b0.expand": torch.tensor([1.5, -0.5], dtype=torch.float64)}),
            r"'s0.b0.expand' must be >= 0",
        ),
        (
            lambda p: p.update({"s0.depth": torch.tensor([0.5, 0.6], dtype=torch.float64)}),
            r"'s0.depth' must sum to 1",
        ),
        (
            lambda p: p.update({"s1.depth": torch.tensor([float("nan"), 1.0], dtype=torch.float64)}),
            r"'s1.depth' must be finite",
        ),
        (lambda p: p.update({"s1.depth": torch.ones(2, 2) / 2}), r"'s1.depth' have batch shape"),
    ],
)
def test_op_probabilities_rejects_bad_input(tiny, change, message):
    probs = tiny.uniform_probabilities()
    change(probs)
    with pytest.raises(ValueError, match=message):
        tiny.op_probabilities(probs)


def test_base_op_probabilities_is_not_implemented(tiny):
    with pytest.raises(NotImplementedError, match="'tiny'"):
        SearchSpace.op_probabilities(tiny, tiny.uniform_probabilities())


# --- expected latency ------------------------------------------------------------------------
def test_expected_latency_of_one_hot_equals_predict(space):
    model = _model(space, seed=3)
    rng = np.random.default_rng(3)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(20)]
    want = model.predict(archs)
    got = np.array([float(expected_latency(model, space.one_hot_probabilities(a))) for a in archs])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    batch = expected_latency_batch(
        model, {k: torch.stack([space.one_hot_probabilities(a)[k] for a in archs]) for k in space.keys}
    )
    assert batch.shape == (len(archs),)
    np.testing.assert_allclose(batch.numpy(), want, rtol=1e-9, atol=1e-9)


def test_expected_latency_gradients_exist_and_are_finite(space):
    model = _model(space, seed=4)
    probs = space.uniform_probabilities(requires_grad=True)
    value = expected_latency(model, probs)
    assert value.ndim == 0 and value.dtype == torch.float64
    value.backward()
    for k, p in probs.items():
        assert p.grad is not None and p.grad.shape == p.shape, k
        assert bool(torch.isfinite(p.grad).all()), k
    assert any(bool((p.grad != 0).any()) for k, p in probs.items() if k.endswith(".depth"))


def test_expected_latency_gradients_through_softmax_match_finite_differences(tiny):
    model = _model(tiny, seed=5)
    logits = {
        k: torch.randn(
            len(v), dtype=torch.float64, generator=torch.Generator().manual_seed(i), requires_grad=True
        )
        for i, (k, v) in enumerate(tiny.choices.items())
    }
    keys = list(logits)

    def f(*ls):
        return expected_latency(model, {k: torch.softmax(z, 0) for k, z in zip(keys, ls)}, validate=False)

    assert torch.autograd.gradcheck(f, tuple(logits[k] for k in keys))
    f32 = expected_latency(model, {k: torch.softmax(z, 0).float() for k, z in logits.items()})
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f(*logits.values()).detach(), rtol=1e-5, atol=0)


def test_expected_latency_matches_monte_carlo(space):
    model = _model(space, seed=6)
    rng = np.random.default_rng(6)
    probs = _random_probs(space, rng, concentration=0.7)
    n = 2000
    codes = np.stack(
        [rng.choice(len(space.choices[k]), size=n, p=probs[k].numpy()) for k in space.keys], axis=1
    )
    lat = model.predict_codes(codes)
    mean, se = lat.mean(), lat.std(ddof=1) / np.sqrt(n)
    exp = float(expected_latency(model, probs))
    assert abs(mean - exp) < 4 * se, (mean, exp, se)


def test_expected_latency_rejects_wrong_rank(tiny):
    model = _model(tiny)
    batched = {k: v.unsqueeze(0) for k, v in tiny.uniform_probabilities().items()}
    with pytest.raises(ValueError, match="expected_latency_batch"):
        expected_latency(model, batched)
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        expected_latency_batch(model, tiny.uniform_probabilities())


# --- several devices -------------------------------------------------------------------------
def test_predict_many_equals_stacked_predict(tiny):
    twin = SPACES["tiny"]()  # another object, same configuration: accepted
    models = [_model(tiny, seed=s, name=f"dev{s}") for s in range(3)] + [_model(twin, seed=9, name="twin")]
    rng = np.random.default_rng(7)
    archs = [tiny.sample(rng) for _ in range(50)]
    got = predict_many(models, archs)
    assert got.shape == (50, 4) and got.dtype == np.float64
    np.testing.assert_array_equal(got, np.stack([m.predict(archs) for m in models], axis=1))
    assert predict_many(models, []).shape == (0, 4)


def test_predict_many_rejects_mixed_spaces(tiny):
    other = create_space("tiny", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match="one space"):
        predict_many([_model(tiny), _model(other)], [tiny.smallest()])
    with pytest.raises(ValueError, match="at least one"):
        predict_many([], [tiny.smallest()])


# --- spec-derived profiles -------------------------------------------------------------------
def test_shipped_specs_load_and_list():
    assert {"mobile-big-core", "laptop-cpu", "edge-gpu", "datacenter-gpu"} <= set(SPECS)
    assert load_specs(SPECS_PATH) == dict(SPECS)
    assert set(list_specs()) == set(SPECS)
    for spec in SPECS.values():
        assert "spec-derived" in spec.source and "approximate" in spec.source


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_profiles_are_valid_and_positive(tiny, name):
    profile = spec_profile(SPECS[name], tiny)
    assert profile.name == name and profile.intercept == 0.0
    assert profile.meta["kind"] == "spec-derived" and "NOT measured" in profile.meta["warning"]
    assert profile.meta["spec"]["peak_macs_per_s"] == SPECS[name].peak_macs_per_s
    assert DeviceProfile.from_json(profile.to_json()) == profile  # ships as a normal profile
    model = CostModel(tiny, profile)
    rng = np.random.default_rng(8)
    pred = model.predict([tiny.smallest(), tiny.largest()] + [tiny.sample(rng) for _ in range(20)])
    assert bool((pred > 0).all())
    assert pred[1] > pred[0]  # the largest costs more than the smallest
    assert spec_profile(name, tiny) == profile  # by name too


def test_spec_profiles_order_devices_sensibly(tiny):
    models = [CostModel(tiny, spec_profile(n, tiny)) for n in ("datacenter-gpu", "mobile-big-core")]
    dc, mobile = predict_many(models, [tiny.largest()])[0]
    assert dc < mobile


def test_spec_coefficients():
    spec = DeviceSpec("x", "test", 2e9, 0.5, 4e9, 0.01, "approximate, spec-derived: test")
    assert spec.coefficients() == {
        "dense_macs": 5e-7,
        "depthwise_macs": 1e-6,
        "memory_bytes": 2.5e-7,
        "ops": 0.01,
    }
    with pytest.raises(SpecError, match="depthwise_efficiency"):
        DeviceSpec("x", "test", 2e9, 1.5, 4e9, 0.01, "s")


def _bad_copy(tmp_path, edit):
    data = json.loads(SPECS_PATH.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "specs.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda d: d["specs"][1].pop("memory_bytes_per_s"),
            r"specs\[1\] \('laptop-cpu'\): missing field 'memory_bytes_per_s'",
        ),
        (
            lambda d: d["specs"][0].update(peak_macs_per_s="fast"),
            r"specs\[0\] \('mobile-big-core'\).*peak_macs_per_s must be a finite number",
        ),
        (lambda d: d["specs"][2].update(peak_macs_per_s=-1.0), r"specs\[2\] \('edge-gpu'\).*must be > 0"),
        (lambda d: d["specs"][0].update(bandwidth=1), r"unknown field 'bandwidth'"),
        (lambda d: d["specs"].append(dict(d["specs"][0])), r"field 'name' repeats 'mobile-big-core'"),
        (lambda d: d.update(format_version=2), "format_version is 2"),
        (lambda d: d.update(specs={}), "field 'specs' must be a list"),
    ],
)
def test_malformed_spec_table_names_file_and_field(tmp_path, edit, message):
    path = _bad_copy(tmp_path, edit)
    with pytest.raises(SpecError, match=message) as info:
        load_specs(path)
    assert str(path) in str(info.value)


def test_spec_table_that_is_not_json(tmp_path):
    path = tmp_path / "specs.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_specs(path)
    with pytest.raises(SpecError, match="no device spec table"):
        load_specs(tmp_path / "missing.json")
