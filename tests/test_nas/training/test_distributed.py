"""Data-parallel building blocks: 2 CPU processes (gloo, loopback) must equal one process on the global
batch."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nas.training.distributed import (
    DistInfo,
    allreduce_gradients,
    barrier,
    broadcast_object,
    cleanup,
    enable_sync_bn,
    init_distributed,
    local_batch_norm,
    shard_batch,
)
from search_spaces import create_space
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d

WORLD = 2
TOL = 1e-5
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)


# --- process launching ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, out: str, *args) -> None:
    """Child process: torchrun's environment on loopback, one thread, then ``fn``."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    info = init_distributed(device="cpu")
    try:
        assert info == DistInfo(rank, WORLD, rank, rank == 0)
        assert init_distributed(device="cpu") == info  # idempotent
        result = fn(info, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup(info)


def _launch(fn, tmp_path: Path, *args, timeout: float = 60.0) -> list:
    """Run ``fn(info, *args)`` on 2 ranks; returns each rank's return value."""
    ctx = mp.start_processes(
        _entry, args=(fn, _free_port(), str(tmp_path), *args), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f}s (deadlock?)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape, what
    err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    assert err <= TOL, f"{what}: max abs diff {err:.3g}"


# --- synchronised batch norm ----------------------------------------------------------------
class _BNNet(nn.Module):
    """Elastic conv -> elastic BN (momentum 0.1) -> elastic BN (momentum None: cumulative average)."""

    def __init__(self):
        super().__init__()
        self.conv = ElasticConv2d(3, 8, 3)
        self.bn = ElasticBatchNorm2d(8)
        self.bn_cum = ElasticBatchNorm2d(8, momentum=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_cum(torch.relu(self.bn(self.conv(x))))


def _bn_setup():
    torch.manual_seed(0)
    net = _BNNet()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (net.bn, net.bn_cum):
            bn.weight.copy_(torch.rand(8, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(8, generator=gen) * 0.1)
    # global batch of 8; an offset mean exercises E[x^2] - mean^2
    xs = [torch.randn(8, 3, 6, 6, generator=gen) + 2.0 for _ in range(2)]
    ts = [torch.randn(8, 8, 6, 6, generator=gen) for _ in range(2)]
    return net, xs, ts


def _bn_steps(net: _BNNet, xs, ts, info: DistInfo) -> dict:
    """Two steps, each running the full width (8) and a slice (5); per-rank loss = mean over the local
    shard."""
    outs, x_grads, p_grads = [], [], []
    for x, t in zip(xs, ts):
        x, t = shard_batch(x, t, info)
        x = x.clone().requires_grad_()
        net.zero_grad(set_to_none=True)
        for width in (8, 5):
            net.conv.active_out = width
            y = net(x)
            loss = ((y - t[:, :width]) ** 2).mean()
            loss.backward()
            outs.append(y.detach())
        allreduce_gradients(net.parameters(), info)
        x_grads.append(x.grad)
        p_grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    return {"outs": outs, "x_grads": x_grads, "p_grads": p_grads, "state": net.state_dict()}


def _bn_worker(info: DistInfo) -> dict:
    net, xs, ts = _bn_setup()
    assert enable_sync_bn(net) == 2
    return _bn_steps(net.train(), xs, ts, info)


def test_sync_bn_equals_single_process_on_global_batch(tmp_path):
    ranks = _launch(_bn_worker, tmp_path)
    net, xs, ts = _bn_setup()
    ref = _bn_steps(net.train(), xs, ts, DistInfo(0, 1, 0, True))
    for i, y in enumerate(ref["outs"]):
        _assert_close(torch.cat([r["outs"][i] for r in ranks]), y, f"output {i}")
    for i, g in enumerate(ref["x_grads"]):
        # each rank's input gradient is that of the SUM of the ranks' mean losses = WORLD x the global mean's
        _assert_close(torch.cat([r["x_grads"][i] for r in ranks]) / WORLD, g, f"input grad {i}")
        for name, pg in ref["p_grads"][i].items():
            for (
                r
            ) in ranks:  # averaged parameter gradients equal the global mean loss's gradients on every rank
                _assert_close(r["p_grads"][i][name], pg, f"step {i} grad {name}")
    for name, v in ref["state"].items():
        for r in ranks:
            _assert_close(r["state"][name].float(), v.float(), name)
    assert ref["state"]["bn_cum.num_batches_tracked"].item() == 4


def test_sync_flag_without_process_group_is_bit_identical():
    net, xs, _ = _bn_setup()
    other, _, _ = _bn_setup()
    enable_sync_bn(other)
    net.conv.active_out = other.conv.active_out = 5
    assert torch.equal(net.train()(xs[0]), other.train()(xs[0]))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))


# --- the whole tiny supernet --------------------------------------------------------------------
def _tiny_space():
    return create_space("tiny", num_classes=4, in_channels=1)


def _train_tiny(net: nn.Module, info: DistInfo, steps: int = 3) -> dict:
    """The trainer's step: same sampled archs everywhere, loss / len(archs), one gradient all-reduce, SGD."""
    space = _tiny_space()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(steps):
        x, y = torch.randn(8, *space.input_shape, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        x, y = shard_batch(x, y, info)
        archs = [space.largest(), space.sample(rng), space.smallest()]
        opt.zero_grad(set_to_none=True)
        for arch in archs:
            net.set_active(space.to_spec(arch))
            (loss_fn(net(x), y) / len(archs)).backward()
        allreduce_gradients(net.parameters(), info, debug=True)
        opt.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def _tiny_worker(info: DistInfo, init_state: dict) -> dict:
    net = _tiny_space().build_supernet()
    net.load_state_dict(init_state)
    assert enable_sync_bn(net) == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    return _train_tiny(net, info)


def test_tiny_supernet_training_equals_single_process(tmp_path):
    torch.manual_seed(0)
    net = _tiny_space().build_supernet()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    ranks = _launch(_tiny_worker, tmp_path, init)
    ref = _train_tiny(net, DistInfo(0, 1, 0, True))
    assert any(not torch.equal(ref[k], init[k]) for k in ref if "running_var" in k)
    for name, v in ref.items():
        for r in ranks:
            _assert_close(r[name].float(), v.float(), name)


def test_supernet_bns_are_all_syncable_and_extraction_stays_plain():
    space = _tiny_space()
    net = space.build_supernet()
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, ElasticBatchNorm2d) for m in bns)
    assert enable_sync_bn(net) == len(bns)
    static = net.extract(space.to_spec(space.smallest()))
    assert all(type(m) is nn.BatchNorm2d for m in static.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(TypeError, match="not ElasticBatchNorm2d"):
        enable_sync_bn(static)


# --- the smaller helpers ----------------------------------------------------------------------
def _helpers_worker(info: DistInfo) -> dict:
    # unused parameters keep no gradient; used ones are averaged
    used, unused = nn.Linear(3, 2), nn.Linear(3, 2)
    ((info.rank + 1) * used(torch.ones(1, 3)).sum()).backward()
    allreduce_gradients([*used.parameters(), *unused.parameters()], info, debug=True)
    assert unused.weight.grad is None and unused.bias.grad is None
    assert torch.allclose(used.weight.grad, torch.full((2, 3), 1.5))  # mean of 1x and 2x
    # ranks that disagree on which parameters have gradients are caught in debug mode
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    (a if info.rank == 0 else b).grad = torch.ones(2 if info.rank == 0 else 3)
    with pytest.raises(RuntimeError, match="different parameters"):
        allreduce_gradients([a, b], info, debug=True)
    # objects come from rank 0
    step = broadcast_object({"step": 17} if info.is_main else None, info)
    # rank-0-only training-mode forward of a synced BN must not block
    bn = ElasticBatchNorm2d(4)
    enable_sync_bn(bn)
    if info.is_main:
        with local_batch_norm(bn):
            bn(torch.randn(3, 4, 2, 2))
        assert bn.sync
    barrier(info)
    return {"step": step}


def test_helpers_across_ranks(tmp_path):
    ranks = _launch(_helpers_worker, tmp_path)
    assert [r["step"] for r in ranks] == [{"step": 17}] * WORLD


def test_shard_batch_slices_and_rejects_uneven_batches():
    x, y = torch.arange(12).view(6, 2), torch.arange(6)
    xs, ys = shard_batch(x, y, DistInfo(1, 3, 1, False))
    assert torch.equal(xs, x[2:4]) and torch.equal(ys, y[2:4])
    with pytest.raises(ValueError, match="divisible by 4 or drop_last"):
        shard_batch(x, y, DistInfo(0, 4, 0, True))
    single = DistInfo(0, 1, 0, True)
    assert shard_batch(x, y, single)[0] is x


def test_helpers_are_noops_in_a_single_process():
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    info = DistInfo(0, 1, 0, True)
    allreduce_gradients([p, nn.Parameter(torch.ones(1))], info, debug=True)
    assert torch.equal(p.grad, torch.full((2,), 3.0))
    assert broadcast_object(5, info) == 5
    barrier(info)
    assert not dist.is_initialized()


def test_init_distributed_without_torchrun_env_initialises_nothing(monkeypatch):
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert init_distributed() == DistInfo(rank=0, world_size=1, local_rank=0, is_main=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed().world_size == 1
    assert not dist.is_initialized()
