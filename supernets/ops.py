"""Weight-entangled elastic ops.

Each op owns one max-size parameter and slices it at forward time: output and
input channels are taken from the front, kernels are centre-cropped. A smaller
choice is therefore literally a slice of the largest one (OFA / AutoFormer /
TangleNAS weight entanglement). The active sizes are plain attributes set by the
owning block, never global switches.

The slicing rule ("prefix on channel dims, centre crop on spatial dims") is the
single convention that :func:`slice_like` in ``supernets.extract`` relies on to
copy weights into a static network, so every op here must follow it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centre ``kernel x kernel`` window of a ``[..., K, K]`` weight (K >= kernel, same parity)."""
    k_max = weight.shape[-1]
    if kernel == k_max:
        return weight
    start = (k_max - kernel) // 2
    return weight[..., start : start + kernel, start : start + kernel]


class ElasticConv2d(nn.Module):
    """Dense convolution with elastic output channels and kernel size.

    Input channels follow the incoming tensor, so the op never needs to be told
    its active input width.
    """

    def __init__(self, max_in: int, max_out: int, max_kernel: int, stride: int = 1, bias: bool = False):
        super().__init__()
        self.max_in, self.max_out, self.max_kernel, self.stride = max_in, max_out, max_kernel, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, max_kernel, max_kernel))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.active_out = max_out
        self.active_kernel = max_kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, c_out, c_in = self.active_kernel, self.active_out, x.shape[1]
        w = centre_crop(self.weight[:c_out, :c_in], k)
        b = self.bias[:c_out] if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, k // 2)


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise convolution; channels follow the input, kernel is centre-cropped."""

    def __init__(self, max_channels: int, max_kernel: int, stride: int = 1):
        super().__init__()
        self.max_channels, self.max_kernel, self.stride = max_channels, max_kernel, stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, max_kernel, max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.active_kernel = max_kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, k = x.shape[1], self.active_kernel
        w = centre_crop(self.weight[:c], k)
        return F.conv2d(x, w, None, self.stride, k // 2, 1, c)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose affine parameters and running statistics are sliced to the input width.

    In training mode the running statistics of the active prefix are updated in
    place (the slice is a view), exactly as a static BN of that width would.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch_stats = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            momentum,
            self.eps,
        )


class ElasticLinear(nn.Module):
    """Linear layer with elastic input and output features (prefix slices)."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True):
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        lin = nn.Linear(max_in, max_out, bias=bias)  # reuse torch's default init
        self.weight = lin.weight
        self.bias = lin.bias
        self.active_out = max_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in, c_out = x.shape[-1], self.active_out
        b = self.bias[:c_out] if self.bias is not None else None
        return F.linear(x, self.weight[:c_out, :c_in], b)
