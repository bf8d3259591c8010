"""Arguments every run-directory command shares, and the ``--section.key=value`` settings after them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def add_common(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--run-dir``, ``--json``, ``--quiet``."""
    p.add_argument("--config", help="YAML file with settings (sections: data, space, train, search, export)")
    p.add_argument("--run-dir", help="run directory (created if missing; an existing one is resumed)")
    p.add_argument("--json", action="store_true", help="end by printing a one-line JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr")


def load_base(args: argparse.Namespace) -> dict[str, Any] | None:
    """The settings of ``--config FILE`` (None without one)."""
    from nas.run.config import load_yaml  # here, not at the top: building the parser must not load torch

    path = vars(args).get("config")
    return load_yaml(path) if path else None


def split_overrides(extra: Sequence[str]) -> list[str]:
    """``--a.b=1`` / ``--a.b 1`` / ``a.b=1`` -> ``["a.b=1"]``; anything else is a :class:`ConfigError`."""
    from nas.run.config import ConfigError

    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") and "=" not in item:
            raise ConfigError(f"unexpected argument {item!r} (settings look like --section.key=value)")
        key = item[2:] if item.startswith("--") else item
        if "=" not in key:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ConfigError(f"setting --{key} needs a value (--{key}=VALUE)")
            key, i = f"{key}={extra[i + 1]}", i + 1
        out.append(key)
        i += 1
    return out
