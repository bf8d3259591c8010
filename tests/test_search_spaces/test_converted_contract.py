"""The search-space contract (nas.testing.SearchSpaceContract) on one converted model of every family.

Prefix families are not listed by ``list_spaces()``, so ``test_space_contract.py`` covers one timm
MobileNetV3; this file covers the other converters, each on a small randomly initialised model.
"""

from __future__ import annotations

import pytest

from nas.testing import SearchSpaceContract
from search_spaces import SearchSpace, create_space

CONVERTED = {
    "timm:resnet18d": {"stem_width": 8, "channels": [16, 32, 64, 128]},
    "timm:resnet26": {"channels": [8, 16, 32, 64]},
    "torchvision:resnet18": {},
    "timm:efficientnet_b0": {},
    "timm:mobilenetv2_050": {},
    "torchvision:mobilenet_v3_small": {"width_mult": 0.5},
    "timm:vit_tiny_patch16_224": {"depth": 3, "patch_size": 8},
}


class TestEveryConvertedFamily(SearchSpaceContract):
    @pytest.fixture(scope="class", params=list(CONVERTED))
    def space(self, request: pytest.FixtureRequest) -> SearchSpace:
        name = request.param
        return create_space(name, num_classes=5, in_channels=1, resolution=32, model_kwargs=CONVERTED[name])
