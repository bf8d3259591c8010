"""`nas --help` and each command's `--help`: the command table of the README, and the settings each command
reads, with default, domain and the config's own description, all derived from their declarations."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.cli import build_parser, main
from nas.commands import COMMANDS
from nas.commands.help import (
    REGISTRIES,
    RUN_FIXED,
    CommandParser,
    command_parsers,
    registered_names,
    selected_keys,
)
from nas.run.config import ALIASES, RUN, Domain, Named, setting_fields

ROOT = Path(__file__).resolve().parents[3]


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return out.getvalue()


def _listed(text: str) -> dict[str, list[str]]:
    """Setting -> its three lines (flags with default, description, domain) as a command's help shows them."""
    lines = text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"  --([a-z_.]+)=.*", line)
        if m and m.group(1) in setting_fields():
            out[m.group(1)] = lines[i : i + 3]
    return out


HELPS = {
    name: parser.format_help()
    for name, parser in command_parsers(build_parser()).items()
    if isinstance(parser, CommandParser) and parser.reads
}


def _default(f: dataclasses.Field) -> object:
    return f.default_factory() if callable(f.default_factory) else f.default


# --------------------------------------------------------------------------- nas --help


def test_nas_help_does_not_import_torch() -> None:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nas.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0 and "usage: nas" in res.stdout
    imported = {
        line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time")
    }
    assert "nas.commands.run" in imported  # the import log is the real one (nas.cli itself runs as __main__)
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "optuna", "search_spaces", "sklearn"))
    assert heavy == [], heavy


def _readme_table() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n\n", 2)[1]  # the table after the heading
    rows = []
    for line in section.splitlines()[2:]:  # header and rule skipped
        command, does, example = (c.strip() for c in line.strip().strip("|").split(" | "))
        rows.append((command.strip("`").removeprefix("nas "), does, example.strip("`")))
    return rows


def test_nas_help_shows_the_readme_command_table() -> None:
    rows = [row for command in COMMANDS for row in command.TABLE]
    assert rows == _readme_table()
    text = _help()
    for name, does, example in rows:
        assert re.search(rf"^  {re.escape(name)} +{re.escape(does)}$", text, re.M), name
        assert f"e.g. {example}" in text


def test_the_command_table_has_one_row_per_command() -> None:
    rows = {name.removesuffix(" ...") for command in COMMANDS for name, _, _ in command.TABLE}
    commands = {name.split()[1] for name in command_parsers(build_parser()) if len(name.split()) == 2}
    assert rows == commands


# --------------------------------------------------------------------------- settings in each command's help


def test_train_help_lists_every_train_and_data_setting_with_default_and_domain() -> None:
    listed = _listed(_help("train"))
    wanted = [k for k in setting_fields() if k.startswith(("train.", "data."))]
    assert wanted and set(wanted) <= set(listed)
    for key in wanted:
        f = setting_fields()[key]
        flags, doc, domain = listed[key]
        shown = flags.split("=", 1)[1].split("  (or ")[0]
        assert yaml.safe_load(shown) == _default(f), key  # the default, as it would be typed
        assert doc.strip() == f.metadata["doc"]
        declared = f.metadata["domain"]
        if type(declared) is Domain and f.type in ("bool", bool):
            assert domain.strip().startswith("true or false"), key
        else:  # the domain's own description, then the type
            assert domain.strip().startswith(f"{declared.describe()} ("), key


def test_every_setting_appears_in_the_help_of_some_command() -> None:
    seen = set().union(*(_listed(text) for text in HELPS.values()))
    assert set(setting_fields()) - seen == set()


def test_each_help_text_is_the_configs_own_description() -> None:
    checked = 0
    for command, text in HELPS.items():
        for key, (_, doc, _) in _listed(text).items():
            assert doc == "      " + setting_fields()[key].metadata["doc"], (command, key)
            checked += 1
    assert checked > len(setting_fields())


def test_each_command_lists_exactly_the_settings_it_declares() -> None:
    for name, parser in command_parsers(build_parser()).items():
        if isinstance(parser, CommandParser) and parser.reads:
            assert list(_listed(parser.format_help())) == selected_keys(parser.reads), name
    assert set(_listed(_help("report"))) == {"trackers", "wandb_project", "wandb_mode"}


def test_settings_are_grouped_by_section() -> None:
    text = _help("run").split("\nsettings (", 1)[1]
    headings = re.findall(r"^([a-z ()]+):$", text, re.M)
    assert headings == ["general (top level)", "data", "space", "train", "search", "export"]
    for section in ("data", "space", "train", "search", "export"):
        block = text.split(f"\n{section}:\n", 1)[1].split("\n\n", 1)[0]
        assert all(k.startswith(section + ".") for k in _listed(block)) and _listed(block)


def test_short_forms_are_shown_next_to_their_long_keys() -> None:
    text = _help("run")
    listed = _listed(text)
    for alias, dotted in ALIASES.items():
        if dotted in setting_fields() and alias != dotted:
            assert f"--{alias}" in listed[dotted][0].split("  (or ", 1)[1], alias
        elif dotted not in setting_fields():  # one entry of a mapping: --max-params sets constraints.params
            parent, entry = dotted.rsplit(".", 1)
            assert f"--{alias} ({entry})" in listed[parent][0], alias


def test_settings_that_define_the_run_say_they_are_fixed() -> None:
    for key, (_, _, domain) in _listed(_help("run")).items():
        assert (RUN_FIXED in domain) == (RUN in setting_fields()[key].metadata["roles"]), key


def test_named_domains_list_their_registered_names_or_say_where() -> None:
    listed = _listed(_help("run"))
    families = {
        f.metadata["domain"].family: k
        for k, f in setting_fields().items()
        if isinstance(f.metadata["domain"], Named)
    }
    assert set(families) <= set(REGISTRIES)  # a new family of names gets its registry here
    for family, key in families.items():
        domain = listed[key][2]
        if REGISTRIES[family][2]:
            names = registered_names(family, cheap_only=True)
            assert names and domain.split(": ", 1)[1].startswith(", ".join(names)), key
        else:
            assert f"`nas config explain {key}` lists them" in domain


def test_a_setting_added_to_the_config_shows_up_without_any_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(setting_fields())
    new = dataclasses.field(
        default=3,
        metadata={"doc": "a knob added later", "roles": frozenset(), "domain": Named(family="tracker")},
    )
    new.name, new.type = "knob", "int"
    fields["train.knob"] = new
    monkeypatch.setattr("nas.run.config.setting_fields", lambda: fields)
    lines = _help("train").splitlines()
    at = lines.index("  --train.knob=3")
    assert lines[at + 1] == "      a knob added later" and lines[at + 2].startswith(
        "      the name of a registered tracker"
    )


def test_a_selector_that_selects_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="selects no setting"):
        selected_keys(("train.no_such_key",))
    with pytest.raises(ValueError, match="unknown role"):
        selected_keys(("role:nope",))
    assert selected_keys(("role:runtime",)) == [
        k for k, f in setting_fields().items() if "runtime" in f.metadata["roles"]
    ]


def test_a_short_form_the_command_takes_as_its_own_option_is_not_offered_as_the_setting() -> None:
    epochs = setting_fields()["train.epochs"].default
    assert _listed(_help("train"))["train.epochs"][0] == f"  --train.epochs={epochs}  (or --epochs)"
    rank = _help("rank")  # `nas rank --epochs N` is the standalone trainings' epochs, not train.epochs
    assert "  --epochs EPOCHS" in rank and _listed(rank)["train.epochs"][0] == f"  --train.epochs={epochs}"
