"""`nas config show` (a run's resolved settings, or the defaults, as YAML) and `nas config explain KEY`."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from nas_runs import finished_run, snapshot

from nas.cli import build_parser, main
from nas.commands.help import readers
from nas.run.config import NASConfig, build_config, load_yaml, setting_fields


def _nas(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line a refused command prints (exit status 2)."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas: error: "), err
    return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory)[0]


# --------------------------------------------------------------------------- show


def test_show_without_a_run_directory_prints_the_defaults() -> None:
    from nas.run.context import resolve_config

    code, out = _nas("config", "show")
    shown = yaml.safe_load(out)
    assert code == 0 and shown == resolve_config(None, None, []).to_dict()  # as a command resolves them
    defaults = NASConfig().to_dict()
    assert {k: v for k, v in shown.items() if not isinstance(v, dict)} == {
        k: v for k, v in defaults.items() if not isinstance(v, dict)
    }
    assert shown["search"] == defaults["search"] and shown["space"] == defaults["space"]


def test_show_prints_a_runs_resolved_settings_and_writes_nothing(run_dir: Path) -> None:
    before = snapshot(run_dir)
    code, out = _nas("config", "show", "--run-dir", str(run_dir))
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown == build_config(load_yaml(run_dir / "config.yaml")).to_dict()
    assert shown["space"]["name"] == "tiny" and shown["train"]["epochs"] == 3  # the run's, not the defaults
    assert build_config(shown).to_dict() == shown  # the output is itself a --config file
    assert snapshot(run_dir) == before


def test_show_applies_the_settings_given_and_refuses_a_run_changing_one(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _nas("config", "show", "--run-dir", str(run_dir), "--trials=50")
    assert code == 0 and yaml.safe_load(out)["search"]["trials"] == 50
    err = _error(capsys, "config", "show", "--run-dir", str(run_dir), "--epochs=5")
    assert "train.epochs" in err


def test_show_refuses_a_value_outside_its_domain(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "config", "show", "--train.lr=-1")
    assert "train.lr=-1" in err and "> 0" in err


def test_show_of_a_directory_that_is_not_a_run_is_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(capsys, "config", "show", "--run-dir", str(tmp_path / "nope"))
    assert "is not a run directory" in err and not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- explain


def _explain(word: str) -> dict[str, Any]:
    code, out = _nas("config", "explain", word)
    assert code == 0
    first, *rest = out.splitlines()
    fields = dict(line.strip().split(":", 1) for line in rest)
    return {"first": first, **{k: v.strip() for k, v in fields.items()}}


def test_explain_train_sampler_says_everything_about_it() -> None:
    from nas.training.sampling import SAMPLING_RULES

    f = setting_fields()["train.sampler"]
    got = _explain("train.sampler")
    assert got["first"] == f"train.sampler: {f.metadata['doc']}"
    assert got["default"] == "sandwich"
    assert got["allowed"] == f"{f.metadata['domain'].describe()} (str): {', '.join(SAMPLING_RULES.known())}"
    assert got["set with"] == "--train.sampler=VALUE; or `train: {sampler: VALUE}` in a --config file"
    commands = readers(build_parser())["train.sampler"]
    assert got["read by"] == ", ".join(commands) and {"nas train", "nas run"} <= set(commands)
    assert got["on resume"].startswith("fixed once a run directory exists")
    assert got["roles"] == "run, supernet"


def test_explain_says_a_runtime_setting_may_change_on_resume() -> None:
    got = _explain("search.trials")
    assert got["on resume"].startswith("may change") and got["default"] == "40"
    assert "--trials=VALUE" in got["set with"] and "nas search" in got["read by"]


def test_explain_takes_short_forms() -> None:
    assert _explain("epochs")["first"].startswith("train.epochs: ")
    assert _explain("latency-budget-ms")["first"].startswith("search.latency_budget_ms: ")
    got = _explain("max-params")  # one entry of a mapping
    assert got["first"].startswith("search.constraints: ") and got["entry"].startswith("params")


def test_every_setting_can_be_explained() -> None:
    for key, f in setting_fields().items():
        assert _explain(key)["first"] == f"{key}: {f.metadata['doc']}"


def test_an_unknown_key_gives_one_line_with_the_closest_keys(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "config", "explain", "train.samplr")
    assert "unknown setting 'train.samplr'" in err and "did you mean train.sampler?" in err
    err = _error(capsys, "config", "explain", "search.trails")
    assert "search.trials" in err
    err = _error(capsys, "config", "explain", "zzzz")
    assert "no setting has a similar name" in err


def test_explain_takes_no_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no settings" in _error(capsys, "config", "explain", "train.lr", "--train.lr=3")
