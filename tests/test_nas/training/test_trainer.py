"""Training recipe pieces: exact resume, distillation, EMA, accumulation, AMP, BN momentum, augmentation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from nas.run.context import open_run
from nas.training.augment import augment_batch
from nas.training.checkpoint import checkpoint_path, load_supernet
from nas.training.plans import SupernetPlan
from nas.training.trainer import Trainer, distillation_loss, lr_factor, train_supernet

TINY = ["space.name=tiny", "data.resolution=16", "trackers=jsonl", "data.train_limit=512"]


def _ctx(tmp_path, *settings):
    return open_run(tmp_path, overrides=[*TINY, *settings], progress=False, quiet=True)


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    """Killed mid-epoch at a step checkpoint and restarted: final weights equal an uninterrupted run's."""
    settings = [
        "--space=tiny",
        "--data.resolution=16",
        "--trackers=jsonl",
        "--data.train_limit=512",
        "--epochs=3",
        "--train.checkpoint_every_steps=2",
        "--train.deterministic=true",
        "--train.ema_decay=0.9",
        "--quiet",
    ]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    base = [sys.executable, "-m", "nas.cli", "train"]
    subprocess.run(
        [*base, "--run-dir", str(ref_dir), *settings], check=True, capture_output=True, timeout=300
    )
    proc = subprocess.Popen(
        [*base, "--run-dir", str(run_dir), *settings], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = checkpoint_path(run_dir)
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and ckpt.exists()
    state = torch.load(ckpt, weights_only=False)
    assert (state["epoch"], state["position"]["step_in_epoch"]) < (3, 0) or state["epoch"] < 3
    resumed = subprocess.run(  # not --quiet: the resumed process says where it starts again
        [*base, "--run-dir", str(run_dir), *(s for s in settings if s != "--quiet")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    step = state["position"]["step_in_epoch"]
    where = f"epoch {state['epoch'] + 1}/3" + (f", step {step}" if step else "")
    assert f"resuming training at {where}\n" in resumed.stderr, resumed.stderr
    a, b = torch.load(checkpoint_path(ref_dir), weights_only=False), torch.load(ckpt, weights_only=False)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]


def test_distillation_loss_is_zero_for_the_teacher_and_trains_the_student():
    teacher = torch.randn(8, 5)
    assert distillation_loss(teacher.clone(), teacher, 2.0).abs().item() < 1e-6
    student = torch.randn(8, 5, requires_grad=True)
    loss = distillation_loss(student, teacher, 2.0)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    # "trains": a gradient step on the student brings it closer to the teacher
    with torch.no_grad():
        stepped = student - 0.5 * student.grad
    assert distillation_loss(stepped, teacher, 2.0).item() < loss.item()


def _train_recording_distillation(run_dir, monkeypatch, *settings):
    """Train one epoch; returns the metrics, the trained weights and, for every distillation term the
    trainer computed, (its value, whether the subnet it was computed for was the teacher)."""
    import nas.training.trainer as trainer_module

    calls: list[tuple[float, bool]] = []
    real = trainer_module.distillation_loss
    with _ctx(
        run_dir, "train.epochs=1", "train.deterministic=true", "data.train_limit=128", *settings
    ) as ctx:
        teacher_spec = ctx.space.to_spec(ctx.space.largest())
        model_box: list = []
        build = ctx.build_supernet

        def build_and_keep():
            net = build()
            model_box.append(net)
            return net

        def spy(student, teacher, temperature):
            value = real(student, teacher, temperature)
            calls.append((float(value.detach()), model_box[0].active_spec == teacher_spec))
            return value

        monkeypatch.setattr(ctx, "build_supernet", build_and_keep)
        monkeypatch.setattr(trainer_module, "distillation_loss", spy)
        metrics = train_supernet(ctx)
        weights = torch.load(checkpoint_path(ctx.run_dir), weights_only=False)["model"]
    monkeypatch.setattr(trainer_module, "distillation_loss", real)
    return metrics, weights, calls


@pytest.mark.parametrize("sampler", ["uniform", "sandwich", "fair", "sorted", "progressive"])
def test_every_sampler_trains_with_distillation(tmp_path, monkeypatch, sampler):
    """With distillation every sampler's non-teacher subnets get a non-zero distillation term, and it changes
    the loss and the trained weights (against the same run without distillation)."""
    metrics, weights, calls = _train_recording_distillation(
        tmp_path / "distill", monkeypatch, f"train.sampler={sampler}", "train.distill=true"
    )
    assert metrics["epoch"] == 1 and metrics["train_loss"] > 0
    assert calls, "no distillation term was computed"
    assert all(not for_teacher for _, for_teacher in calls)  # only students are distilled
    assert all(value > 0 for value, _ in calls)  # ... and the term is non-zero for each of them
    plain_metrics, plain_weights, plain_calls = _train_recording_distillation(
        tmp_path / "plain", monkeypatch, f"train.sampler={sampler}", "train.distill=false"
    )
    assert plain_calls == []
    assert metrics["train_loss"] != plain_metrics["train_loss"]
    assert plain_weights.keys() == weights.keys()
    changed = [n for n in weights if not torch.equal(weights[n], plain_weights[n])]
    assert any(n.endswith("weight") and weights[n].dim() > 1 for n in changed), changed


def test_ema_weights_are_what_search_uses(tmp_path):
    with _ctx(tmp_path, "train.epochs=1", "train.ema_decay=0.5") as ctx:
        train_supernet(ctx)
        state = torch.load(checkpoint_path(ctx.run_dir), weights_only=False)
        net = load_supernet(ctx)
    name = "stem.conv.weight"
    assert not torch.equal(state["ema"][name], state["model"][name])
    assert torch.equal(net.state_dict()[name], state["ema"][name])


def test_accumulation_divides_optimizer_steps(tmp_path):
    with _ctx(tmp_path, "train.epochs=1", "train.accumulate=2") as ctx:
        trainer = Trainer(ctx, ctx.space.build_supernet(), SupernetPlan(ctx), None, seed=0)
        assert trainer.steps_per_epoch == len(ctx.loader("train", shuffle=True)) // 2
        trainer.fit()
        assert trainer.sched.last_epoch == trainer.steps_per_epoch


def test_bf16_autocast_step_on_cpu(tmp_path):
    with _ctx(tmp_path, "train.epochs=1", "train.amp=bf16", "train.channels_last=true") as ctx:
        metrics = train_supernet(ctx)
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))


