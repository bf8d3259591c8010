"""Batch augmentation: a function of the generator state and of the global batch, whatever the sharding."""

from __future__ import annotations

import pytest
import torch

from nas.training.augment import augment_batch


def _batch(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, 10, 12, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["crop", "crop_flip"])
def test_two_shards_of_one_batch_are_augmented_as_the_whole_batch(mode):
    x = _batch(8)
    whole = augment_batch(x, mode, torch.Generator().manual_seed(5))
    # each "rank" holds the same generator and its half of the batch
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    halves = [augment_batch(x[i * 4 : (i + 1) * 4], mode, gens[i], offset=4 * i, total=8) for i in range(2)]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(whole, x)  # something was augmented
    # every rank's generator advanced exactly as the single process's did: the next batch agrees too
    ref = torch.Generator().manual_seed(5)
    augment_batch(x, mode, ref)
    for g in gens:
        assert torch.equal(g.get_state(), ref.get_state())


def test_shards_with_identical_images_get_different_draws():
    """Two ranks with the same generator must not augment their shards identically (the old behaviour)."""
    one = _batch(1)
    x = one.expand(16, -1, -1, -1).contiguous()  # 16 copies of one image: shards hold identical images
    lo = augment_batch(x[:8], "crop_flip", torch.Generator().manual_seed(1), offset=0, total=16)
    hi = augment_batch(x[8:], "crop_flip", torch.Generator().manual_seed(1), offset=8, total=16)
    assert not torch.equal(lo, hi)


def test_whole_batch_draws_are_unchanged_by_the_default_arguments():
    """Without offset/total the whole batch is augmented as before (checkpointed streams keep their
    meaning)."""
    x = _batch(6)
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(3))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(3), offset=0, total=6)
    assert torch.equal(a, b)


def test_a_shard_outside_the_batch_is_refused():
    x = _batch(4)
    with pytest.raises(ValueError, match="offset 2 does not fit a batch of 5"):
        augment_batch(x, "crop", torch.Generator(), offset=2, total=5)
