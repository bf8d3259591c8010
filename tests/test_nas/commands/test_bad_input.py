"""Bad input a user can give `nas` (issue 7, deliverable 5), one test per kind, through the CLI.

Every case must end with exit status 2 and exactly one stderr line starting with
``nas: error:`` that names the problem (no traceback), and must leave the run
directory as it was: every file hashed before and after is unchanged, and a run
directory that did not exist is not created.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nas_runs import SETTINGS, TRIALS, finished_run, snapshot

from nas.cli import main
from nas.cost import CostModel, DeviceProfile
from nas.run import files as rundir
from nas.run.context import build_space, resolve_config
from nas.training.checkpoint import checkpoint_path

TINY = [
    "--space=tiny",
    "--data.resolution=16",
    "--data.train_limit=128",
    "--data.val_limit=64",
    "--trackers=jsonl",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (trained, searched, exported), shared read-only: tests that mutate it copy it."""
    return finished_run(tmp_path_factory)[0]


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def _refused(capsys: pytest.CaptureFixture[str], rc: int, *names: str) -> str:
    """Exit 2, one `nas: error:` line on stderr naming every ``names``, no traceback; returns the line."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("nas: error: ") and err.count("\n") == 1, f"not one error line: {err!r}"
    assert "Traceback" not in err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"
    return err


def _refuses_without_writing(
    capsys: pytest.CaptureFixture[str], run_dir: Path, argv: list[str], *names: str
) -> str:
    """Run ``argv`` against ``run_dir``: refused (see :func:`_refused`) and nothing in ``run_dir`` created or
    changed."""
    existed, before = run_dir.exists(), snapshot(run_dir)
    line = _refused(capsys, main(argv), *names)
    assert run_dir.exists() == existed, f"{run_dir} was {'created' if not existed else 'removed'}"
    assert snapshot(run_dir) == before, "files in the run directory were written"
    return line


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    "where, argv, names",
    [
        ("fresh", ["train", "--space=nope"], ["unknown search space 'nope'", "space.name"]),
        ("fresh", ["train", "--supernet=nope"], ["unknown supernet kind 'nope'"]),
        ("fresh", ["train", "--data=nope"], ["unknown data set 'nope'"]),
        ("fresh", ["run", "--controller=nope"], ["unknown controller 'nope'", "search.controller"]),
        ("trained", ["search", "--controller=nope"], ["unknown controller 'nope'"]),
        ("trained", ["search", "--device=tpu"], ["device='tpu' is not allowed", "auto, cpu, cuda"]),
        ("trained", ["search", "--search.devices=cpu,nope-board"], ["no 'nope-board' profile"]),
        ("trained", ["export", "--format=gif"], ["unknown export format 'gif'", "--format"]),
        ("fresh", ["run", "--format=torch,gif"], ["unknown export format 'gif'"]),
        (
            "fresh",
            ["export", "--space=resnet20_pool", "--format=timm"],
            ["export format 'timm' does not apply to space 'resnet20_pool'"],
        ),
    ],
)
def test_unknown_space_controller_device_or_format(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
    argv: list[str],
    names: list[str],
) -> None:
    """Refused before any work: on a fresh path no run directory appears, on a trained one nothing changes."""
    command, *settings = argv
    run_dir = tmp_path / "new" if where == "fresh" else trained
    extra = TINY if where == "fresh" and not any(s.startswith("--space=") for s in settings) else ["--quiet"]
    _refuses_without_writing(capsys, run_dir, [command, "--run-dir", str(run_dir), *extra, *settings], *names)


# --------------------------------------------------------------------------- config keys and values

_YAML = {
    "unknown key": ("search:\n  trialz: 3\n", ["unknown config key 'search.trialz'", "search keys"]),
    "unknown section": ("serach:\n  trials: 3\n", ["unknown config key 'serach'"]),
    "wrong type": ("search:\n  trials: many\n", ["'search.trials' expects int, got 'many'"]),
    "malformed": ("search: [trials: 3\n  budget\n", ["is not valid YAML"]),
    "not a mapping": ("- trials\n- 3\n", ["must hold a mapping of keys, got list"]),
    "section given a value": ("search: 3\n", ["'search' is a section"]),
}
_OVERRIDES = {
    "unknown key": (["--search.trialz=3"], ["unknown config key 'search.trialz'"]),
    "unknown section": (["--serach.trials=3"], ["unknown config key 'serach'"]),
    "wrong type": (["--trials=many"], ["'search.trials' expects int, got 'many'"]),
    "wrong bool": (
        ["--train.deterministic=maybe"],
        ["'train.deterministic' expects true/false, got 'maybe'"],
    ),
    "missing value": (["--search.trials"], ["--search.trials needs a value"]),
    "not a setting": (["stray"], ["unexpected argument 'stray'"]),
    "out of range": (["--trials=0"], ["search.trials=0 (--trials) is not allowed", ">= 1"]),
}


@pytest.mark.parametrize(
    "source, case",
    [*(("yaml", k) for k in _YAML), *(("override", k) for k in _OVERRIDES), ("yaml", "missing file")],
)
def test_malformed_or_unknown_config(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, case: str
) -> None:
    """A YAML file or a --key=value that cannot be used names the key (and the file); the trained run is
    untouched."""
    argv = ["search", "--run-dir", str(trained), "--quiet"]
    if source == "yaml" and case == "missing file":
        names = [f"config file {tmp_path / 'nope.yaml'} does not exist"]
        argv += ["--config", str(tmp_path / "nope.yaml")]
    elif source == "yaml":
        text, names = _YAML[case]
        (tmp_path / "cfg.yaml").write_text(text)
        argv += ["--config", str(tmp_path / "cfg.yaml")]
        names = [*names, *(["cfg.yaml"] if case in ("malformed", "not a mapping") else [])]
    else:
        settings, names = _OVERRIDES[case]
        argv += settings
    _refuses_without_writing(capsys, trained, argv, *names)


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads `1e-3` as a string; a learning rate written that way must still be a float, not an
    error."""
    from nas.run.config import build_config, load_yaml

    (tmp_path / "cfg.yaml").write_text("train:\n  lr: 1e-3\n")
    assert build_config(load_yaml(tmp_path / "cfg.yaml"), ["train.weight_decay=5E-5"]).train.lr == 1e-3
    assert build_config(overrides=["train.weight_decay=5E-5"]).train.weight_decay == 5e-5


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    "case, names",
    [
        ("value", ["s0.b0.kernel=9 is not allowed in space 'tiny'", "allowed values: [3, 5]"]),
        ("unknown key", ["space 'tiny' has no choice 'bogus'"]),
        ("missing key", ["is missing choice 's1.depth'"]),
        ("not an object", ["must be a mapping of choice -> value, got list"]),
        ("malformed", ["not valid JSON"]),
        ("missing", ["file not found"]),
    ],
)
def test_latency_predict_arch_not_of_the_space(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, names: list[str]
) -> None:
    """`nas latency predict --arch FILE` with an architecture the space does not have names the file and the
    key."""
    arch = json.loads((trained / "export" / "arch.json").read_text())
    path = tmp_path / "arch.json"
    if case == "value":
        arch["s0.b0.kernel"] = 9
    elif case == "unknown key":
        arch["bogus"] = 1
    elif case == "missing key":
        del arch["s1.depth"]
    text = {"not an object": "[3, 5]", "malformed": "{'s0.b0.kernel': 3"}.get(case, json.dumps(arch))
    if case != "missing":
        path.write_text(text)
    argv = ["latency", "predict", "--run-dir", str(trained), "--arch", str(path), "--quiet", "--json"]
    _refuses_without_writing(capsys, trained, argv, str(path), *names)


