"""Tracking: JSONL event log, TensorBoard read back with its own reader, wandb offline, fan-out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nas.run import tracking
from nas.run.files import RunDirError
from nas.run.tracking import (
    JsonlTracker,
    TensorBoardTracker,
    Tracker,
    Trackers,
    TrackingWarning,
    WandbTracker,
    make_trackers,
    read_events,
    resolve_wandb_mode,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network or touch the real home directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)


class Recorder:
    """A tracker that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def log(self, kind: str, step: int, values: Any) -> None:
        self.calls.append(("log", (kind, step, dict(values))))

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        self.calls.append(("log_table", (name, columns, rows)))

    def log_figure(self, name: str, path: str | Path) -> None:
        self.calls.append(("log_figure", (name, path)))

    def summary(self, values: Any) -> None:
        self.calls.append(("summary", (dict(values),)))

    def close(self) -> None:
        self.calls.append(("close", ()))


class Broken(Recorder):
    """A tracker whose every call fails."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("log", "log_table", "log_figure", "summary", "close"):
            raise ConnectionError(f"{name}: backend unreachable")
        return super().__getattribute__(name)


def _png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((8, 12, 3), 200, dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- JSONL


def test_jsonl_writes_one_object_per_event_and_appends_on_reopen(tmp_path: Path) -> None:
    t = JsonlTracker(tmp_path)
    assert isinstance(t, Tracker)
    t.log("train", 0, {"loss": 2.5, "arch": "k3e4"})
    t.log("train", 1, {"loss": np.float32(1.5), "n": torch.tensor(7)})  # numpy/torch scalars
    t.close()
    t.close()  # idempotent

    t = JsonlTracker(tmp_path)
    t.log("eval", 1, {"acc": 0.75})
    t.log_table("front", ["latency", "acc"], [[1.0, 0.7], [2.0, 0.8]])
    t.log_figure("pareto", tmp_path / "pareto.png")
    t.summary({"best_acc": 0.8})
    t.close()

    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 6
    parsed = [json.loads(line) for line in lines]
    assert parsed == read_events(tmp_path)
    assert parsed[0]["kind"] == "train" and parsed[0]["step"] == 0 and parsed[0]["loss"] == 2.5
    assert parsed[1]["loss"] == 1.5 and parsed[1]["n"] == 7
    assert all(isinstance(e["time"], float) for e in parsed)
    assert parsed[2] == {"time": parsed[2]["time"], "kind": "eval", "step": 1, "acc": 0.75}
    assert parsed[3]["kind"] == "table" and parsed[3]["rows"] == [[1.0, 0.7], [2.0, 0.8]]
    assert parsed[4]["path"] == "pareto.png"  # relative to the run dir
    assert parsed[5]["kind"] == "summary" and parsed[5]["best_acc"] == 0.8


def test_jsonl_rejects_reserved_fields_and_unserialisable_values(tmp_path: Path) -> None:
    t = JsonlTracker(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        t.log("train", 0, {"step": 3})
    with pytest.raises(TypeError, match="object"):
        t.log("train", 0, {"x": object()})
    t.close()
    assert read_events(tmp_path) == []


def test_read_events_skips_truncated_last_line(tmp_path: Path) -> None:
    t = JsonlTracker(tmp_path)
    t.log("train", 0, {"loss": 1.0})
    t.log("train", 1, {"loss": 0.9})
    t.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"time": 1.0, "kind": "train", "st')  # killed mid-write
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e["step"] for e in read_events(tmp_path)] == [0, 1]

    # resuming cuts the partial line, so new events start on a line of their own
    t = JsonlTracker(tmp_path)
    t.log("train", 2, {"loss": 0.8})
    t.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e["step"] for e in read_events(tmp_path)] == [0, 1, 2]


def test_read_events_warns_about_corrupt_middle_line(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text('{"kind": "a", "step": 0}\nnot json\n{"kind": "b", "step": 1}\n')
    with pytest.warns(TrackingWarning, match="events.jsonl:2"):
        assert [e["kind"] for e in read_events(tmp_path)] == ["a", "b"]
    with pytest.raises(RunDirError, match="events.jsonl"):
        read_events(tmp_path / "missing")


def test_jsonl_survives_sigkill(tmp_path: Path) -> None:
    """Every line is flushed: a process killed without closing loses nothing already logged."""
    code = textwrap.dedent("""
        import sys, time
        from nas.run.tracking import JsonlTracker
        t = JsonlTracker(sys.argv[1])
        for i in range(50):
            t.log("train", i, {"loss": 1.0 / (i + 1)})
        print("logged", flush=True)
        time.sleep(60)
        """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "logged"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [e["step"] for e in read_events(tmp_path)] == list(range(50))


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_read_back_with_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = TensorBoardTracker(tmp_path)
    for step in range(3):
        t.log("train", step, {"loss": 1.0 / (step + 1), "lr": np.float64(0.1), "arch": "k3e4"})
    t.log("eval", 2, {"acc": 0.5, "ok": True})
    t.log_table("front", ["latency", "acc"], [[1.0, 0.7], ["a|b", None]])
    t.log_figure("pareto", _png(tmp_path / "pareto.png"))
    t.summary({"best_acc": 0.5})
    t.close()

    acc = EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["scalars"]) == {"train/loss", "train/lr", "eval/acc", "eval/ok"}
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.1] * 3)
    assert [(e.step, e.value) for e in acc.Scalars("eval/acc")] == [(2, 0.5)]
    assert [e.value for e in acc.Scalars("eval/ok")] == [1.0]
    assert "pareto" in tags["images"]
    image = acc.Images("pareto")[0]
    assert (image.width, image.height) == (12, 8)
    assert {"front/text_summary", "summary/text_summary", "train/arch/text_summary"} <= set(tags["tensors"])
    table = acc.Tensors("front/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.startswith("| latency | acc |") and "a\\|b" in table


# --------------------------------------------------------------------------- wandb


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_offline_run_and_resume(tmp_path: Path, record_property: Any) -> None:
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    t = WandbTracker(run_dir, config={"lr": 0.1})
    init_s = time.perf_counter() - start
    record_property("wandb_offline_init_s", round(init_s, 2))
    print(f"\nwandb offline init took {init_s:.2f} s")
    assert init_s < 60
    assert t.active and t.mode == "offline"
    run_id = t.run_id
    assert run_id and (run_dir / "wandb_id.txt").read_text().strip() == run_id

    t.log("train", 0, {"loss": 1.0, "arch": "k3e4"})
    t.log("train", 1, {"loss": 0.5})
    t.log("eval", 0, {"acc": 0.5})  # a second step axis must not be dropped
    t.log_table("front", ["latency", "acc"], [[1.0, 0.7], [2.0, None]])
    t.log_figure("pareto", _png(tmp_path / "pareto.png"))
    t.summary({"best_acc": 0.5})
    t.close()
    assert not t.active
    t.log("train", 2, {"loss": 0.1})  # no-op after close

    runs = _offline_runs(run_dir)
    assert len(runs) == 1 and runs[0].name.endswith(f"-{run_id}")
    assert (runs[0] / f"run-{run_id}.wandb").stat().st_size > 0
    media = {p.parent.name for p in (runs[0] / "files" / "media").rglob("*") if p.is_file()}
    assert {"table", "images"} <= media

    # a second tracker on the same run dir continues the same wandb run
    again = WandbTracker(run_dir)
    assert again.active and again.run_id == run_id
    again.log("train", 2, {"loss": 0.25})
    again.close()
    runs = _offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.startswith("offline-run-") and f"-{run_id}" in r.name for r in runs)


def test_wandb_mode_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_wandb_mode("disabled") == "disabled"  # explicit wins over env
    assert resolve_wandb_mode() == "offline"  # from WANDB_MODE
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode() == "offline"  # not configured
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")

    netrc = Path.home() / ".netrc"
    netrc.write_text("machine example.com\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode() == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode() == "online"
    # a self-hosted server, and whatever server this wandb version logs in to by default
    import wandb

    for url in ("https://wandb.example.org", wandb.Settings.model_fields["base_url"].default):
        host = url.split("//")[1].split("/")[0]
        netrc.write_text(f"machine {host}\n  login user\n  password " + "k" * 40 + "\n")
        monkeypatch.delenv("WANDB_BASE_URL", raising=False)
        if "example.org" in url:
            assert resolve_wandb_mode() == "offline"
            monkeypatch.setenv("WANDB_BASE_URL", url)
        assert resolve_wandb_mode() == "online"
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"
    assert resolve_wandb_mode("offline") == "offline"


def test_wandb_init_failure_degrades_to_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def unreachable(**kwargs: Any) -> None:
        raise wandb.errors.CommError("init timed out")

    monkeypatch.setattr(wandb, "init", unreachable)
    with pytest.warns(TrackingWarning, match="init timed out") as record:
        t = WandbTracker(tmp_path, mode="online")
    assert len(record) == 1
    assert not t.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.log("train", 0, {"loss": 1.0})
        t.log_table("t", ["a"], [[1]])
        t.summary({"a": 1})
        t.close()


def test_wandb_missing_package_degrades_to_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.warns(TrackingWarning, match="cannot import wandb"):
        t = WandbTracker(tmp_path)
    assert not t.active
    t.log("train", 0, {"loss": 1.0})
    t.close()


def test_wandb_disabled_mode_does_nothing(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = WandbTracker(tmp_path, mode="disabled")
    assert not t.active and not (tmp_path / "wandb").exists()
    t.log("train", 0, {"loss": 1.0})
    t.close()


# --------------------------------------------------------------------------- fan-out


def test_failing_tracker_warns_and_others_still_get_events(tmp_path: Path) -> None:
    good = Recorder()
    jsonl = JsonlTracker(tmp_path)
    with pytest.warns(TrackingWarning) as record:
        with Trackers([jsonl, Broken(), good]) as trackers:
            assert len(trackers) == 3
            trackers.log("train", 3, {"loss": 0.5})
            trackers.log_table("t", ["a"], [[1]])
            trackers.log_figure("f", "f.png")
            trackers.summary({"best": 1})
    assert [str(w.message).split(":")[0] for w in record] == [
        f"Broken.{m} failed" for m in ("log", "log_table", "log_figure", "summary", "close")
    ]
    assert all(w.filename == __file__ for w in record[:4])  # points at the caller, not at tracking.py
    assert [c[0] for c in good.calls] == ["log", "log_table", "log_figure", "summary", "close"]
    assert good.calls[0] == ("log", ("train", 3, {"loss": 0.5}))
    assert [e["kind"] for e in read_events(tmp_path)] == ["train", "table", "figure", "summary"]


def test_jsonl_errors_propagate_but_everything_is_closed(tmp_path: Path) -> None:
    good = Recorder()
    trackers = Trackers([JsonlTracker(tmp_path), good])
    with pytest.raises(ValueError, match="reserved"):
        trackers.log("train", 0, {"kind": "x"})

    class BadClose(JsonlTracker):
        def close(self) -> None:
            super().close()
            raise OSError("disk full")

    trackers = Trackers([BadClose(tmp_path), good])
    with pytest.raises(OSError, match="disk full"):
        trackers.close()
    assert good.calls[-1] == ("close", ())


def test_make_trackers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jsonl, tensorboard, wandb"):
        make_trackers(tmp_path, ["tensorboard", "mlflow"])

    with make_trackers(tmp_path, ()) as only:
        assert [type(t) for t in only] == [JsonlTracker]
    with make_trackers(tmp_path, "tensorboard,jsonl") as some:
        assert [type(t) for t in some] == [JsonlTracker, TensorBoardTracker]
    with make_trackers(tmp_path, ["wandb", "wandb"], config={"lr": 0.1}, wandb_mode="disabled") as ts:
        assert [type(t) for t in ts] == [JsonlTracker, WandbTracker]
        ts.log("train", 0, {"loss": 1.0})
    assert len(read_events(tmp_path)) == 1


def test_make_trackers_skips_a_tracker_that_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tensorboard(self: Any, run_dir: Path, **_: Any) -> None:
        raise ImportError("No module named 'tensorboard'")

    monkeypatch.setattr(tracking.TensorBoardTracker, "__init__", no_tensorboard)
    with pytest.warns(TrackingWarning, match="tensorboard tracker disabled"):
        trackers = make_trackers(tmp_path, ["tensorboard"])
    assert [type(t) for t in trackers] == [JsonlTracker]
    trackers.close()


# --------------------------------------------------------------------------- the wandb project setting


def _wandb_projects(trackers: Trackers) -> list[str]:
    """The project of every live wandb run among ``trackers``."""
    return [t.run.project for t in trackers if isinstance(t, WandbTracker) and t.active]


def test_make_trackers_sends_the_project_to_wandb(tmp_path: Path) -> None:
    with make_trackers(tmp_path / "run", ["wandb"], project="nas-project-under-test") as ts:
        assert _wandb_projects(ts) == ["nas-project-under-test"]


def _recording_make_trackers(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Patch ``make_trackers`` (where every caller looks it up) to record the wandb projects it opened."""
    seen: list[list[str]] = []
    real = tracking.make_trackers

    def recording(*args: Any, **kwargs: Any) -> Trackers:
        trackers = real(*args, **kwargs)
        seen.append(_wandb_projects(trackers))
        return trackers

    monkeypatch.setattr(tracking, "make_trackers", recording)
    import nas.finetune
    import nas.run.context

    monkeypatch.setattr(nas.run.context, "make_trackers", recording)
    monkeypatch.setattr(nas.finetune, "make_trackers", recording)
    return seen


