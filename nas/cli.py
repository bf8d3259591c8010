"""``nas`` command line: one parser built from :mod:`nas.commands`, and user errors printed as one line.

Any setting of :class:`nas.run.config.NASConfig` can be given as ``--section.key=value``
(e.g. ``--train.epochs=3``); common ones have short aliases (``--epochs``,
``--trials``, ``--latency-budget-ms``, ``--space``, ``--data``, ``--data-dir``).
Errors a user can fix print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nas.commands import COMMANDS
from nas.commands.args import load_base, split_overrides


def _user_errors() -> tuple[type[BaseException], ...]:
    from nas.cost import ProfileError
    from nas.data import DataError
    from nas.export.exporter import ExportError
    from nas.run.config import ConfigError
    from nas.run.files import RunDirError
    from nas.training.checkpoint import CheckpointError
    from search_spaces import InvalidArchitectureError, UnknownNameError

    return (
        ConfigError,
        DataError,
        RunDirError,
        CheckpointError,
        ExportError,
        ProfileError,
        InvalidArchitectureError,
        UnknownNameError,
        KeyError,
        ValueError,
        FloatingPointError,
        OSError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description=(
            "Weight-sharing NAS: train a supernet, search it for accuracy vs. latency, export the winner."
        ),
        epilog=(
            "Settings: --section.key=value for any config key (see `nas <command> --help`), e.g."
            " --train.epochs=3 --search.trials=20."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        errors = _user_errors()
    except ImportError as exc:  # a broken install should say so plainly
        print(f"nas: error: installation is incomplete ({exc})", file=sys.stderr)
        return 2
    import optuna

    optuna.logging.set_verbosity(
        optuna.logging.WARNING
    )  # the program's choice, not the library's: trials are reported by us
    try:
        return args.handler(args, load_base(args), split_overrides(extra))
    except KeyboardInterrupt:
        print("nas: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except errors as exc:
        if os.environ.get("NAS_DEBUG"):
            raise
        msg = " ".join(
            str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split()
        )  # one line
        print(f"nas: error: {msg}  (NAS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
