"""``nas config show|explain``: a run's resolved settings as YAML, and everything the engine knows about one
setting.

Both read the declarations in :mod:`nas.run.config` (default, description, roles, domain) and the settings
each command declares it reads (its ``READS``), so they stay true as settings and commands are added.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    (
        "config",
        "a run's resolved settings (or the defaults) as YAML; what one setting means",
        "nas config explain train.sampler",
    ),
)


def add_parsers(sub: Any) -> None:
    cfg = sub.add_parser(
        "config",
        help="a run's resolved settings as YAML, or what one setting means",
        description="Show the resolved settings of a run directory (or the defaults); explain one setting.",
    )
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="{show,explain}")
    show = csub.add_parser(
        "show",
        help="the resolved settings as YAML (a run directory's, else the defaults), usable as --config FILE",
        description=(
            "Print the resolved settings as YAML: the defaults <- the run directory's config.yaml <- --config"
            " FILE <- --section.key=value. The output is itself a valid --config file."
        ),
    )
    show.add_argument("--run-dir", help="run directory whose settings to show (default: none, the defaults)")
    show.add_argument(
        "--config", help="YAML file with settings (sections: data, space, train, search, export)"
    )
    explain = csub.add_parser(
        "explain",
        help="one setting: description, default, allowed values, which commands read it, whether it is fixed",
        description=(
            "Everything about one setting: its description, default, allowed values, how to set it, which"
            " commands read it and whether it may change once a run directory exists."
        ),
    )
    explain.add_argument("key", metavar="KEY", help="a setting, e.g. train.sampler, or a short form: epochs")
    for p in (show, explain):
        p.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas config show [--run-dir DIR] [--config FILE] [--section.key=value ...]`` or ``nas config explain
    KEY``."""
    from nas.run.config import ConfigError

    if args.config_command == "show":
        print(show(Path(args.run_dir) if args.run_dir else None, base, overrides), end="")
        return 0
    if overrides:
        raise ConfigError(f"nas config explain takes one KEY and no settings, got {' '.join(overrides)}")
    print(explain(args.key, args.root_parser))
    return 0


def show(run_dir: Path | None, base: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> str:
    """The resolved settings as YAML (what ``nas config show`` prints); a run directory must exist and hold a
    config."""
    import yaml

    from nas.run.config import check_domains
    from nas.run.context import CONFIG_FILE, resolve_config
    from nas.run.files import RunDirError

    if run_dir is not None and not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = resolve_config(run_dir, base, overrides)
    check_domains(cfg)
    where = f"run directory {run_dir}" if run_dir is not None else "defaults"
    header = f"# resolved settings ({where}{', with the settings given' if base or overrides else ''})\n"
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def resolve_key(word: str) -> tuple[str, str | None]:
    """``(setting, entry)`` for what a user typed: a dotted key, a short form (``epochs``, ``--epochs``) or a
    short form of one entry of a mapping (``max-params``: ``("search.constraints", "params")``).

    An unknown word is a :class:`~nas.run.config.ConfigError` naming the closest settings, on one line.
    """
    from nas.commands.help import closest_keys
    from nas.run.config import ALIASES, ConfigError, setting_fields

    fields = setting_fields()
    key = word.strip().lstrip("-")
    key = ALIASES.get(key, key)
    if key in fields:
        return key, None
    parent = next((k for k in fields if key.startswith(k + ".")), None)
    if parent is not None and isinstance(fields[parent].default_factory(), dict):  # type: ignore[misc]
        return parent, key[len(parent) + 1 :]
    close = closest_keys(word.strip().lstrip("-"), fields, ALIASES)
    hint = f"did you mean {', '.join(close)}?" if close else "no setting has a similar name"
    raise ConfigError(f"unknown setting {word!r}: {hint} (`nas config show` lists every setting)")


def explain(word: str, parser: argparse.ArgumentParser) -> str:
    """What ``nas config explain WORD`` prints; ``parser`` is the ``nas`` parser, whose commands declare the
    settings they read."""
    from nas.commands.help import domain_text, flags, readers, shown_default
    from nas.run.config import RUN, setting_fields

    key, entry = resolve_key(word)
    f = setting_fields()[key]
    default = f.default_factory() if callable(f.default_factory) else f.default
    roles = sorted(f.metadata["roles"])
    fixed = (
        "fixed once a run directory exists (it defines the run: a different value there is refused)"
        if RUN in roles
        else "may change on every command, also on an existing run directory"
    )
    section, _, name = key.rpartition(".")
    in_yaml = f"{section}: {{{name}: VALUE}}" if section else f"{name}: VALUE"
    ways = [f"{flag}=VALUE" + (f" (sets {entry})" if entry else "") for flag, entry in flags(key)]
    lines = [
        f"{key}: {f.metadata['doc']}",
        *([f"  entry:     {entry}, one key of the mapping {key}"] if entry else []),
        f"  default:   {shown_default(default)}",
        f"  allowed:   {domain_text(key, cheap_only=False)}",
        f"  set with:  {', '.join(ways)}; or `{in_yaml}` in a --config file",
        f"  read by:   {', '.join(readers(parser).get(key, [])) or 'no command lists it'}",
        f"  on resume: {fixed}",
        f"  roles:     {', '.join(roles) or 'none'}",
    ]
    return "\n".join(lines)