def test_fp16_without_cuda_is_a_clear_error(tmp_path):
    with (
        _ctx(tmp_path, "train.amp=fp16", "device=cpu") as ctx,
        pytest.raises(ValueError, match="fp16 needs a CUDA device"),
    ):
        Trainer(ctx, ctx.space.build_supernet(), SupernetPlan(ctx), None, seed=0)


def test_bn_momentum_zero_never_tracks_statistics(tmp_path):
    with _ctx(tmp_path, "train.epochs=1", "train.bn_momentum=0") as ctx:
        net = ctx.space.build_supernet()
        trainer = Trainer(ctx, net, SupernetPlan(ctx), None, seed=0)
        before = net.stem.bn.running_mean.clone()
        x, y = next(iter(ctx.loader("train", shuffle=True)))
        trainer.train_step([(x, y)], 0)
        assert torch.equal(net.stem.bn.running_mean, before)


def test_bn_affine_false_keeps_scale_one_and_shift_zero_through_training(tmp_path):
    with _ctx(tmp_path, "train.epochs=1", "train.bn_affine=false") as ctx:
        net = ctx.space.build_supernet()
        with torch.no_grad():
            net.stem.bn.weight.fill_(0.5)  # frozen means reset to the identity, not kept at init
        trainer = Trainer(ctx, net, SupernetPlan(ctx), None, seed=0)
        trainer.fit()
        conv_before = ctx.space.build_supernet().stem.conv.weight
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine]
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert not torch.equal(net.stem.conv.weight, conv_before)  # the rest did train