def test_export_of_a_trial_whose_arch_is_not_of_the_space(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study trial holding an architecture of another space (e.g. a study shared by mistake) is refused
    before export writes."""
    run_dir = _copy(trained, tmp_path / "run")
    bad = json.loads((run_dir / "export" / "arch.json").read_text()) | {"s1.b0.kernel": 7}
    with sqlite3.connect(run_dir / "study.db") as con:
        (trial_id,) = con.execute("SELECT trial_id FROM trials WHERE number = 2").fetchone()
        con.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'arch'",
            (json.dumps(json.dumps(bad)), trial_id),
        )
    con.close()
    argv = ["export", "--run-dir", str(run_dir), "--quiet", "--trial=2"]
    _refuses_without_writing(
        capsys, run_dir, argv, "trial 2's architecture does not belong to space 'tiny'", "s1.b0.kernel=7"
    )


# --------------------------------------------------------------------------- checkpoints


def _spoil(ckpt: Path, kind: str) -> None:
    if kind == "corrupt":  # e.g. a copy cut short
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    elif kind == "foreign":  # a real checkpoint of another space and data set
        state = torch.load(ckpt, weights_only=False)
        state["fingerprint"] = {**state["fingerprint"], "space": "mbv3", "data": "fashion_mnist"}
        torch.save(state, ckpt)
    else:  # a torch file that is not ours (a bare state dict)
        torch.save(torch.load(ckpt, weights_only=False)["model"], ckpt)


@pytest.mark.parametrize("command", ["train", "search", "export", "run"])
@pytest.mark.parametrize(
    "kind, names",
    [
        ("corrupt", ["is corrupt or unreadable"]),
        ("foreign", ["was trained with a different space or data set", "'mbv3'"]),
        ("not ours", ["is not a supernet checkpoint"]),
    ],
)
def test_corrupt_or_foreign_checkpoint(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    kind: str,
    names: list[str],
) -> None:
    """Every command refuses an unusable checkpoint, names it, and never overwrites it (nor anything else)."""
    run_dir = _copy(trained, tmp_path / "run")
    ckpt = checkpoint_path(run_dir)
    _spoil(ckpt, kind)
    _refuses_without_writing(
        capsys, run_dir, [command, "--run-dir", str(run_dir), "--quiet"], str(ckpt), *names
    )


# --------------------------------------------------------------------------- data directories


def _data_dir(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "data"
    if case == "imagefolder without class folders":
        (root / "train").mkdir(parents=True)
        (root / "train" / "readme.txt").write_text("images go in class folders")
    elif case == "imagefolder without train/":
        (root / "images" / "cat").mkdir(parents=True)
    elif case == "cifar10 with other files":
        (root / "cifar-10-batches-py").mkdir(parents=True)
        (root / "cifar-10-batches-py" / "train.bin").write_bytes(b"\0" * 100)
    elif case == "cifar10 with garbage batches":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
            (folder / name).write_bytes(b"not a pickle")
    elif case == "cifar10 with wrong shapes":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            (folder / name).write_bytes(
                pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]})
            )
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    return root  # "... missing": not created


@pytest.mark.parametrize(
    "data, case, names",
    [
        ("imagefolder", "imagefolder missing", ["does not exist", "DIR/train/<class>"]),
        ("imagefolder", "imagefolder without train/", ["has no train/ folder"]),
        ("imagefolder", "imagefolder without class folders", ["no usable classes/images"]),
        ("cifar10", "cifar10 missing", ["does not exist", "cifar-10-batches-py"]),
        ("cifar10", "cifar10 with other files", ["files missing", "data_batch_1"]),
        ("cifar10", "cifar10 with garbage batches", ["is not a readable CIFAR pickle"]),
        ("cifar10", "cifar10 with wrong shapes", ["data_batch_1", "[N, 3072]"]),
        (
            "fashion_mnist",
            "fashion_mnist missing",
            ["does not exist", "apt-get install dataset-fashion-mnist"],
        ),
    ],
)
def test_missing_or_malformed_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, case: str, names: list[str]
) -> None:
    """The error names the data directory (or file) and what it should hold; no run directory is left
    behind."""
    root = _data_dir(tmp_path, case)
    run_dir = tmp_path / "run"
    argv = ["train", "--run-dir", str(run_dir), f"--data={data}", f"--data-dir={root}", *TINY]
    _refuses_without_writing(capsys, run_dir, argv, str(root), *names)


# --------------------------------------------------------------------------- latency budget


@pytest.mark.parametrize("command", ["search", "run"])
def test_latency_budget_below_the_smallest_architecture(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """No architecture can meet it: refused before a search (or, for `nas run`, before training), naming the
    smallest latency."""
    profile = trained / "cost_profile.json"
    cfg = resolve_config(trained, None, [])
    space = build_space(cfg)
    floor = float(CostModel(space, DeviceProfile.load(profile)).predict([space.smallest()])[0])
    budget = f"--latency-budget-ms={floor * 0.9:.4f}"
    if command == "search":
        run_dir, argv = trained, ["search", "--run-dir", str(trained), "--quiet", budget]
    else:  # a fresh run: refused before an hour of training, not after
        run_dir = tmp_path / "run"
        argv = ["run", "--run-dir", str(run_dir), *SETTINGS, f"--search.profile={profile}", budget]
    _refuses_without_writing(
        capsys,
        run_dir,
        argv,
        "below the smallest architecture's predicted latency",
        f"{floor:.3f} ms",
        "search.latency_budget_ms",
    )


# --------------------------------------------------------------------------- non-finite loss


_NAN = re.compile(
    r"loss became (nan|inf|-inf) at epoch 1 step (\d+)/(\d+); last good checkpoint: (\S+) \(epoch 1 step"
    r" (\d+)/\3\)"
)


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A learning rate that blows up: training stops at the first non-finite loss and keeps the checkpoint
    before it."""
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--run-dir",
        str(run_dir),
        *TINY,
        "--data.train_limit=256",
        "--epochs=1",
        "--train.lr=1e12",
        "--train.grad_clip=null",
        "--train.warmup_epochs=0",
        "--train.checkpoint_every_steps=1",
    ]
    line = _refused(capsys, main(argv), "lower --train.lr")
    match = _NAN.search(line)
    assert match, line
    step, ckpt_step = int(match[2]), int(match[5])
    assert step >= 2 and ckpt_step == step - 1  # the checkpoint written after the last finite step
    ckpt = checkpoint_path(run_dir)
    assert Path(match[4]) == ckpt
    state = torch.load(ckpt, weights_only=False)
    assert (state["epoch"], state["position"]["step_in_epoch"]) == (0, step - 1)
    assert all(
        torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
    )  # a good checkpoint indeed
    # the same command resumes from it, meets the same step, and leaves the checkpoint as it was
    before = snapshot(run_dir)
    again = _refused(capsys, main(argv), f"at epoch 1 step {step}/", str(ckpt))
    assert _NAN.search(again)[0] == match[0]
    assert snapshot(run_dir) == before


