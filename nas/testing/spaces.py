"""What every search space promises: architectures as data, clear validation, consistent cost lowering,
faithful extraction.

Subclass :class:`SearchSpaceContract` and provide a ``space`` fixture (small
enough for a CPU test: a few channels, 16 px input) to run every check on it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from search_spaces import Arch, InvalidArchitectureError, SearchSpace
from supernets.profiling import forward_features

ENUMERATE_LIMIT = 5000  # spaces at most this large are also checked by full enumeration


def sample_archs(space: SearchSpace, n: int = 6, seed: int = 0) -> list[Arch]:
    """The smallest, the largest and ``n`` seeded random architectures."""
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(n))]


class SearchSpaceContract:
    """Checks for the ``space`` fixture a subclass provides."""

    @pytest.fixture
    def space(self) -> SearchSpace:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a SearchSpaceContract subclass provides the `space` fixture")

    def test_json_and_id_round_trip(self, space: SearchSpace) -> None:
        for arch in sample_archs(space, n=20):
            again = Arch.from_json(arch.to_json())
            assert again == arch and again.id == arch.id and hash(again) == hash(arch)
            assert space.arch(json.loads(json.dumps(arch.to_dict()))) == arch

    def test_integer_encoding_round_trip(self, space: SearchSpace) -> None:
        archs = sample_archs(space, n=20)
        codes = space.encode_batch(archs)
        assert codes.shape == (len(archs), len(space.keys)) and codes.dtype == np.int64
        assert [space.decode(c) for c in codes] == archs

    def test_architectures_are_canonical(self, space: SearchSpace) -> None:
        for arch in sample_archs(space, n=20):
            assert space.arch(arch) == arch  # canonicalising twice changes nothing

    def test_used_keys_are_the_choices_that_change_the_network(self, space: SearchSpace) -> None:
        """Another value of an unused key gives the same canonical architecture, of a used key another one.

        Checked at raw choices and at their canonical architecture alike, each on its own: the two may use
        different keys (nb201: a conv reading a node that is zero is unused, yet it makes the edge into that
        node used; canonicalisation drops the conv, and the edge with it).
        """
        rng = np.random.default_rng(0)
        raw = [{k: v[int(rng.integers(len(v)))] for k, v in space.choices.items()} for _ in range(8)]
        for given in [space.smallest().to_dict(), space.largest().to_dict(), *raw]:
            arch = space.arch(given)
            for values in (given, arch.to_dict()):
                self._check_used_keys(space, values, arch)

    @staticmethod
    def _check_used_keys(space: SearchSpace, values: dict[str, Any], arch: Arch) -> None:
        used = space.used_keys(values)
        assert list(used) == [k for k in space.keys if k in used], (
            "used_keys: keys of the space, in its order"
        )
        for key in space.keys:
            for value in space.choices[key]:
                if value == values[key]:
                    continue
                other = space.arch({**values, key: value})
                if key in used:
                    assert other.id != arch.id, f"{key}={value!r} is a used choice but gives {arch.id} again"
                else:
                    assert other.id == arch.id, f"{key}={value!r} is not a used choice but changes {arch.id}"

    def test_a_bad_value_names_the_key_and_the_allowed_values(self, space: SearchSpace) -> None:
        key = next(k for k in space.keys if len(space.choices[k]) >= 1)
        bad: Any = "not-a-choice"
        with pytest.raises(
            InvalidArchitectureError, match=rf"{key}='not-a-choice' is not allowed.*allowed values"
        ):
            space.arch({**space.largest().to_dict(), key: bad})
        values = space.largest().to_dict()
        del values[key]
        with pytest.raises(InvalidArchitectureError, match=f"missing choice '{key}'"):
            space.arch(values)
        with pytest.raises(InvalidArchitectureError, match="has no choice 'no.such.choice'"):
            space.arch({**space.largest().to_dict(), "no.such.choice": 1})

    def test_counts_agree_with_enumeration(self, space: SearchSpace) -> None:
        n = space.num_architectures()
        assert n >= 1
        if n <= ENUMERATE_LIMIT:
            archs = space.enumerate()
            assert len(archs) == n and len({a.id for a in archs}) == n

    def test_lowering_is_in_range_and_matches_encoding(self, space: SearchSpace) -> None:
        archs = sample_archs(space, n=20)
        table = space.cost_table()
        slots, ops = table.features.shape[:2]
        assert len(table.slot_names) == slots and len(table.feature_names) == table.features.shape[2]
        assert np.isfinite(table.features).all() and (table.features >= 0).all()
        lowered = space.lower(space.encode_batch(archs))
        assert lowered.shape == (len(archs), slots) and lowered.min() >= 0 and lowered.max() < ops
        one_by_one = np.concatenate([space.lower(space.encode_batch([a])) for a in archs])
        np.testing.assert_array_equal(
            lowered, one_by_one
        )  # vectorised lowering equals lowering one at a time

    def test_cost_table_adds_up_to_each_networks_own_macs(self, space: SearchSpace) -> None:
        table = space.cost_table()
        archs = sample_archs(space, n=3)
        lowered = space.lower(space.encode_batch(archs))
        timed = {(slot, op) for slot, op, _, _ in space.op_modules()}
        if timed:  # a space that lists its ops for the latency table lists every op its networks use
            assert {(s, int(o)) for row in lowered for s, o in enumerate(row) if s > 0 and o > 0} <= timed
        for arch, row in zip(archs, lowered):
            want, _ = forward_features(space.build_static(arch), space.input_shape)
            got = table.features[np.arange(len(row)), row].sum(axis=0)
            np.testing.assert_allclose(
                got[:2], want[:2], rtol=1e-9
            )  # dense and depthwise MACs of the whole network

    def test_extracted_networks_compute_what_the_supernet_computes(self, space: SearchSpace) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = space.build_supernet()
        x = torch.randn(2, *space.input_shape, generator=torch.Generator().manual_seed(1))
        for arch in sample_archs(space, n=3):
            spec = space.to_spec(arch)
            net.train()
            with (
                torch.no_grad(),
                net.active(spec),
            ):  # BN statistics of this subnetwork, as after recalibration
                for s in range(2):
                    net(torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(10 + s)))
                net.eval()
                diff = (net(x) - net.extract().eval()(x)).abs().max().item()
            assert diff <= 1e-5, (arch.id, diff)

    def test_spec_round_trip_where_the_space_has_one(self, space: SearchSpace) -> None:
        try:
            space.arch_from_spec(space.to_spec(space.largest()))
        except NotImplementedError:
            pytest.skip(
                f"space {space.name!r} declares no arch_from_spec (its supernets never choose an architecture"
                " themselves)"
            )
        for arch in sample_archs(space):
            assert space.arch_from_spec(space.to_spec(arch)) == arch

    def test_metric_table_counts_each_networks_own_size(self, space: SearchSpace) -> None:
        """Parameters, MACs and peak activations read off the metric table equal the extracted networks'
        own."""
        from nas.cost.metrics import BYTES_PER_ELEMENT, MB, network_metrics
        from supernets.profiling import forward_metrics

        archs = sample_archs(space, n=3)
        table = network_metrics(space, archs)
        for i, arch in enumerate(archs):
            params, macs, peak = forward_metrics(space.build_static(arch), space.input_shape)
            assert table["params"][i] == params, arch.id
            assert table["macs"][i] == macs, arch.id
            assert table["memory_mb_per_sample"][i] == pytest.approx(
                peak * BYTES_PER_ELEMENT / MB, rel=1e-12
            ), arch.id
