"""Single-path superkernels (Single-Path NAS): choices decided by weight norms against trainable thresholds.

Every MBConv block keeps one over-parameterised depthwise kernel (the largest
kernel, the largest expansion). A smaller kernel is its centre, a smaller expand
ratio its first channel groups, exactly as in the weight-entangled supernet, but
instead of sampling, each nested extension is switched on by an *indicator*
``1(rms(extension weights) > t)`` with a trainable threshold ``t``:

- kernel: ``W = W_3 + g_5 * (W_5\\3 + g_7 * W_7\\5)`` (rings of the depthwise kernel);
- expand: channel mask ``G_3 + g_4 * (G_4\\3 + g_6 * G_6\\4)`` on the expanded
  channels (after each activation, and on the squeeze-excite hidden units);
- depth: blocks past a stage's minimum depth are kept with ``g_skip`` on the
  RMS of their smallest kernel/expand group (nested: a block runs only if the
  ones before it do).

Forward uses the hard indicators (the network *is* one subnetwork, so the
search costs one path's memory and compute); backward uses the sigmoid
relaxation (straight-through), so thresholds and weights learn which
extensions are worth their latency. With hard indicators the search-mode output
equals the sliced subnetwork's exactly, so :meth:`read_spec` and extraction
give the network that was trained. ``set_active`` switches back to ordinary
sliced evaluation of any architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernets.blocks import SqueezeExcite, mid_channels, se_channels
from supernets.mbnet import MBNetConfig, MBSpec, MBSupernet, _head_forward


def straight_through(score: torch.Tensor, threshold: torch.Tensor, temperature: float) -> torch.Tensor:
    """1(score > threshold) forward, sigmoid((score - threshold) / temperature) gradient."""
    soft = torch.sigmoid((score - threshold) / temperature)
    hard = (score > threshold).to(soft.dtype)
    return hard + soft - soft.detach()


def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).mean().sqrt()


class SinglePathMBSupernet(MBSupernet):
    """MBSupernet plus per-block thresholds and a threshold-driven ("search mode") forward."""

    def __init__(self, cfg: MBNetConfig, temperature: float = 0.05):
        super().__init__(cfg)
        self.temperature = temperature
        n_k, n_e = len(cfg.kernels) - 1, len(cfg.expands) - 1
        self.d_min, d_max = min(cfg.depths), max(cfg.depths)
        self.kernel_thresholds = nn.Parameter(torch.zeros(len(cfg.stages), d_max, n_k))
        self.expand_thresholds = nn.Parameter(torch.zeros(len(cfg.stages), d_max, n_e))
        self.skip_thresholds = nn.Parameter(torch.zeros(len(cfg.stages), d_max - self.d_min))
        self.search_mode = False
        self.last_indicators: dict | None = None

    # --- modes ----------------------------------------------------------------------------------
    def use_thresholds(self) -> None:
        """Train/evaluate the network the thresholds choose (Single-Path search)."""
        self.set_active(self.largest_spec())  # every op at full size; masks do the choosing
        self.search_mode = True

    def set_active(self, spec: MBSpec) -> None:
        super().set_active(spec)
        self.search_mode = False

    def thresholds(self) -> list[nn.Parameter]:
        return [self.kernel_thresholds, self.expand_thresholds, self.skip_thresholds]

    # --- indicators -------------------------------------------------------------------------------
    def _block_groups(self, i: int, j: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """RMS of each nested kernel ring, each expand channel group, and of the block's smallest op."""
        blk = self.stages[i][j]
        w = blk.dw.conv.weight  # [mid_max, 1, k_max, k_max]
        k_max = w.shape[-1]
        mids = [mid_channels(blk.in_ch, e) for e in self.cfg.expands]
        kernels = self.cfg.kernels

        def window(k: int) -> slice:
            s = (k_max - k) // 2
            return slice(s, s + k)

        rings = []
        for small, big in zip(kernels[:-1], kernels[1:]):
            ring = w[: mids[0], :, window(big), window(big)].clone()
            ring[..., window(small).start - window(big).start : window(small).stop - window(big).start, window(small).start - window(big).start : window(small).stop - window(big).start] = 0
            n_ring = big * big - small * small
            rings.append(ring.pow(2).sum().div(mids[0] * n_ring).sqrt())
        groups = [_rms(w[lo:hi, :, window(kernels[0]), window(kernels[0])]) for lo, hi in zip(mids[:-1], mids[1:])]
        base = _rms(w[: mids[0], :, window(kernels[0]), window(kernels[0])])
        return rings, groups, base

    def indicators(self) -> dict[tuple[int, int], dict[str, list[torch.Tensor]]]:
        """Straight-through gates per block: ``kernel`` (nested rings), ``expand`` (nested groups),
        ``keep`` (this block's own skip gate) and ``run`` (the product of ``keep`` up to this block)."""
        out = {}
        for i, stage in enumerate(self.stages):
            running = None
            for j in range(len(stage)):
                rings, groups, base = self._block_groups(i, j)
                t = self.temperature
                kern = [straight_through(r, self.kernel_thresholds[i, j, n], t) for n, r in enumerate(rings)]
                expa = [straight_through(g, self.expand_thresholds[i, j, n], t) for n, g in enumerate(groups)]
                if j >= self.d_min:
                    g = straight_through(base, self.skip_thresholds[i, j - self.d_min], t)
                    running = g if running is None else running * g  # nested: block j runs only if j-1 does
                    run, keep = [running], [g]
                else:
                    run, keep = [], []
                out[(i, j)] = {"kernel": kern, "expand": expa, "run": run, "keep": keep}
        return out

    @torch.no_grad()
    def read_spec(self) -> MBSpec:
        """The architecture the thresholds currently choose."""
        ind = self.indicators()
        spec = []
        for i, stage in enumerate(self.stages):
            blocks = []
            for j in range(len(stage)):
                d = ind[(i, j)]
                if d["run"] and d["run"][0].item() < 0.5:
                    break
                k = self.cfg.kernels[_leading_ones(d["kernel"])]
                e = self.cfg.expands[_leading_ones(d["expand"])]
                blocks.append((k, e))
            spec.append(tuple(blocks))
        return tuple(spec)

    # --- search-mode forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.search_mode:
            return super().forward(x)
        ind = self.indicators()
        self.last_indicators = ind  # the training step's latency term reuses this step's gates (same graph, computed once)
        x = self.first(self.stem(x))
        for i, stage in enumerate(self.stages):
            for j, blk in enumerate(stage):
                x = self._masked_block(blk, x, ind[(i, j)])
        return _head_forward(self, x)

    def _masked_block(self, blk: nn.Module, x: torch.Tensor, ind: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        cfg = self.cfg
        mids = [mid_channels(blk.in_ch, e) for e in cfg.expands]
        dev, dtype = x.device, x.dtype
        cm = _nested_mask(mids, ind["expand"], dev, dtype).view(1, -1, 1, 1)
        h = blk.expand(x) * cm
        w = blk.dw.conv.weight
        k_max = w.shape[-1]
        km = _nested_kernel_mask(cfg.kernels, k_max, ind["kernel"], dev, w.dtype)
        h = F.conv2d(h, w * km, None, blk.dw.conv.stride, k_max // 2, 1, w.shape[0])
        h = blk.dw.act(blk.dw.bn(h)) * cm
        if isinstance(blk.se, SqueezeExcite):
            sm = _nested_mask([se_channels(m) for m in mids], ind["expand"], dev, dtype).view(1, -1, 1, 1)
            s = h.mean((2, 3), keepdim=True)
            s = F.relu(blk.se.reduce(s)) * sm
            h = h * F.hardsigmoid(blk.se.expand(s))
        y = blk.project(h)
        if not blk.residual:
            return y
        return x + (ind["run"][0] * y if ind["run"] else y)


def _leading_ones(gates: list[torch.Tensor]) -> int:
    n = 0
    for g in gates:
        if g.item() < 0.5:
            break
        n += 1
    return n


def _nested_mask(bounds: list[int], gates: list[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``G_0 + g_1 * (G_1\\0 + g_2 * (...))`` over ``bounds[-1]`` channels (prefix groups)."""
    n = bounds[-1]
    idx = torch.arange(n, device=device)
    mask = (idx < bounds[0]).to(dtype)
    scale = torch.ones((), device=device, dtype=dtype)
    for lo, hi, g in zip(bounds[:-1], bounds[1:], gates):
        scale = scale * g
        mask = mask + scale * ((idx >= lo) & (idx < hi)).to(dtype)
    return mask


def _nested_kernel_mask(kernels: tuple[int, ...], k_max: int, gates: list[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Spatial ``k_max x k_max`` mask: the smallest kernel's window plus gated rings."""
    r = torch.arange(k_max, device=device)
    dist = torch.maximum((r - k_max // 2).abs()[:, None], (r - k_max // 2).abs()[None, :])  # Chebyshev radius
    mask = (dist <= kernels[0] // 2).to(dtype)
    scale = torch.ones((), device=device, dtype=dtype)
    for small, big, g in zip(kernels[:-1], kernels[1:], gates):
        scale = scale * g
        mask = mask + scale * ((dist > small // 2) & (dist <= big // 2)).to(dtype)
    return mask


__all__ = ["SinglePathMBSupernet", "straight_through"]
