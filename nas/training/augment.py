"""Batch-wise augmentation on the training device (no per-image Python, no CPU round trip).

For small images the data loader is not the bottleneck if augmentation happens
on whole batches where the batch already lives (the GPU, when there is one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "crop_flip")


def augment_batch(
    x: torch.Tensor,
    mode: str,
    generator: torch.Generator,
    pad: int = 2,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill), optionally a horizontal flip per image.

    ``x`` may be one shard of a global batch of ``total`` images (default: ``x`` is the whole batch)
    starting at image ``offset``: the random parameters are drawn for all ``total`` images (so the
    generator advances exactly as for the whole batch) and the shard's slice of them is applied. The
    augmentation of the global batch is then a function of the generator state alone: every rank of a
    data-parallel run, each holding the same generator, augments its shard exactly as one process would
    augment those images of the whole batch.
    """
    if mode == "none":
        return x
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r}; use one of {AUGMENTATIONS}")
    n, _, h, w = x.shape
    total = n if total is None else total
    if offset < 0 or offset + n > total:
        raise ValueError(f"a shard of {n} images at offset {offset} does not fit a batch of {total}")
    dev = x.device
    part = slice(offset, offset + n)
    # random offsets per image of the whole batch, drawn on CPU from the trainer's generator so they are
    # checkpointable
    off = torch.randint(0, 2 * pad + 1, (2, total), generator=generator)[:, part].to(dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h, device=dev)[None, :] + off[0][:, None]  # [N, H]
    cols = torch.arange(w, device=dev)[None, :] + off[1][:, None]  # [N, W]
    if mode == "crop_flip":
        flip = torch.rand(total, generator=generator)[part].to(dev) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    c = x.shape[1]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))  # rows: [N, C, H, W+2p]
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))  # cols: [N, C, H, W]
