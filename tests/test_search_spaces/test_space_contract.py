"""The search-space contract (nas.testing.SearchSpaceContract) on every registered space and on one timm
model."""

from __future__ import annotations

import pytest

from nas.testing import SearchSpaceContract
from search_spaces import SearchSpace, create_space, list_spaces

TIMM_MODEL = "timm:mobilenetv3_large_100"  # a prefix family is not listed; one small model stands for it


def small(name: str) -> SearchSpace:
    """A CPU-sized instance: 16 px single-channel input, a quarter of the widths."""
    return create_space(name, num_classes=5, in_channels=1, resolution=16, width_mult=0.25)


class TestEveryRegisteredSpace(SearchSpaceContract):
    @pytest.fixture(scope="class", params=[*list_spaces(), TIMM_MODEL])
    def space(self, request: pytest.FixtureRequest) -> SearchSpace:
        return small(request.param)
