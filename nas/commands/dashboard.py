"""``nas dashboard DIR``: browse a run's Optuna study in optuna-dashboard, served on a local port.

The study is the run's own (``DIR/study.db``, or the shared storage its ``search.storage`` names) or any
``--storage URL --study NAME``. Its trials carry what the dashboard's views need: the architecture's choices
as parameters (parameter importance), accuracy and predicted latency per device as named objectives (Pareto
front), and the architecture, its id, accuracy, latency, parameters, MACs and memory as user attributes
(trial table). The server only reads the study (no lock is taken), so it can watch a search in progress.
optuna-dashboard is an optional extra: ``pip install -e ".[dashboard]"``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

READS = ("search.storage", "search.study")  # the settings it reads: its --help lists them
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    (
        "dashboard",
        "browse a run's study in optuna-dashboard: trials, Pareto front, parameter importance",
        "nas dashboard runs/demo",
    ),
)
DEFAULT_STUDY = "search"  # the study name a search uses when search.study is not set


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    p = sub.add_parser(
        "dashboard",
        help="browse a run's study in optuna-dashboard (trials, Pareto front, parameter importance)",
        description=(
            "Serve optuna-dashboard on the study of a run directory (its study.db, or its search.storage) or"
            " of --storage URL --study NAME, on a local port, and print its address. Ctrl-C stops it. Needs"
            ' the dashboard extra: pip install -e ".[dashboard]".'
        ),
        reads=READS,
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="run directory (or use --run-dir)")
    add_common(p)
    p.add_argument(
        "--storage", help="an Optuna storage URL instead of the run's (e.g. postgresql://user@host/db)"
    )
    p.add_argument(
        "--study",
        help=f"study name (default: the run's search.study or {DEFAULT_STUDY!r}; else the only one)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.set_defaults(handler=main)


@dataclass
class Dashboard:
    """A dashboard server bound to its port (not serving yet: call ``server.serve_forever()``)."""

    server: WSGIServer
    url: str  # the study's page
    study: str
    storage: str  # as shown to the user (no password)
    trials: int  # trials in the study when the server started

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "port": self.server.server_port,
            "study": self.study,
            "storage": self.storage,
            "trials": self.trials,
        }


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never holds up Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the terminal shows only the address."""


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas dashboard DIR [--port N] [--host H]`` or ``nas dashboard --storage URL [--study NAME]``."""
    from nas.run.config import ConfigError

    given = [p for p in (args.dir, args.run_dir) if p]
    if len(given) == 2 and Path(given[0]).resolve() != Path(given[1]).resolve():
        raise ConfigError(f"two run directories given ({given[0]} and --run-dir {given[1]}); give one")
    run_dir = Path(given[0]).expanduser().resolve() if given else None
    storage, study = study_location(run_dir, args.storage, args.study, base, overrides)
    dash = open_dashboard(storage, study, args.host, args.port)
    if args.json:
        print(json.dumps(dash.summary(), sort_keys=True), flush=True)
    else:
        print(
            f"optuna-dashboard: study {dash.study!r} ({dash.trials} trials) in {dash.storage} at {dash.url}"
            "  (Ctrl-C stops it)",
            flush=True,
        )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
    try:
        dash.server.serve_forever()
    except KeyboardInterrupt:
        if not args.quiet:
            print("optuna-dashboard stopped", file=sys.stderr)
    finally:
        dash.server.server_close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def study_location(
    run_dir: Path | None,
    storage: str | None = None,
    study: str | None = None,
    base: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> tuple[str, str | None]:
    """(storage URL, study name or None for "the only one") of a run directory, or as given.

    A run directory's study is its ``search.storage`` (default its private ``study.db``) and ``search.study``
    (default ``search``); ``storage`` and ``study`` replace them.
    """
    from nas.run.config import ConfigError

    if run_dir is None:
        if storage is None:
            raise ConfigError("nas dashboard needs a run directory (nas dashboard DIR) or --storage URL")
        return storage, study
    from nas.run.context import CONFIG_FILE, resolve_config
    from nas.run.files import RunDirError

    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = resolve_config(run_dir, base, overrides)
    url = storage or cfg.search.storage
    if url is None:
        db = run_dir / "study.db"
        if not db.is_file():
            raise RunDirError(
                f"{run_dir} has no study yet (no study.db): run `nas search --run-dir {run_dir}`"
            )
        url = f"sqlite:///{db}"
    return url, study or cfg.search.study or (DEFAULT_STUDY if storage is None else None)


def open_dashboard(storage: str, study: str | None, host: str = "127.0.0.1", port: int = 0) -> Dashboard:
    """optuna-dashboard on ``study`` of ``storage`` (None: its only study), bound to ``host:port`` (0: a free
    port). Every reason it cannot start (no such study, optuna-dashboard missing, port taken) is one line."""
    from nas.run.config import ConfigError

    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError(
            'nas dashboard needs optuna-dashboard, which is not installed: pip install -e ".[dashboard]" (or'
            " pip install optuna-dashboard)"
        ) from None
    from nas.controllers.optuna_controller import describe_storage, open_storage

    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).is_file():
        raise ConfigError(f"no study database at {storage[len('sqlite:///') :]}")  # opening would create it
    opened = open_storage(storage)
    shown = describe_storage(storage)
    names = [s.study_name for s in opened.get_all_studies()]
    if study is None:
        if len(names) != 1:
            raise ConfigError(
                f"{shown} holds {len(names)} studies ({', '.join(names) or 'none'}): choose one with"
                " --study NAME"
            )
        study = names[0]
    if study not in names:
        raise ConfigError(f"{shown} has no study {study!r}; its studies: {', '.join(names) or 'none'}")
    study_id = opened.get_study_id_from_name(study)
    trials = len(opened.get_all_trials(study_id, deepcopy=False))
    try:
        server = make_server(
            host, port, optuna_dashboard.wsgi(opened), server_class=_Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    url = f"http://{host}:{server.server_port}/dashboard/studies/{study_id}"
    return Dashboard(server=server, url=url, study=study, storage=shown, trials=trials)