# --------------------------------------------------------------------------- disk full


class _DiskFills:
    """A file whose write stores part of the data, then fails with ENOSPC (as a full disk does)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        self._f.write(bytes(memoryview(data)[: len(memoryview(data)) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_DiskFills":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _fill_disk_at(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1) -> list[int]:
    """From the ``nth`` atomic write of a file called ``name`` on, the low-level write hits a full disk."""
    real_fdopen, seen = os.fdopen, [0]

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{name}."):
            seen[0] += 1
            if seen[0] >= nth:
                return _DiskFills(f)
        return f

    monkeypatch.setattr(rundir.os, "fdopen", fdopen)
    return seen


@pytest.mark.parametrize("target", ["config.yaml", "pareto.json", "supernet_last.pt"])
def test_disk_full_while_writing(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    """ENOSPC mid-write: one line naming the file, its previous version intact and usable, no temp file
    left."""
    if (
        target == "supernet_last.pt"
    ):  # fresh training, checkpoint every step: the second checkpoint hits the full disk
        run_dir = tmp_path / "run"
        argv = ["train", "--run-dir", str(run_dir), *TINY, "--epochs=1", "--train.checkpoint_every_steps=1"]
        seen = _fill_disk_at(monkeypatch, target, nth=2)
        path = checkpoint_path(run_dir)
        before = None
    else:  # one more trial on a finished run: config.yaml is its first write, pareto.json its last
        run_dir = _copy(trained, tmp_path / "run")
        argv = ["search", "--run-dir", str(run_dir), "--quiet", f"--trials={TRIALS + 1}"]
        path = run_dir / ("config.yaml" if target == "config.yaml" else "search/pareto.json")
        before = path.read_bytes()
        seen = _fill_disk_at(monkeypatch, target)
    _refused(
        capsys,
        main(argv),
        f"disk full while writing {path}",
        "No space left on device",
        "previous version is intact",
    )
    monkeypatch.undo()
    assert seen[0] >= 1
    assert not [p for p in run_dir.rglob("*.tmp")], "a temp file was left behind"
    if before is not None:
        assert path.read_bytes() == before
    else:
        state = torch.load(path, weights_only=False)  # the first checkpoint, whole
        assert (state["epoch"], state["position"]["step_in_epoch"]) == (0, 1)
    if target == "config.yaml":
        assert snapshot(run_dir) == snapshot(trained)  # refused before anything else was written


# --------------------------------------------------------------------------- values that used to slip through

# settings that once were saved, ran for nothing, or failed late with someone else's message
SLIPPED_THROUGH = {
    "nan budget": (["run", "--latency-budget-ms=.nan"], ["search.latency_budget_ms", "nan"]),
    "no bn recalibration": (["run", "--train.bn_recal_batches=0"], ["train.bn_recal_batches", "chance"]),
    "population of one": (["run", "--search.population=1"], ["search.population", "pairs"]),
    "no latency repeats": (["run", "--export.latency_repeats=0"], ["export.latency_repeats"]),
    "mixture of 100": (
        [
            "train",
            "--space=resnet20_pool",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 100}",
        ],
        ["space.supernet_options", "100 weight sets"],
    ),
    "single-path with a depth gap": (
        [
            "train",
            "--supernet=single_path",
            "--space.options={depths: [1, 3]}",
            "--latency-budget-ms=1",
            "--search.devices=[laptop-cpu]",
        ],
        ["single_path", "depths [1, 3]"],
    ),  # fmt: skip
    "negative seed": (["train", "--seed=-1"], ["seed=-1", "32-bit"]),
    "empty validation": (["train", "--data.val_limit=0"], ["data.val_limit=0"]),
}


@pytest.mark.parametrize("case", sorted(SLIPPED_THROUGH))
def test_values_that_slipped_through_are_refused_before_anything_is_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, names = SLIPPED_THROUGH[case]
    run_dir = tmp_path / "new"
    _refuses_without_writing(capsys, run_dir, [argv[0], "--run-dir", str(run_dir), *TINY, *argv[1:]], *names)


def test_an_internal_error_is_not_shown_as_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: a ValueError deep in the engine) says it is one, keeps its traceback, exits 1 (not 2)."""
    import nas.data

    def broken(*args, **kwargs):
        raise ValueError("an engine bug, not a bad setting")

    monkeypatch.setattr(nas.data, "_load_digits", broken)
    rc = main(["train", "--run-dir", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("nas: internal error") and "not in your settings" in err
    saved = Path(err.rsplit("traceback saved to ", 1)[1].strip())
    assert "an engine bug, not a bad setting" in saved.read_text() and "Traceback" in saved.read_text()
    saved.unlink()
