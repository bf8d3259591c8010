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
from torch import nn

from supernets.blocks import mid_channels
from supernets.mbnet import MBNetConfig, MBSpec, MBSupernet, _head_forward
from supernets.mixed import masked_block_output


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
            ring[
                ...,
                window(small).start - window(big).start : window(small).stop - window(big).start,
                window(small).start - window(big).start : window(small).stop - window(big).start,
            ] = 0
            n_ring = big * big - small * small
            rings.append(ring.pow(2).sum().div(mids[0] * n_ring).sqrt())
        groups = [
            _rms(w[lo:hi, :, window(kernels[0]), window(kernels[0])]) for lo, hi in zip(mids[:-1], mids[1:])
        ]
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

    @torch.no_grad()
    def switch_off_weakest(self) -> bool:
        """Switch off the chosen network's outermost extension whose weights clear their threshold by the
        least.

        The threshold is raised just above the weights' RMS, so the thresholds themselves now choose the
        smaller network (read-off, search mode and extraction stay one network). Returns False when every
        extension is already off (the smallest network).
        """
        candidates: list[tuple[float, torch.Tensor, tuple[int, ...], torch.Tensor]] = []
        for i, stage in enumerate(self.stages):
            for j in range(len(stage)):
                rings, groups, base = self._block_groups(i, j)
                if j >= self.d_min and not bool(base > self.skip_thresholds[i, j - self.d_min]):
                    break  # this block and the later ones of the stage are skipped
                for scores, thresholds in ((rings, self.kernel_thresholds), (groups, self.expand_thresholds)):
                    on = _leading_ones([(r > thresholds[i, j, n]).float() for n, r in enumerate(scores)])
                    if on:
                        n = on - 1
                        candidates.append(
                            (float(scores[n] - thresholds[i, j, n]), thresholds, (i, j, n), scores[n])
                        )
                last_run = j == len(stage) - 1 or not bool(
                    self._block_groups(i, j + 1)[2] > self.skip_thresholds[i, j + 1 - self.d_min]
                )
                if j >= self.d_min and last_run:
                    idx = (i, j - self.d_min)
                    candidates.append(
                        (float(base - self.skip_thresholds[idx]), self.skip_thresholds, idx, base)
                    )
        if not candidates:
            return False
        _, thresholds, idx, score = min(candidates, key=lambda c: c[0])
        thresholds[idx] = score * (1 + 1e-4) + 1e-8
        return True

    # --- search-mode forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.search_mode:
            return super().forward(x)
        ind = self.indicators()
        self.last_indicators = (
            ind  # the training step's latency term reuses this step's gates (same graph, computed once)
        )
        x = self.first(self.stem(x))
        for i, stage in enumerate(self.stages):
            for j, blk in enumerate(stage):
                x = self._masked_block(blk, x, ind[(i, j)])
        return _head_forward(self, x)

    def _masked_block(
        self, blk: nn.Module, x: torch.Tensor, ind: dict[str, list[torch.Tensor]]
    ) -> torch.Tensor:
        y = masked_block_output(
            blk, x, self.cfg.kernels, self.cfg.expands, _cumulative(ind["kernel"]), _cumulative(ind["expand"])
        )
        if not blk.residual:
            return y
        return x + (ind["run"][0] * y if ind["run"] else y)


def _cumulative(gates: list[torch.Tensor]) -> list[torch.Tensor]:
    """Nested gates ``g_1, g_2, ...`` as survival scales ``g_1, g_1 g_2, ...``."""
    out, scale = [], None
    for g in gates:
        scale = g if scale is None else scale * g
        out.append(scale)
    return out


def _leading_ones(gates: list[torch.Tensor]) -> int:
    n = 0
    for g in gates:
        if g.item() < 0.5:
            break
        n += 1
    return n


__all__ = ["SinglePathMBSupernet", "straight_through"]
