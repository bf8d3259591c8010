"""Run directory: atomic writes keep old files intact on failure, the lock excludes other processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
import torch

from nas.run import files as rundir
from nas.run.files import (
    RunDirError,
    RunLock,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    default_run_dir,
    prepare_run_dir,
    read_json,
)

REPO = Path(__file__).resolve().parents[3]


def _only(directory: Path, *names: str) -> None:
    """No temp files left behind: the directory holds exactly ``names``."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_content(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ünïcode")
    assert target.read_text(encoding="utf-8") == "new ünïcode"

    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"

    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "c.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # sort_keys
    assert "\n  " in text  # indent=2
    assert read_json(tmp_path / "c.json") == {"a": [1, 2], "b": 1}
    _only(tmp_path, "a.txt", "b.bin", "c.json")


def test_atomic_write_gets_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_unserialisable_json_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    atomic_write_json(target, {"lr": 0.1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"lr": 0.2, "bad": object()})
    assert read_json(target) == {"lr": 0.1}
    _only(tmp_path, "config.json")


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_disk_full_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"epoch": 1})
    before = target.read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, failing, disk_full)
    with pytest.raises(OSError) as info:
        atomic_write_json(target, {"epoch": 2, "big": "x" * 100_000})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == before
    _only(tmp_path, "state.json")


def test_write_error_midway_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data write itself fails after part of it may have reached the temp file."""
    target = tmp_path / "blob.bin"
    atomic_write_bytes(target, b"old")

    def writer(f):  # type: ignore[no-untyped-def]
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        rundir._atomic_write(target, writer)
    assert target.read_bytes() == b"old"
    _only(tmp_path, "blob.bin")


class _ExplodesWhilePickled:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom while serialising")


def test_atomic_torch_save(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.arange(4.0)}, ckpt)
    assert torch.equal(torch.load(ckpt)["w"], torch.arange(4.0))

    # fails after the first tensor has been serialised into the temp file
    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"w": torch.zeros(1000), "z": _ExplodesWhilePickled()}, ckpt)
    assert torch.equal(torch.load(ckpt)["w"], torch.arange(4.0))
    _only(tmp_path, "last.pt")


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(RunDirError, match="nope.json"):
        read_json(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1')
    with pytest.raises(RunDirError, match=r"bad\.json.*not valid JSON"):
        read_json(bad)


# --------------------------------------------------------------------------- locking

_HOLDER = textwrap.dedent("""
    import sys, time
    from nas.run.files import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        if sys.argv[2] == "wait":
            time.sleep(60)
    """)

_TRY = textwrap.dedent("""
    import sys
    from nas.run.files import RunDirError, RunLock
    try:
        with RunLock(sys.argv[1]):
            print("acquired", flush=True)
    except RunDirError as e:
        print("refused:", e, flush=True)
    """)


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )


def _start_holder(run_dir: Path) -> subprocess.Popen:
    proc = _python(_HOLDER, str(run_dir), "wait")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_held_by_other_process_names_its_pid(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    try:
        with pytest.raises(RunDirError, match=rf"another process \(pid {proc.pid}\).*{tmp_path.name}"):
            with RunLock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_lock_free_after_holder_is_killed(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with RunLock(tmp_path) as lock:
        assert lock.locked
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    assert not lock.locked


def test_lock_free_after_holder_exits(tmp_path: Path) -> None:
    proc = _python(_HOLDER, str(tmp_path), "exit")
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "locked" and proc.returncode == 0
    with RunLock(tmp_path):
        pass


def test_other_process_refused_while_we_hold_the_lock(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        out, _ = _python(_TRY, str(tmp_path)).communicate(timeout=60)
        assert out.startswith(f"refused: another process (pid {os.getpid()})")
    out, _ = _python(_TRY, str(tmp_path)).communicate(timeout=60)
    assert out.strip() == "acquired"


# --------------------------------------------------------------------------- directories


def test_default_run_dir_is_timestamped_and_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundir, "_now", lambda: datetime(2024, 5, 6, 7, 8, 9))
    first = default_run_dir("train", root=tmp_path)
    assert first == tmp_path / "train-20240506-070809"
    assert not first.exists()  # only named, not created
    first.mkdir()
    second = default_run_dir("train", root=tmp_path)
    assert second == tmp_path / "train-20240506-070809-1"
    second.mkdir()
    assert default_run_dir("train", root=tmp_path).name == "train-20240506-070809-2"
    assert default_run_dir("search").parts[0] == "runs"
    with pytest.raises(ValueError):
        default_run_dir("a/b", root=tmp_path)


def test_prepare_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = prepare_run_dir(Path("runs") / "deep" / "x")
    assert p.is_absolute() and p.is_dir()
    assert p == (tmp_path / "runs" / "deep" / "x").resolve()
    assert prepare_run_dir(p) == p  # existing directory is fine (resume)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        prepare_run_dir(tmp_path / "file")
