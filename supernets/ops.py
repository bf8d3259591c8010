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
        self.padding: int | None = None  # None: "same" padding (kernel // 2); e.g. 0 for a patch embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, c_out, c_in = self.active_kernel, self.active_out, x.shape[1]
        w = centre_crop(self.weight[:c_out, :c_in], k)
        b = self.bias[:c_out] if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, k // 2 if self.padding is None else self.padding)


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


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (SUM) over the default process group.

    Every rank uses the reduced tensor in its own loss, so the gradient of the
    summed loss with respect to each rank's input is the sum of all ranks'
    output gradients: the backward pass is an all-reduce too. (Same semantics as
    the deprecated ``torch.distributed.nn.functional.all_reduce``, without its
    per-call FutureWarning or the risk of its removal.)
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad)


def _distributed_world() -> int:
    """World size of the default process group (1 when torch.distributed is not in use)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose affine parameters and running statistics are sliced to the input width.

    In training mode the running statistics of the active prefix are updated in
    place (the slice is a view), exactly as a static BN of that width would.

    With ``sync = True`` (set by ``nas.training.distributed.enable_sync_bn``), training
    mode and an initialised process group of more than one rank, the batch
    statistics are those of the global batch (all ranks' shards together), so
    data-parallel training normalises exactly as one process on the whole batch
    would. Otherwise the behaviour is that of a per-process BN.
    """

    sync: bool = False  # class default: instances unpickled from older code have it too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sync and self.training and _distributed_world() > 1:
            return self._forward_sync(x)
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

    def _forward_sync(self, x: torch.Tensor) -> torch.Tensor:
        """Training-mode BN with statistics of the global batch (one all-reduce per call).

        Per-channel sums, sums of squares and the element count are all-reduced
        in one differentiable collective, so gradients flow through the global
        mean and variance to every rank's inputs as they would in one process.
        """
        self._check_input_dim(x)
        c = x.shape[1]
        # Half precision would lose the sums of squares; accumulate in float32 at least.
        acc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        n_local = x.numel() // c
        # Sums are taken around a shift that every rank shares (the synchronised running mean),
        # so E[(x-s)^2] - E[x-s]^2 does not cancel catastrophically when |mean| >> std.
        shift = (
            self.running_mean[:c].detach().to(acc.dtype).view(1, c, 1, 1)
            if self.running_mean is not None
            else acc.new_zeros(1, c, 1, 1)
        )
        centred = acc - shift
        local = torch.cat(
            [centred.sum(dim=(0, 2, 3)), (centred * centred).sum(dim=(0, 2, 3)), acc.new_full((1,), n_local)]
        )
        total = _AllReduceSum.apply(local)
        count = total[-1].detach()  # values per channel over all ranks; kept on device (no host sync)
        if n_local <= 1 and count.item() <= 1:  # host sync only in the degenerate case
            raise ValueError(
                "Expected more than 1 value per channel when training over all ranks, got local input size"
                f" {tuple(x.shape)}"
            )
        mean_c = total[:c] / count  # mean of x - shift
        var = (total[c : 2 * c] / count - mean_c * mean_c).clamp_min(0.0)  # biased, as used for normalising
        mean = mean_c + shift.view(c)

        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        if self.running_mean is not None and self.running_var is not None:
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
            else:
                momentum = self.momentum
            with torch.no_grad():
                rm, rv = self.running_mean[:c], self.running_var[:c]  # views: updated in place
                rm.mul_(1 - momentum).add_(mean.detach().to(rm.dtype), alpha=momentum)
                unbiased = var.detach() * (count / (count - 1))
                rv.mul_(1 - momentum).add_(unbiased.to(rv.dtype), alpha=momentum)

        shape = (1, c, 1, 1)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight[:c].to(scale.dtype)
        y = (acc - mean.view(shape)) * scale.view(shape)  # centred first: no cancellation when |mean| >> std
        if self.bias is not None:
            y = y + self.bias[:c].to(y.dtype).view(shape)
        return y.to(x.dtype)


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
