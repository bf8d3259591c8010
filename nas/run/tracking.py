"""Tracking is a list of callbacks fed with events.

Training and search code calls one :class:`Trackers` object with events
(``log(kind, step, values)``, tables, figures, a final summary) and never knows
which backends are listening. The JSONL event log in the run directory is
always on and is the record of truth: it is plain text, survives a killed
process (every line is flushed) and is what resumed runs and reports read back.
TensorBoard and Weights & Biases are optional views of the same events; a
failure in one of them is reported as a warning and never stops a run.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import numbers
import os
import secrets
import string
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from nas.run.files import RunDirError, atomic_write_text
from search_spaces.registry import Registry

log = logging.getLogger(__name__)

EVENTS_NAME = "events.jsonl"
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_id.txt"
RESERVED_FIELDS = ("time", "kind", "step")

WANDB_INIT_TIMEOUT_S = 30.0
"""Longest ``wandb.init`` may block (service start, login, resume lookup) before we give up on wandb."""
WANDB_FINISH_TIMEOUT_S = 60.0
"""Longest ``run.finish()`` waits for uploads; the rest stays on disk for ``wandb sync``."""
WANDB_HOSTS = ("api.wandb.ai",)

Value = float | int | str


class TrackingWarning(RuntimeWarning):
    """A tracking backend failed; the run goes on without it."""


class Tracker:
    """Base of every tracking backend, built as ``cls(run_dir, project=..., config=..., mode=...)`` by
    :func:`make_trackers`.

    Required: :meth:`log`, :meth:`log_table`, :meth:`log_figure`, :meth:`summary`,
    :meth:`close`. Hooks with no-op defaults, for backends that have a place for
    them: :meth:`log_hparams` and :meth:`log_artifact`. ``required`` backends (the
    JSONL record of truth) let their failures propagate; any other backend's
    failure becomes a :class:`TrackingWarning`.
    """

    required: ClassVar[bool] = False

    def log(self, kind: str, step: int, values: Mapping[str, Value]) -> None:
        """Record ``values`` of one event of ``kind`` (e.g. "train", "eval") at ``step``."""
        raise NotImplementedError

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        """Record a table (e.g. the Pareto front of a search)."""
        raise NotImplementedError

    def log_figure(self, name: str, path: str | Path) -> None:
        """Record a figure already saved as a PNG file."""
        raise NotImplementedError

    def summary(self, values: Mapping[str, Any]) -> None:
        """Record final results of the run."""
        raise NotImplementedError

    def log_hparams(
        self, name: str, hparams: Mapping[str, Value | bool], metrics: Mapping[str, float]
    ) -> None:
        """One hyper-parameter session (e.g. an architecture's choices with its accuracy and latency);
        default: ignored."""

    def log_artifact(
        self, name: str, path: str | Path, type: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A file or directory worth keeping with the run (e.g. the exported model); default: ignored."""

    def close(self) -> None:
        """Flush and release the backend."""
        raise NotImplementedError


TRACKERS: Registry[type[Tracker]] = Registry("tracker", normalize=lambda name: name.strip().lower())
"""Tracker name (``--trackers``) -> backend class."""


# --------------------------------------------------------------------------- JSONL


def _json_default(obj: Any) -> Any:
    """Let numpy/torch scalars and paths through; anything else is a caller bug."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"value of type {type(obj).__name__} is not JSON serialisable")


def _check_reserved(values: Mapping[str, Any]) -> None:
    clash = sorted(set(RESERVED_FIELDS) & set(values))
    if clash:
        raise ValueError(f"event values may not use the reserved field name(s) {clash}")


def _drop_partial_last_line(path: Path) -> None:
    """Cut a line left half-written by a killed process, so appended events start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos, chunk = end, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)


