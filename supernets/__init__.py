"""Pure-PyTorch supernets: elastic ops and blocks, supernet modules, static twins, extraction."""

from supernets.extract import copy_sliced_state, slice_like
from supernets.mbnet import MBNet, MBNetConfig, MBSpec, MBSupernet, StageConfig
from supernets.resnet_pool import PoolResNet, PoolResNetConfig, PoolResNetSupernet

__all__ = [
    "MBNet",
    "MBNetConfig",
    "MBSpec",
    "MBSupernet",
    "PoolResNet",
    "PoolResNetConfig",
    "PoolResNetSupernet",
    "StageConfig",
    "copy_sliced_state",
    "slice_like",
]
