"""Help derived from what it describes: the settings each command reads (from the config), the command table.

A command module declares which settings it reads as *selectors* (a section such as ``"train"``, a key such as
``"search.devices"``, :data:`GENERAL` for the top-level keys, or ``"role:recipe"`` for every key of a role)
and passes them to its parser (``sub.add_parser(..., reads=...)``, a :class:`CommandParser`). Its ``--help``
then lists those settings with their default, domain and description, read from
:func:`nas.run.config.setting_fields` when the help is shown: a setting added to the config appears without
any edit here, and building the parser (``nas --help``) imports neither the config nor torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import Field
from typing import Any

GENERAL = "general"
"""Selector of every top-level setting (``seed``, ``device``, ``trackers``, ...)."""
ROLE_PREFIX = "role:"
"""A selector ``role:<role>`` picks every setting that plays that role (see :data:`nas.run.config.ROLES`)."""

# Named domains: family -> (module, attribute holding its names, listed in --help). Listed only where the
# import is cheap once the config is loaded (the config already imports the search spaces); for the others
# the help points to `nas config explain KEY`, which imports the registry and lists the names.
REGISTRIES: dict[str, tuple[str, str, bool]] = {
    "search space": ("search_spaces", "SPACES", True),
    "supernet kind": ("search_spaces", "SUPERNET_KINDS", True),
    "export format": ("nas.export.formats", "EXPORT_FORMATS", True),
    "tracker": ("nas.run.tracking", "TRACKERS", True),
    "data set": ("nas.data", "DATASETS", False),
    "sampling rule": ("nas.training.sampling", "SAMPLING_RULES", False),
    "augmentation": ("nas.training.augment", "AUGMENTATIONS", False),
    "controller": ("nas.controllers", "CONTROLLERS", False),
}

RUN_FIXED = "fixed once the run directory exists"


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its ``--help`` ends with the settings the command reads (rendered only when
    shown)."""

    def __init__(self, *args: Any, reads: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = tuple(reads)

    def format_help(self) -> str:
        text = super().format_help()
        if not self.reads:
            return text
        own = {flag for action in self._actions for flag in action.option_strings}
        return f"{text}\n{settings_help(self.reads, own)}"


# --------------------------------------------------------------------------- which settings


def selected_keys(reads: Sequence[str]) -> list[str]:
    """The settings ``reads`` selects, in declaration order; a selector that selects nothing is a
    ``ValueError`` (a command declaring a setting that does not exist)."""
    from nas.run.config import ROLES, setting_fields

    fields = setting_fields()
    chosen: set[str] = set()
    for sel in reads:
        if sel == GENERAL:
            hit = {k for k in fields if "." not in k}
        elif sel.startswith(ROLE_PREFIX):
            role = sel[len(ROLE_PREFIX) :]
            if role not in ROLES:
                raise ValueError(f"unknown role in selector {sel!r}; roles: {ROLES}")
            hit = {k for k, f in fields.items() if role in f.metadata["roles"]}
        else:
            hit = {k for k in fields if k == sel or k.startswith(sel + ".")}
        if not hit:
            raise ValueError(f"settings selector {sel!r} selects no setting")
        chosen |= hit
    return [k for k in fields if k in chosen]


def section_of(key: str) -> str:
    """``train`` for ``train.lr``; :data:`GENERAL` for a top-level key."""
    return key.split(".", 1)[0] if "." in key else GENERAL


# --------------------------------------------------------------------------- one setting


def shown_default(value: Any) -> str:
    """A default as it is written on the command line or in YAML (``null``, ``true``, ``[cpu]``)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


def type_text(f: Field) -> str:
    """The setting's annotation as written (``int | None``), whether or not it was resolved already."""
    t = f.type
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "").replace("NoneType", "None")


def registered_names(family: str, cheap_only: bool) -> list[str] | None:
    """The names a :class:`~nas.run.config.Named` family accepts, or None when unknown here (or, with
    ``cheap_only``, when listing them would import a heavy module)."""
    from search_spaces.registry import Registry

    if family not in REGISTRIES:
        return None
    module, attribute, cheap = REGISTRIES[family]
    if cheap_only and not cheap:
        return None
    members = getattr(importlib.import_module(module), attribute)
    return members.known() if isinstance(members, Registry) else [str(m) for m in members]


def domain_text(key: str, cheap_only: bool = True) -> str:
    """What values ``key`` allows: its domain's ``describe()``, the registered names of a ``Named`` domain
    (or where to find them), and its type."""
    from nas.run.config import Domain, Named, setting_fields

    f = setting_fields()[key]
    domain, typ = f.metadata["domain"], type_text(f)
    if isinstance(domain, Named):
        names = registered_names(domain.family, cheap_only)
        listed = f": {', '.join(names)}" if names else f"; `nas config explain {key}` lists them"
        return f"{domain.describe()} ({typ}){listed}"
    if type(domain) is Domain and typ == "bool":
        return "true or false"
    return f"{domain.describe()} ({typ})"


