"""Extraction: copy a supernet's sliced weights and BN statistics into a static network.

Supernet and static network share module names (see ``supernets.blocks``), so a
static tensor named ``n`` is the slice of the supernet tensor named ``n``: prefix
on channel dimensions, centre crop on the two spatial dimensions of conv kernels.
"""

from __future__ import annotations

import torch
from torch import nn


def slice_like(src: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Slice ``src`` to ``shape``: leading dims from the front, 4-D kernels centre-cropped."""
    if src.dim() != len(shape):
        raise ValueError(f"cannot slice a {tuple(src.shape)} tensor to {tuple(shape)}")
    index = []
    for d, (have, want) in enumerate(zip(src.shape, shape)):
        if want > have:
            raise ValueError(
                f"static tensor {tuple(shape)} is larger than supernet tensor {tuple(src.shape)}"
            )
        if src.dim() == 4 and d >= 2:  # spatial dims of a conv kernel: centre crop
            start = (have - want) // 2
            if (have - want) % 2:
                raise ValueError(f"kernel {want} cannot be centred in kernel {have}")
            index.append(slice(start, start + want))
        else:
            index.append(slice(0, want))
    return src[tuple(index)]


@torch.no_grad()
def copy_sliced_state(supernet: nn.Module, static: nn.Module) -> None:
    """Fill every parameter and buffer of ``static`` from the same-named tensor of ``supernet``."""
    source = supernet.state_dict()
    for name, dst in static.state_dict().items():
        if name not in source:
            raise KeyError(f"static network tensor {name!r} has no counterpart in the supernet")
        dst.copy_(slice_like(source[name], dst.shape))
