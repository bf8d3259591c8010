"""`nas finetune`: the exported network trained alone, from inherited weights or from scratch, resumable,
tracked."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nas_runs import sigkill_when

from nas.cli import main
from nas.evaluation import accuracy
from nas.finetune import FinetuneTrackers, initial_network
from nas.run.context import build_space, load_config_data, resolve_config
from nas.run.files import RunLock
from nas.run.tracking import Trackers

# tiny digits at 16 px, 384 training images; a spec latency profile, so no calibration
RUN = [
    "--space=tiny",
    "--data.resolution=16",
    "--data.train_limit=384",
    "--trackers=jsonl",
    "--train.bn_recal_batches=2",
    "--epochs=2",
    "--trials=2",
    "--search.controller=random",
    "--search.devices=mobile-big-core",
    "--format=torch",
    "--export.latency_repeats=3",
]


def _main_json(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--json", "--quiet"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A run directory with a trained supernet and a torch export (one fast `nas run`)."""
    run_dir = tmp_path_factory.mktemp("finetune") / "run"
    _main_json("run", "--run-dir", str(run_dir), *RUN)
    return run_dir


@pytest.fixture(scope="module")
def finetuned(exported: Path) -> tuple[Path, dict]:
    """`nas finetune --epochs 2` (inherited) on that run, and its --json summary."""
    return exported, _main_json("finetune", "--run-dir", str(exported), "--epochs", "2")


def _test_accuracy(run_dir: Path, net: torch.nn.Module) -> float:
    cfg = resolve_config(run_dir, None, [])
    data = load_config_data(cfg)
    return accuracy(net, torch.utils.data.DataLoader(data.test, batch_size=128), torch.device("cpu"))


def test_inherited_starts_at_the_exported_accuracy_and_training_moves_the_weights(finetuned):
    from nas import load_subnet

    run_dir, summary = finetuned
    out = run_dir / "finetune" / "inherited"
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    # the start is the export as saved (weights and BN statistics): same accuracy, to the last image
    assert (
        summary["val_accuracy_before"] == meta["val_accuracy"]
        and summary["test_accuracy_before"] == meta["test_accuracy"]
    )
    result = json.loads((out / "result.json").read_text())
    assert (
        result["init"] == "inherited"
        and result["epochs"] == 2
        and [h["epoch"] for h in result["history"]] == [1, 2]
    )
    assert result["seconds"] > 0 and result["val_accuracy_after"] == result["history"][-1]["val_acc"]
    assert {k: result[k] for k in ("val_accuracy_after", "test_accuracy_after")} == {
        k: summary[k] for k in ("val_accuracy_after", "test_accuracy_after")
    }
    # the output loads like an export and is the trained network, not the exported one
    net = load_subnet(out)
    exported_state = torch.load(run_dir / "export" / "model.pt", weights_only=True)
    assert set(net.state_dict()) == set(exported_state)
    assert any(
        not torch.equal(v, exported_state[k]) for k, v in net.state_dict().items() if v.is_floating_point()
    )
    assert _test_accuracy(run_dir, net) == pytest.approx(result["test_accuracy_after"], abs=1e-12)
    assert json.loads((out / "meta.json").read_text())["formats"]["torch"]["ok"] is True
    # tracked in the run's event log under its own kind; the supernet's epoch curve is untouched
    events = _events(run_dir)
    assert [e["step"] for e in events if e["kind"] == "finetune/inherited/epoch"] == [1, 2]
    assert [e["step"] for e in events if e["kind"] == "epoch"] == [1, 2]
    assert any(
        e["kind"] == "finetune/inherited/result" and e["test_accuracy_after"] == result["test_accuracy_after"]
        for e in events
    )


def test_finished_finetune_is_reported_not_retrained(finetuned):
    run_dir, summary = finetuned
    ckpt = run_dir / "finetune" / "inherited" / "checkpoint.pt"
    before, n_events = ckpt.stat().st_mtime_ns, len(_events(run_dir))
    again = _main_json(
        "finetune", "--run-dir", str(run_dir)
    )  # no flags: the folder's saved recipe (2 epochs) applies
    assert (
        again["already_done"] is True
        and ckpt.stat().st_mtime_ns == before
        and len(_events(run_dir)) == n_events
    )
    assert {k: again[k] for k in ("val_accuracy_after", "test_accuracy_after", "epochs")} == {
        k: summary[k] for k in ("val_accuracy_after", "test_accuracy_after", "epochs")
    }


