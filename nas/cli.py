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
import time
from collections.abc import Sequence

from nas.commands import COMMANDS
from nas.commands.args import load_base, split_overrides
from nas.commands.help import CommandParser, command_table


def build_parser() -> argparse.ArgumentParser:
    """The ``nas`` parser: one sub-parser per command (a :class:`CommandParser`, whose help lists the settings
    it reads); ``nas --help`` shows the README's command table, made of the commands' ``TABLE`` rows."""
    parser = argparse.ArgumentParser(
        prog="nas",
        usage="nas <command> [options] [--section.key=VALUE ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Weight-sharing NAS: train a supernet, search it for accuracy vs. latency, export the winner.\n\n"
            "commands (`nas <command> --help` lists its options and the settings it reads):\n"
            + command_table(row for command in COMMANDS for row in command.TABLE)
        ),
        epilog=(
            "Settings: --section.key=value for any config key (see `nas <command> --help`), e.g.\n"
            "--train.epochs=3 --search.trials=20; `nas config explain KEY` explains one."
        ),
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="<command>",
        help=argparse.SUPPRESS,
        prog="nas",
        parser_class=CommandParser,
    )
    for command in COMMANDS:
        command.add_parsers(sub)
    parser.set_defaults(root_parser=parser)  # `nas config explain` says which commands read a setting
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from search_spaces.errors import UserError  # after parsing: `nas --help` answers without loading torch

    try:
        import optuna

        from nas.timing_floor import min_timing_seconds

        min_timing_seconds()  # a malformed NAS_MIN_TIMING_SECONDS is refused before any command writes
        optuna.logging.set_verbosity(
            optuna.logging.WARNING
        )  # the program's choice: trials are reported by us
        return args.handler(args, load_base(args), split_overrides(extra))
    except KeyboardInterrupt:
        print("nas: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except UserError as exc:
        if os.environ.get("NAS_DEBUG"):
            raise
        print(f"nas: error: {one_line(exc)}  (NAS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except ImportError as exc:  # a broken install says so plainly
        print(
            f"nas: error: installation is incomplete ({exc}); reinstall with pip install -e .",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # noqa: BLE001 - not the user's fault: say it is a bug and keep the traceback
        if os.environ.get("NAS_DEBUG"):
            raise
        where = _save_traceback()
        print(
            f"nas: internal error (a bug in nas-engine, not in your settings): {type(exc).__name__}:"
            f" {one_line(exc)}; traceback saved to {where}",
            file=sys.stderr,
        )
        return 1


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's message without the quotes ``str`` adds)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(text).split())


def _save_traceback() -> str:
    """Write the current exception's traceback to a file of its own; returns where (or why it could not)."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(
            prefix=f"nas-internal-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt"
        )
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        return path
    except OSError as exc:
        return f"nowhere ({exc}); run again with NAS_DEBUG=1 to see it"


if __name__ == "__main__":
    sys.exit(main())