def test_the_configured_wandb_project_reaches_wandb_from_a_run_and_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nas.cli import main
    from nas.run.context import open_run

    run_dir = tmp_path / "run"
    settings = ["space.name=tiny", "data.resolution=16", "data.train_limit=64", "wandb_mode=offline"]
    with open_run(
        run_dir,
        overrides=[*settings, "trackers=jsonl,wandb", "wandb_project=configured-project"],
        progress=False,
        quiet=True,
    ) as ctx:
        assert _wandb_projects(ctx.trackers) == ["configured-project"]
        ctx.trackers.summary({"done": 1})
    seen = _recording_make_trackers(monkeypatch)
    assert (
        main(["report", str(run_dir), "--trackers=jsonl,wandb", "--wandb_project=report-project", "--quiet"])
        == 0
    )
    assert seen == [["report-project"]]


def test_the_configured_wandb_project_reaches_wandb_from_a_finetune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nas.cli import main

    run_dir = tmp_path / "run"
    quick = [
        "--space=tiny",
        "--data.resolution=16",
        "--data.train_limit=128",
        "--data.val_limit=64",
        "--trackers=jsonl",
        "--train.bn_recal_batches=1",
        "--epochs=1",
        "--trials=2",
        "--search.controller=random",
        "--search.devices=mobile-big-core",
        "--format=torch",
        "--export.latency_repeats=1",
        "--quiet",
    ]
    assert main(["run", "--run-dir", str(run_dir), *quick]) == 0
    seen = _recording_make_trackers(monkeypatch)
    finetune = ["finetune", "--run-dir", str(run_dir), "--epochs", "1", "--quiet"]
    assert (
        main([*finetune, "--trackers=jsonl,wandb", "--wandb_mode=offline", "--wandb_project=ft-project"]) == 0
    )
    assert seen == [["ft-project"]]
