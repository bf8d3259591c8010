"""Every setting refuses what its declared domain does not allow, through the command line, before anything is
written: exit 2, one line naming the setting, no run directory created, an existing run's files unchanged.

Invalid values are derived from each setting's type and domain (``nas/run/config.py``), so a new setting is
covered the day it is declared; the few free-form settings get theirs from :data:`FREE_FORM`.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nas_runs import snapshot

from nas.cli import main
from nas.run.config import Named, NASConfig, OneOf, Pattern, Range, setting_fields, short_form

BASE = [
    "--space=tiny", "--data.resolution=16", "--train-limit=64", "--epochs=1", "--search.devices=[laptop-cpu]",
    "--trackers=jsonl", "--quiet",
]  # fmt: skip

FREE_FORM = {  # settings whose domain is not a range or a list of names: a value each that cannot work
    "space.options": ["{bogus_option: 1}", "3"],
    "space.supernet_options": ["{bogus_option: 1}"],
    "train.sampler_options": ["{bogus_option: 1}"],
    "search.controller_options": ["{bogus_option: 1}"],
    "search.constraints": ["{flops: 3}", "{params: -3}", "{macs: lots}"],
    "search.devices": ["[]", "[no-such-device]"],
    "search.profile": ["/no/such/profile.json"],
    "search.storage": ["not a database url"],
}
NO_INVALID_VALUE = {  # settings every value of their type is fine for, and why
    "data.data_dir": (
        "digits is embedded and reads no files; a wrong folder is an error only for data sets that read one"
    ),
    "search.study": "any name is a valid study name",
}


def _base_type(hint: typing.Any) -> typing.Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and len(args) == 1 else hint


def invalid_values(key: str) -> list[str]:
    """Command-line values of ``key`` its type or domain refuses."""
    if key in FREE_FORM:
        return FREE_FORM[key]
    f = setting_fields()[key]
    section, _, name = key.rpartition(".")
    hints = typing.get_type_hints(type(getattr(NASConfig(), section)) if section else NASConfig)
    typ, domain = _base_type(hints[name]), f.metadata["domain"]
    out: list[str] = []
    if typ is bool:
        out += ["maybe", "3"]
    elif typ is int:
        out += ["many", "1.5"]
    elif typ is float:
        out += ["many", ".nan", ".inf"]
    if isinstance(domain, Range):
        if domain.lo is not None:
            out.append(
                str(domain.lo if domain.lo_open else (domain.lo - 1 if typ is int else domain.lo - 0.5))
            )
        if domain.hi is not None:
            out.append(
                str(domain.hi if domain.hi_open else (domain.hi + 1 if typ is int else domain.hi * 2 + 1))
            )
    elif isinstance(domain, (OneOf, Pattern, Named)):
        out.append(
            "[no-such-name]"
            if typing.get_origin(typ) is list
            else ("''" if isinstance(domain, Pattern) else "no-such-name")
        )
    return out


CASES = [(key, value) for key in setting_fields() for value in invalid_values(key)]


def test_every_setting_has_invalid_values_or_a_reason_it_has_none():
    covered = {key for key, _ in CASES}
    assert covered | set(NO_INVALID_VALUE) == set(setting_fields())
    assert not covered & set(NO_INVALID_VALUE)


def _refused(capsys: pytest.CaptureFixture[str], rc: int, key: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("nas: error: ") and err.count("\n") == 1, f"not one error line: {err!r}"
    named = [key, *([f"--{short_form(key)}"] if short_form(key) else [])]
    assert any(n in err for n in named), f"{key} not named in: {err}"


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_an_invalid_value_is_refused_before_a_run_directory_exists(key, value, tmp_path, capsys):
    run_dir = tmp_path / "new" / "run"
    _refused(capsys, main(["run", "--run-dir", str(run_dir), *BASE, f"--{key}={value}"]), key)
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert (
        main(
            [
                "run",
                "--run-dir",
                str(run_dir),
                *BASE,
                "--trials=2",
                "--export.latency_repeats=2",
                "--format=torch",
            ]
        )
        == 0
    )
    return run_dir


def _out_of_range(key: str, domain: Range, is_int: bool) -> st.SearchStrategy[str]:
    """Numbers just outside ``domain`` or far outside it, and the non-finite ones."""
    parts = [st.sampled_from([".nan", ".inf", "-.inf"])] if not is_int else []
    if domain.lo is not None:
        below = (
            st.integers(max_value=int(math.ceil(domain.lo)) - (0 if domain.lo_open else 1))
            if is_int
            else st.floats(
                max_value=domain.lo, exclude_max=not domain.lo_open, allow_nan=False, allow_infinity=False
            )
        )
        parts.append(below.map(str))
    if domain.hi is not None:
        above = (
            st.integers(min_value=int(math.floor(domain.hi)) + (0 if domain.hi_open else 1))
            if is_int
            else st.floats(
                min_value=domain.hi, exclude_min=not domain.hi_open, allow_nan=False, allow_infinity=False
            )
        )
        parts.append(above.map(str))
    return st.one_of(*parts)


def _ranged() -> list[tuple[str, Range, bool]]:
    out = []
    for key, f in setting_fields().items():
        if isinstance(f.metadata["domain"], Range):
            section, _, name = key.rpartition(".")
            hints = typing.get_type_hints(type(getattr(NASConfig(), section)) if section else NASConfig)
            out.append((key, f.metadata["domain"], _base_type(hints[name]) is int))
    return out


@st.composite
def invalid_setting(draw: st.DrawFn) -> tuple[str, str]:
    """Any setting with a value outside its domain: drawn from the range domains' far sides, or the derived
    cases."""
    if draw(st.booleans()):
        key, domain, is_int = draw(st.sampled_from(_ranged()))
        return key, draw(_out_of_range(key, domain, is_int))
    return draw(st.sampled_from(CASES))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invalid_setting())
def test_an_invalid_value_leaves_a_finished_run_as_it_was(finished, capsys, case):
    key, value = case
    before = snapshot(finished)
    _refused(capsys, main(["search", "--run-dir", str(finished), *BASE, f"--{key}={value}"]), key)
    assert snapshot(finished) == before