def test_changed_recipe_or_run_settings_are_refused(finetuned, capsys):
    run_dir, _ = finetuned
    saved = (run_dir / "finetune" / "inherited" / "config.yaml").read_text()
    assert main(["finetune", "--run-dir", str(run_dir), "--quiet", "--epochs", "3", "--train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs, train.lr" in err and "started with other settings" in err and "Traceback" not in err
    assert main(["finetune", "--run-dir", str(run_dir), "--quiet", "--space.width_mult=1.0"]) == 2
    assert "cannot change space.width_mult" in capsys.readouterr().err
    assert (run_dir / "finetune" / "inherited" / "config.yaml").read_text() == saved


def test_scratch_differs_from_inherited_at_step_zero_and_both_coexist(finetuned):
    from nas import load_subnet

    exported, _ = finetuned
    inherited_result = (exported / "finetune" / "inherited" / "result.json").read_text()
    cfg = resolve_config(exported, None, [])
    space = build_space(cfg)
    export_dir = exported / "export"
    inherited = initial_network(space, export_dir, "inherited", cfg.seed).state_dict()
    scratch = initial_network(space, export_dir, "scratch", cfg.seed).state_dict()
    saved = torch.load(export_dir / "model.pt", weights_only=True)
    assert all(torch.equal(inherited[k], saved[k]) for k in saved)
    assert {k: v.shape for k, v in scratch.items()} == {k: v.shape for k, v in inherited.items()}
    convs = [k for k, v in scratch.items() if v.ndim == 4]
    assert convs and all(not torch.equal(scratch[k], inherited[k]) for k in convs)
    assert all(
        torch.equal(v, initial_network(space, export_dir, "scratch", cfg.seed).state_dict()[k])
        for k, v in scratch.items()
    )  # seeded

    # a start that fails before its first checkpoint binds no recipe: the corrected command runs
    assert (
        main(
            [
                "finetune",
                "--run-dir",
                str(exported),
                "--quiet",
                "--init",
                "scratch",
                "--train.accumulate=1000",
            ]
        )
        == 2
    )
    # end to end, with an EMA recipe: the output holds the averaged weights
    summary = _main_json(
        "finetune", "--run-dir", str(exported), "--init", "scratch", "--epochs", "1", "--train.ema_decay=0.5"
    )
    out = exported / "finetune" / "scratch"
    assert summary["init"] == "scratch" and summary["ema"] is True and (out / "result.json").exists()
    ema = torch.load(out / "checkpoint.pt", weights_only=False)["ema"]
    trained = load_subnet(out)
    assert all(torch.equal(p, ema[n]) for n, p in trained.named_parameters())
    assert summary["test_accuracy_after"] == pytest.approx(_test_accuracy(exported, trained), abs=1e-12)
    assert (
        exported / "finetune" / "inherited" / "result.json"
    ).read_text() == inherited_result  # both coexist
    assert any(e["kind"] == "finetune/scratch/epoch" for e in _events(exported))


def test_resume_after_sigkill_is_bit_identical(exported, tmp_path):
    """Kill a fine-tuning once its first epoch checkpoint exists, run the same command again: same weights as
    uninterrupted."""
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    for d in (ref, victim):
        shutil.copytree(exported, d, ignore=shutil.ignore_patterns("finetune", ".lock"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # both processes compute with the same number of threads

    def cmd(d: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nas.cli",
            "finetune",
            "--run-dir",
            str(d),
            "--epochs",
            "4",
            "--train.deterministic=true",
            "--quiet",
        ]

    ref_proc = subprocess.Popen(
        cmd(ref), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    proc = subprocess.Popen(cmd(victim), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = victim / "finetune" / "inherited" / "checkpoint.pt"
    sigkill_when(proc, ckpt.exists, timeout=120, poll=0.02)
    assert proc.returncode == -signal.SIGKILL and ckpt.exists()
    assert not (victim / "finetune" / "inherited" / "result.json").exists()
    assert 1 <= torch.load(ckpt, weights_only=False)["epoch"] < 4
    res = subprocess.run(cmd(victim)[:-1], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming training at epoch" in res.stderr
    assert ref_proc.wait(timeout=300) == 0, ref_proc.stderr.read()
    a = torch.load(ref / "finetune" / "inherited" / "model.pt", weights_only=True)
    b = torch.load(victim / "finetune" / "inherited" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ra, rb = (json.loads((d / "finetune" / "inherited" / "result.json").read_text()) for d in (ref, victim))
    assert [h["train_loss"] for h in ra["history"]] == [h["train_loss"] for h in rb["history"]]
    assert ra["test_accuracy_after"] == rb["test_accuracy_after"]


def test_without_an_export_it_says_what_to_run(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["finetune", "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        f"run `nas export --run-dir {run_dir}` first" in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )
    assert not run_dir.exists()  # nothing created
    (run_dir / "export").mkdir(parents=True)
    (run_dir / "export" / "arch.json").write_text("{}")
    (run_dir / "export" / "model.pt").write_bytes(b"")
    assert main(["finetune", "--run-dir", str(run_dir), "--quiet"]) == 2
    assert "incomplete (missing space.json, meta.json)" in capsys.readouterr().err


def test_a_second_process_gets_the_lock_message(exported, capsys):
    with RunLock(exported):
        assert main(["finetune", "--run-dir", str(exported), "--quiet", "--init", "scratch"]) == 2
    assert f"another process (pid {os.getpid()}) is using run directory {exported}" in capsys.readouterr().err


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log(self, kind, step, values):
        self.calls.append(("log", kind, step))

    def log_table(self, name, columns, rows):
        self.calls.append(("table", name))

    def log_figure(self, name, path):
        self.calls.append(("figure", name))

    def summary(self, values):
        self.calls.append(("summary", dict(values)))

    def close(self):
        self.calls.append(("close",))


def test_every_backend_gets_the_prefixed_kind_and_stays_open():
    backend = _Recorder()
    inner = Trackers([backend])
    fin = FinetuneTrackers(inner, "finetune/scratch")
    fin.log("epoch", 3, {"val_acc": 0.5})
    fin.log("train_step", 10, {"loss": 1.0})
    fin.close()
    assert backend.calls == [("log", "finetune/scratch/epoch", 3), ("log", "finetune/scratch/train_step", 10)]
    inner.close()
    assert backend.calls[-1] == ("close",)