@TRACKERS.register("jsonl")
class JsonlTracker(Tracker):
    """Append one JSON object per event to ``<run_dir>/events.jsonl``.

    Each line is flushed as soon as it is written, so a killed process loses at
    most the line being written; reopening the same run directory appends.
    """

    required = True

    def __init__(self, run_dir: str | Path, **_: Any) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_NAME
        _drop_partial_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default, ensure_ascii=False)
        with self._lock:
            if self._file.closed:
                raise ValueError(f"{self.path}: tracker is closed")
            self._file.write(line + "\n")
            self._file.flush()

    def log(self, kind: str, step: int, values: Mapping[str, Value]) -> None:
        _check_reserved(values)
        self._write({"time": time.time(), "kind": kind, "step": int(step), **values})

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        self._write(
            {
                "time": time.time(),
                "kind": "table",
                "step": None,
                "name": name,
                "columns": list(columns),
                "rows": [list(r) for r in rows],
            }
        )

    def log_figure(self, name: str, path: str | Path) -> None:
        p = Path(path)
        try:  # relative to the run dir when inside it, so a moved run dir stays consistent
            p = p.resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            pass
        self._write({"time": time.time(), "kind": "figure", "step": None, "name": name, "path": str(p)})

    def summary(self, values: Mapping[str, Any]) -> None:
        _check_reserved(values)
        self._write({"time": time.time(), "kind": "summary", "step": None, **values})

    def log_hparams(
        self, name: str, hparams: Mapping[str, Value | bool], metrics: Mapping[str, float]
    ) -> None:
        self._write(
            {
                "time": time.time(),
                "kind": "hparams",
                "step": None,
                "name": name,
                "hparams": dict(hparams),
                "metrics": dict(metrics),
            }
        )

    def log_artifact(
        self, name: str, path: str | Path, type: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._write(
            {
                "time": time.time(),
                "kind": "artifact",
                "step": None,
                "name": name,
                "path": str(path),
                "type": type,
                "metadata": dict(metadata or {}),
            }
        )

    def close(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            self._file.flush()
            try:
                os.fsync(self._file.fileno())
            finally:
                self._file.close()


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """All events of a run, in order.

    A truncated last line (the process was killed mid-write) is skipped
    silently; any other unreadable line is skipped with a warning.
    """
    path = Path(run_dir) / EVENTS_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    lines = [(i + 1, line) for i, line in enumerate(text.split("\n")) if line.strip()]
    events: list[dict[str, Any]] = []
    for n, (lineno, line) in enumerate(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        elif n != len(lines) - 1:
            warnings.warn(f"{path}:{lineno}: skipping unreadable event line", TrackingWarning, stacklevel=2)
    return events


# --------------------------------------------------------------------------- TensorBoard


def _as_number(value: Any) -> float | None:
    """Float value of numeric event values (incl. numpy/torch scalars), else None."""
    if isinstance(value, str):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            v = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        if isinstance(v, numbers.Real) and not isinstance(v, str):
            return float(v)
    return None


def _md_cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table, which TensorBoard's text tab renders as a table."""
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Write events to ``<run_dir>/tensorboard/``: numbers as scalars ``kind/key``, the rest as text."""

    def __init__(self, run_dir: str | Path, flush_secs: int = 10, **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log(self, kind: str, step: int, values: Mapping[str, Value]) -> None:
        for key, value in values.items():
            tag = f"{kind}/{key}"
            number = _as_number(value)
            if number is not None:
                self._writer.add_scalar(tag, number, global_step=int(step))
            elif isinstance(value, str):
                self._writer.add_text(tag, value, global_step=int(step))

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        self._writer.add_text(name, markdown_table(columns, rows))

    def log_figure(self, name: str, path: str | Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        self._writer.add_image(name, image, dataformats="HWC")

    def summary(self, values: Mapping[str, Any]) -> None:
        self._writer.add_text("summary", markdown_table(["key", "value"], sorted(values.items())))

    def log_hparams(
        self, name: str, hparams: Mapping[str, Value | bool], metrics: Mapping[str, float]
    ) -> None:
        """One session of TensorBoard's HParams tab, written as the sub-run ``tensorboard/<name>``."""
        self._writer.add_hparams(dict(hparams), dict(metrics), run_name=name)

    def close(self) -> None:
        self._writer.close()


# --------------------------------------------------------------------------- Weights & Biases


def wandb_configured() -> bool:
    """Whether the user has set up wandb credentials (API key in env or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not netrc_path.is_file():
        return False
    try:
        entries = netrc.netrc(str(netrc_path))
    except (OSError, netrc.NetrcParseError):
        return False
    from urllib.parse import urlparse

    urls = [os.environ.get("WANDB_BASE_URL"), _wandb_default_base_url()]
    hosts = set(WANDB_HOSTS) | {h for h in (urlparse(u).hostname for u in urls if u) if h}
    return any(entries.authenticators(h) for h in hosts)


def _wandb_default_base_url() -> str | None:
    """The server the installed wandb logs in to by default (not api.wandb.ai in every version)."""
    try:
        import wandb

        return str(wandb.Settings.model_fields["base_url"].default)
    except Exception:  # noqa: BLE001 - wandb missing or a version without pydantic settings
        return None


def resolve_wandb_mode(mode: str | None = None) -> str:
    """The wandb mode to use: explicit ``mode``, else ``$WANDB_MODE``, else "online"
    only if credentials are configured, else "offline".

    Going online only with credentials keeps an unconfigured machine from
    prompting for a login or waiting on the network.
    """
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "online" if wandb_configured() else "offline"


_ID_ALPHABET = string.ascii_lowercase + string.digits


def _load_or_create_run_id(run_dir: Path) -> str:
    """The wandb run id stored in the run dir, created on first use, so a resumed run continues the same wandb
    run."""
    path = run_dir / WANDB_ID_FILE
    if path.exists():
        run_id = path.read_text(encoding="utf-8").strip()
        if run_id:
            return run_id
    run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    atomic_write_text(path, run_id + "\n")
    return run_id


def _wandb_settings(wandb: Any) -> Any:
    """Settings that bound every wait on the network and keep wandb quiet.

    Only fields this wandb version knows are passed (checked against wandb 0.31).
    """
    wanted: dict[str, Any] = {
        "init_timeout": WANDB_INIT_TIMEOUT_S,
        "login_timeout": WANDB_INIT_TIMEOUT_S,
        "x_service_wait": WANDB_INIT_TIMEOUT_S,
        "finish_timeout": WANDB_FINISH_TIMEOUT_S,
        "silent": True,
        "quiet": True,
        "console": "off",  # stdout stays untouched; events.jsonl is the log that matters
        "x_disable_stats": True,  # no system-metrics sampler competing for CPU
    }
    fields = getattr(wandb.Settings, "model_fields", None)
    if fields is not None:
        wanted = {k: v for k, v in wanted.items() if k in fields}
    return wandb.Settings(**wanted)


def _artifact_name(name: str) -> str:
    """wandb artifact names allow only letters, digits, '-', '_' and '.'."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in name).strip("-.")
    return cleaned or "artifact"


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """Send events to Weights & Biases; degrades to a no-op if wandb cannot start.

    Events are logged as ``kind/key`` with their own step axis ``kind/step``
    (wandb drops history rows whose explicit step goes backwards, and different
    kinds count steps differently).
    """

    def __init__(
        self,
        run_dir: str | Path,
        project: str = "nas-engine",
        config: dict | None = None,
        mode: str | None = None,
        name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.mode = resolve_wandb_mode(mode)
        self.run: Any = None
        self.run_id: str | None = None
        self._wandb: Any = None
        self._kinds: set[str] = set()
        if self.mode == "disabled":
            return
        try:
            import wandb
        except Exception as e:  # noqa: BLE001 - a broken install must not stop the run
            self._disable(f"cannot import wandb ({type(e).__name__}: {e})")
            return
        self._wandb = wandb
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = _load_or_create_run_id(self.run_dir)
        try:
            self.run = wandb.init(
                project=project,
                dir=str(self.run_dir),
                id=self.run_id,
                resume="allow",
                name=name or self.run_dir.name,
                config=config,
                mode=self.mode,
                reinit="create_new",
                settings=_wandb_settings(wandb),
            )
        except Exception as e:  # noqa: BLE001 - includes CommError / init timeout
            self._disable(f"wandb.init ({self.mode}) failed: {type(e).__name__}: {e}")
            return
        if self.mode == "offline":
            log.info("wandb offline run %s in %s (upload later with `wandb sync`)", self.run_id, self.run.dir)
        else:
            log.info("wandb run %s: %s", self.run_id, getattr(self.run, "url", None))

    def _disable(self, why: str) -> None:
        self.run = None
        warnings.warn(
            f"{why}; continuing without wandb (events are still written to {EVENTS_NAME})",
            TrackingWarning,
            stacklevel=3,
        )

    @property
    def active(self) -> bool:
        """Whether a wandb run is live (False once degraded to a no-op or closed)."""
        return self.run is not None

    def log(self, kind: str, step: int, values: Mapping[str, Value]) -> None:
        if self.run is None:
            return
        step_key = f"{kind}/step"
        if kind not in self._kinds:
            self.run.define_metric(step_key)
            self.run.define_metric(f"{kind}/*", step_metric=step_key)
            self._kinds.add(kind)
        data: dict[str, Any] = {f"{kind}/{k}": v for k, v in values.items()}
        data[step_key] = int(step)
        self.run.log(data)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        # mixed types: search tables hold numbers, strings and None in one column
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows], allow_mixed_types=True)
        self.run.log({name: table})

    def log_figure(self, name: str, path: str | Path) -> None:
        if self.run is None:
            return
        self.run.log({name: self._wandb.Image(str(path))})

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update(dict(values))

    def log_artifact(
        self, name: str, path: str | Path, type: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A file or directory as a versioned wandb artifact (offline runs keep it for ``wandb sync``)."""
        if self.run is None:
            return
        artifact = self._wandb.Artifact(_artifact_name(name), type=type, metadata=dict(metadata or {}))
        p = Path(path)
        if p.is_dir():
            artifact.add_dir(str(p))
        else:
            artifact.add_file(str(p))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.finish()


# --------------------------------------------------------------------------- fan-out


class Trackers:
    """Fan each event out to every tracker.

    Failures of :class:`JsonlTracker` (the record of truth) propagate; failures
    of any other tracker become a :class:`TrackingWarning`, so a tracking
    problem never kills a training run.
    """

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.trackers: list[Tracker] = list(trackers)

    def __iter__(self) -> Iterator[Tracker]:
        return iter(self.trackers)

    def __len__(self) -> int:
        return len(self.trackers)

    def _call(self, tracker: Tracker, method: str, *args: Any) -> None:
        if (
            isinstance(tracker, Tracker) and tracker.required
        ):  # the record of truth; every other backend is optional
            getattr(tracker, method)(*args)
            return
        try:
            getattr(tracker, method)(*args)
        except Exception as e:  # noqa: BLE001 - optional backends must not stop the run
            warnings.warn(
                f"{type(tracker).__name__}.{method} failed: {type(e).__name__}: {e}",
                TrackingWarning,
                stacklevel=3,  # the code that called Trackers.<method>
            )

    def log(self, kind: str, step: int, values: Mapping[str, Value]) -> None:
        for t in self.trackers:
            self._call(t, "log", kind, step, values)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        for t in self.trackers:
            self._call(t, "log_table", name, columns, rows)

    def log_figure(self, name: str, path: str | Path) -> None:
        for t in self.trackers:
            self._call(t, "log_figure", name, path)

    def summary(self, values: Mapping[str, Any]) -> None:
        for t in self.trackers:
            self._call(t, "summary", values)

    def log_hparams(
        self, name: str, hparams: Mapping[str, Value | bool], metrics: Mapping[str, float]
    ) -> None:
        """One hyper-parameter session (e.g. an architecture's choices with its accuracy and latency)."""
        for t in self.trackers:
            self._call(t, "log_hparams", name, hparams, metrics)

    def log_artifact(
        self, name: str, path: str | Path, type: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """A file or directory worth keeping with the run (e.g. the exported model)."""
        for t in self.trackers:
            self._call(t, "log_artifact", name, path, type, metadata)

    def close(self) -> None:
        """Close every tracker; a JSONL close error is re-raised after the others are closed."""
        error: BaseException | None = None
        for t in self.trackers:
            try:
                self._call(t, "close")
            except Exception as e:  # noqa: BLE001 - only JSONL errors reach here
                error = error or e
        if error is not None:
            raise error

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def make_trackers(
    run_dir: str | Path,
    names: Sequence[str] = ("jsonl", "tensorboard", "wandb"),
    config: dict | None = None,
    wandb_mode: str | None = None,
    project: str = "nas-engine",
) -> Trackers:
    """Build the trackers named in ``names`` (a sequence or a comma-separated string).

    "jsonl" is always included, first. An optional tracker that cannot be
    constructed is skipped with a warning. ``project`` is the wandb project
    (the ``wandb_project`` setting); backends without projects ignore it.
    """
    wanted = tracker_classes(names)
    trackers: list[Tracker] = [JsonlTracker(run_dir)]
    for name, cls in wanted.items():
        if cls is JsonlTracker:
            continue
        try:
            trackers.append(cls(run_dir, project=project, config=config, mode=wandb_mode))
        except Exception as e:  # noqa: BLE001 - e.g. tensorboard not installed
            warnings.warn(f"{name} tracker disabled: {type(e).__name__}: {e}", TrackingWarning, stacklevel=2)
    return Trackers(trackers)


def tracker_classes(names: Sequence[str] | str) -> dict[str, type[Tracker]]:
    """The backend class of each named tracker (a sequence or a comma-separated string), in order, once
    each."""
    if isinstance(names, str):
        names = names.split(",")
    return {
        TRACKERS.canonical(n, setting="trackers"): TRACKERS.get(n, setting="trackers")
        for n in names
        if n.strip()
    }