def test_evaluating_only_the_last_epoch_changes_nothing_but_the_time(tmp_path):
    from nas.training.plans import FixedPlan

    finals = []
    for last_only in (False, True):
        with _ctx(tmp_path / str(last_only), "train.epochs=2") as ctx:
            model = ctx.space.build_standalone(ctx.space.largest(), seed=0)
            trainer = Trainer(ctx, model, FixedPlan(), None, seed=0, evaluate_last_only=last_only)
            finals.append(trainer.fit())
            assert ("val_acc" in trainer.pos.history[0]) != last_only
    assert finals[0]["val_acc"] == finals[1]["val_acc"]  # the standalone ground truth is unchanged


def test_lr_schedules_warm_up_then_decay_or_hold():
    cosine, constant = lr_factor(100, 10, "cosine"), lr_factor(100, 10, "constant")
    assert cosine(0) == constant(0) == 0.1 and cosine(9) == constant(9) == 1.0
    assert cosine(55) == pytest.approx(0.5) and cosine(99) < 0.01
    assert all(constant(s) == 1.0 for s in range(10, 100))
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(100, 10, "step")


def test_augment_shifts_and_flips_deterministically():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(3))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(augment_batch(x, "none", torch.Generator()), x)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(x, "rotate", torch.Generator())


def test_unknown_sampler_option_fails_before_training(tmp_path):
    from nas.commands.checks import check_sampler_options, validate_config
    from nas.run.config import ConfigError

    with pytest.raises(
        ConfigError, match="unknown option"
    ):  # what every training command checks before it writes anything
        open_run(
            tmp_path,
            overrides=[*TINY, "train.sampler=sandwich", "train.sampler_options={bogus: 1}"],
            progress=False,
            quiet=True,
            validate=validate_config,
            preflight=check_sampler_options,
        )
    assert not tmp_path.joinpath("config.yaml").exists()


def test_two_process_gloo_training_equals_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) on the same global batch gives the single-process weights, with
    augmentation on (each rank applies its part of the global batch's random crops and flips)."""
    import socket

    from nas.run.files import LOCK_NAME, RunLock

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = [
        "--space=tiny",
        "--data.resolution=16",
        "--trackers=jsonl",
        "--data.train_limit=256",
        "--epochs=1",
        "--train.sampler=sandwich",
        "--train.augment=crop_flip",
        "--quiet",
        "--json",
    ]
    single, multi = tmp_path / "single", tmp_path / "multi"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run(
        [sys.executable, "-m", "nas.cli", "train", "--run-dir", str(single), *settings],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "nas.cli",
            "train",
            "--run-dir",
            str(multi),
            *settings,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and '"world_size": 2' in summaries[0]  # only rank 0 reports
    a = torch.load(checkpoint_path(single), weights_only=False)["model"]
    b = torch.load(checkpoint_path(multi), weights_only=False)["model"]
    for name, tensor in a.items():
        assert torch.allclose(tensor.float(), b[name].float(), atol=1e-5, rtol=1e-4), name
    # rank 0 held the lock (the lock file is kept by design, with the holder's pid), and released it: the
    # directory can be locked exclusively again right away
    lock_file = multi / LOCK_NAME
    assert lock_file.is_file()
    holder = lock_file.read_text().split()
    assert len(holder) == 1 and holder[0].isdigit()  # the pid of the one process that locked it
    with RunLock(multi) as lock:
        assert lock.locked
    assert (
        subprocess.run(
            [sys.executable, "-m", "nas.cli", "train", "--run-dir", str(multi), "--quiet"],
            capture_output=True,
            timeout=120,
        ).returncode
        == 0
    )
