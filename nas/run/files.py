"""Files of a run directory (and of the engine's cache): atomic writes, the lock, JSON reading, the cache
home.

One folder holds everything a run produces.

Resolved config, event log, checkpoints, study and exports all live under one
directory, and re-running a command with the same directory resumes it. That
only works if nothing in the directory is ever half-written, so every file is
written atomically (temp file in the same directory, fsync, rename), and if two
processes never write the same directory at once, so a run holds an exclusive
lock on ``<run_dir>/.lock`` while it works.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from search_spaces.errors import UserError

LOCK_NAME = ".lock"

PathLike = str | os.PathLike[str]


class RunDirError(UserError):
    """A run directory (or a file in it) is missing, unreadable or in use."""


class WriteError(RunDirError, OSError):
    """An atomic write failed (disk full, read-only, no permission): one line naming the file; still an
    ``OSError``.

    Keeps the original ``errno`` so callers can tell ENOSPC apart, and says that the
    previous version of the file is intact, which is what a user needs to know.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        OSError.__init__(self, cause.errno, cause.strerror)
        what = "disk full" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot write"
        reason = cause.strerror or str(cause)
        self.path = path
        self.message = (
            f"{what} while writing {path} ({reason}); its previous version is intact: "
            "free some space and re-run the same command to resume"
            if what == "disk full"
            else f"{what} {path} ({reason}); its previous version is intact"
        )

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: on POSIX the directory entry needs its own fsync."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is synced
    finally:
        os.close(fd)


def _open_temp(directory: Path, name: str) -> tuple[int, Path]:
    """Create a fresh temp file next to the target.

    Created with ``os.open(..., 0o666)`` rather than ``mkstemp`` so that the
    umask applies and the final file gets ordinary permissions, not 0600.
    """
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # what _open_temp creates


def remove_stale_temp_files(run_dir: PathLike) -> list[Path]:
    """Delete the temp files of atomic writes a killed process left in ``run_dir``; returns them.

    Only safe while holding the run directory's exclusive lock: then no other
    process of this engine is writing there.
    """
    removed = []
    for p in Path(run_dir).rglob(".*.tmp"):
        if _TEMP_NAME.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write via ``write(file)`` into a temp file, then rename it over ``path``.

    Readers (and a resumed run) see either the old file or the complete new one,
    never a truncated one: if anything fails (serialisation error, disk full,
    interrupt) the temp file is removed and the previous file stays intact. An
    ``OSError`` comes back as :class:`WriteError`, whose one-line message names the file.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)  # e.g. <run>/checkpoints on the first save
        fd, tmp = _open_temp(directory, target.name)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(target, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        cause = _os_error_in(exc)
        if cause is not None and not isinstance(exc, WriteError):
            raise WriteError(target, cause) from exc
        raise
    _fsync_dir(directory)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: ``torch.save`` reports a failed write as a RuntimeError caused by it.

    An exception raised ``from None`` hides its context on purpose (say, a reader that
    turned a bad gzip stream into its own error): that context is not followed.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = (
            cur.__cause__
            if cur.__cause__ is not None
            else (None if cur.__suppress_context__ else cur.__context__)
        )
    return None


def atomic_write_stream(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically by streaming into the file ``write`` is given (large files: nothing held in
    memory)."""
    _atomic_write(path, write)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (old content survives any failure)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (old content survives any failure)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically.

    The object is serialised before any file is touched, so a value that is not
    JSON-serialisable raises without leaving anything behind. Sorted keys keep
    files diffable between runs.
    """
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` atomically, so a crash mid-save never corrupts the last checkpoint."""
    import torch  # imported here so that tools which only read run files stay light

    _atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path: PathLike) -> Any:
    """Load a JSON file, raising :class:`RunDirError` that names the file on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{p}: cannot read file ({e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{p}: not valid JSON ({e})") from e


# --------------------------------------------------------------------------- locking


class RunLock:
    """Exclusive, non-blocking lock on ``<run_dir>/.lock`` for the life of a run.

    Two processes writing one run directory would interleave event logs and
    overwrite each other's checkpoints, so the second one fails fast instead.
    ``flock`` is released by the kernel when the holder exits or is killed, so a
    crashed run never leaves a stale lock behind. The holder's pid is written
    into the lock file only to make the error message useful.

    Note: a forked child (e.g. a DataLoader worker started with ``fork``)
    shares the lock until it exits too.
    """

    def __init__(self, run_dir: PathLike, shared: bool = False) -> None:
        self.run_dir = Path(run_dir)
        # several holders at once (search workers on one shared study); excludes an exclusive holder
        self.shared = shared
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunDirError` naming the holder's pid."""
        if self._fd is not None:
            raise RunDirError(f"lock on {self.run_dir} is already held by this RunLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"pid {holder}" if holder is not None else "pid unknown"
                raise RunDirError(
                    f"another process ({who}) is using run directory {self.run_dir}; "
                    "wait for it to finish or choose a different run directory"
                ) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent). The lock file is kept: deleting it would race."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it has written one yet."""
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- directories


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/nas-engine``; an unset or relative ``XDG_CACHE_HOME`` means ``~/.cache`` (the XDG
    rule).

    Device profiles and staged data sets live below it; not created here.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nas-engine"


def _now() -> datetime:
    """Current local time; a separate function so tests can freeze the clock."""
    return datetime.now()


def default_run_dir(command: str, root: PathLike = "runs") -> Path:
    """``<root>/<command>-<YYYYmmdd-HHMMSS>``, with ``-1``, ``-2``... if that exists.

    Timestamped names sort chronologically and never collide with an earlier
    run, so an unnamed run never resumes someone else's run by accident. The
    directory is not created here (see :func:`prepare_run_dir`).
    """
    if not command or "/" in command or os.sep in command:
        raise ValueError(f"invalid command name for a run directory: {command!r}")
    base = Path(root) / f"{command}-{_now():%Y%m%d-%H%M%S}"
    candidate, n = base, 0
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def prepare_run_dir(path: PathLike) -> Path:
    """Create the run directory (and parents) if needed and return its absolute path.

    Absolute, so that later ``chdir`` calls or paths stored in the run's files
    stay valid.
    """
    p = Path(path).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"{p} exists and is not a directory") from None
    except OSError as e:
        raise RunDirError(f"cannot create run directory {p}: {e}") from e
    return p