def flags(key: str) -> list[tuple[str, str | None]]:
    """``(flag, entry)`` for every flag that sets ``key``: its long form, then its short forms; ``entry``
    names the key of a mapping a short form sets (``--max-params``: ``params`` of ``search.constraints``)."""
    from nas.run.config import ALIASES

    out: list[tuple[str, str | None]] = [(f"--{key}", None)]
    for alias, dotted in ALIASES.items():
        if dotted == key and alias != key:
            out.append((f"--{alias}", None))
        elif dotted.startswith(key + "."):
            out.append((f"--{alias}", dotted.removeprefix(key + ".")))
    return out


def flag_text(key: str, own: Collection[str] = ()) -> str:
    """``--train.epochs=8  (or --epochs)``: how to set ``key``, with its default and short forms (those but
    the flags in ``own``, which the command defines as options of its own, e.g. ``nas rank --epochs``)."""
    from nas.run.config import setting_fields

    f = setting_fields()[key]
    default = f.default_factory() if callable(f.default_factory) else f.default
    (long, _), *shorts = flags(key)
    also = [flag if entry is None else f"{flag} ({entry})" for flag, entry in shorts if flag not in own]
    return f"{long}={shown_default(default)}" + (f"  (or {', '.join(also)})" if also else "")


def setting_lines(key: str, own: Collection[str] = (), indent: str = "  ") -> list[str]:
    """One setting in a command's help: how to set it (with its default), its description, what it
    allows."""
    from nas.run.config import RUN, setting_fields

    f = setting_fields()[key]
    allowed = domain_text(key)
    if RUN in f.metadata["roles"]:
        allowed += f"; {RUN_FIXED}"
    return [f"{indent}{flag_text(key, own)}", f"{indent}    {f.metadata['doc']}", f"{indent}    {allowed}"]


def settings_help(reads: Sequence[str], own: Collection[str] = ()) -> str:
    """The settings section of a command's ``--help``: every selected setting, grouped by section (``own``:
    the command's own option strings, not shown as short forms of a setting)."""
    keys = selected_keys(reads)
    lines = [
        "settings (--section.key=VALUE on the command line, or the same sections in a --config YAML file;"
        " `nas config explain KEY` says more about one):"
    ]
    for section in dict.fromkeys(section_of(k) for k in keys):
        title = "general (top level)" if section == GENERAL else section
        lines.append(f"\n{title}:")
        for key in keys:
            if section_of(key) == section:
                lines.extend(setting_lines(key, own))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the commands


def command_parsers(
    parser: argparse.ArgumentParser, prefix: str = "nas"
) -> dict[str, argparse.ArgumentParser]:
    """``"nas latency calibrate"`` -> its parser, for every command and sub-command under ``parser``."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out[f"{prefix} {name}"] = child
                out.update(command_parsers(child, f"{prefix} {name}"))
    return out


def readers(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Setting -> the commands whose help lists it (what they declare they read)."""
    out: dict[str, list[str]] = {}
    for command, child in command_parsers(parser).items():
        if isinstance(child, CommandParser) and child.reads:
            for key in selected_keys(child.reads):
                out.setdefault(key, []).append(command)
    return out


def command_table(rows: Iterable[tuple[str, str, str]]) -> str:
    """The README's command table as ``nas --help`` shows it: each command, what it does, an example."""
    rows = list(rows)
    width = max(len(name) for name, _, _ in rows) + 2
    lines = []
    for name, does, example in rows:
        lines.append(f"  {name:<{width}}{does}")
        lines.append(f"  {'':<{width}}e.g. {example}")
    return "\n".join(lines)


def closest_keys(word: str, keys: Iterable[str], aliases: Mapping[str, str], n: int = 3) -> list[str]:
    """The settings a mistyped ``word`` most likely meant: its last part against each key's last part, and
    the whole word against each short form (a shared section alone makes no key close)."""
    word = word.lower()
    last = word.rsplit(".", 1)[-1]
    scores: dict[str, float] = {}
    for key in keys:
        pairs = [(last, key.rsplit(".", 1)[-1])] + [(word, a) for a, d in aliases.items() if d == key]
        scores[key] = max(difflib.SequenceMatcher(None, w, s.lower()).ratio() for w, s in pairs)
    ranked = sorted((k for k, s in scores.items() if s >= 0.75), key=lambda k: -scores[k])
    return ranked[:n]
