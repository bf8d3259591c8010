"""`nas report`: figures, self-contained HTML/Markdown, and what the trackers receive, on one small digits
run.

The run is read back the way its users would: the HTML in a real headless
browser (Debian's chromium, installed with apt-get when missing; the browser
test is skipped only if that fails), the TensorBoard event files with
TensorBoard's own reader, the study with stock Optuna, the offline wandb run
with wandb's own record format, and the figures as matplotlib objects.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from PIL import Image

from nas.cli import main
from nas.pareto import anytime_curves, hypervolume
from nas.report.builder import FIGURES, load_run, write_report
from nas.report.figures import anytime_figure, pareto_figure, ranking_figure, training_figure
from nas.run.files import RunLock

FAST = [
    "--space=tiny",
    "--data.resolution=16",
    "--train-limit=512",
    "--data.val_limit=128",
    "--train.bn_recal_batches=2",
    "--format=torch",
    "--export.latency_repeats=3",
]


def _nas(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Caches, wandb's home and staging directories in temp dirs (module fixtures run before conftest's
    autouse ones)."""
    base = tmp_path_factory.mktemp("report_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
        mp.setenv("HOME", str(base / "home"))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(base / var.lower()))
        for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
            mp.delenv(var, raising=False)
        yield base


@pytest.fixture(scope="module")
def run(isolated: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`nas run` on tiny digits with every tracker, a budget halfway between the smallest and largest
    network."""
    from nas.cost import CostModel, spec_profile
    from nas.run.config import build_config
    from nas.run.context import build_space

    run_dir = tmp_path_factory.mktemp("report_run")
    space = build_space(build_config(None, ["space.name=tiny", "data.resolution=16"]))
    # a datasheet profile pinned in the run directory: no calibration, and the run predicts with exactly this
    # profile
    profile = spec_profile("laptop-cpu", space)
    profile.save(run_dir / "cost_profile.json")
    lo, hi = (float(v) for v in CostModel(space, profile).predict([space.smallest(), space.largest()]))
    budget = round(lo + 0.5 * (hi - lo), 4)
    code, out = _nas(
        "run",
        "--run-dir",
        str(run_dir),
        "--json",
        "--quiet",
        "--epochs=3",
        "--trials=8",
        f"--latency-budget-ms={budget}",
        "--trackers=jsonl,tensorboard,wandb",
        *FAST,
    )
    assert code == 0
    return {"dir": run_dir, "budget": budget, "summary": json.loads(out.strip().splitlines()[-1])}


def _external_refs(text: str) -> list[str]:
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, flags=re.I)
    return [r for r in refs if not r.startswith("data:")] + re.findall(r"https?://", text)


# --------------------------------------------------------------------------- files


def test_nas_run_writes_the_report_and_nas_report_rewrites_it(run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = run["dir"]
    report = run_dir / "report"
    for name in ("pareto", "training", "anytime"):  # written by `nas run` itself
        assert Image.open(report / f"{name}.png").size[0] > 300
    assert not (report / "ranking.png").exists()

    code, out = _nas("report", str(run_dir), "--json", "--out", str(tmp_path / "rep"))
    assert code == 0
    res = json.loads(out)
    assert res["sent_to_trackers"] is False  # `nas run` already sent this very report
    for name in ("pareto", "training", "anytime"):
        assert (
            Path(res["figures"][name]) == tmp_path / "rep" / f"{name}.png"
            and (tmp_path / "rep" / f"{name}.png").stat().st_size > 10_000
        )
    assert res["figures"]["ranking"].startswith("not available: no ranking.json")

    md = (tmp_path / "rep" / "report.md").read_text()
    page = (tmp_path / "rep" / "report.html").read_text()
    for name in ("pareto", "training", "anytime"):
        assert f"]({name}.png)" in md
    assert "Not available: no ranking.json" in md and "Not available: no ranking.json" in page
    assert page.count('<img src="data:image/png;base64,') == 3
    assert _external_refs(page) == []
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    for text in (md, page):  # the run summary a person looks for
        assert meta["arch_id"] in text and f"{100 * meta['test_accuracy']:.2f} %" in text
        assert (
            f"predicted {meta['latency_pred_ms']:.3f} ms, measured {meta['latency_measured_ms']:.3f} ms"
            in text
        )
        assert f"{run['budget']:g} ms on cpu" in text and "torch ok" in text and "nsga2" in text


def test_ranking_figure_appears_with_nas_rank_and_goes_when_its_data_does(
    run: dict[str, Any], tmp_path: Path
) -> None:
    work = tmp_path / "run"
    shutil.copytree(run["dir"], work, ignore=shutil.ignore_patterns(".lock", "wandb"))
    assert (
        _nas(
            "rank",
            "--run-dir",
            str(work),
            "--archs=3",
            "--epochs=1",
            "--seeds=1",
            "--workers=1",
            "--quiet",
            "--json",
        )[0]
        == 0
    )
    code, out = _nas("report", str(work), "--json", "--trackers=jsonl,tensorboard")
    assert code == 0
    res = json.loads(out)
    assert res["sent_to_trackers"] is True  # new content (and other trackers) than what `nas run` sent
    assert set(res["figures"]) == set(FIGURES) and all(Path(f).is_file() for f in res["figures"].values())
    assert (work / "report" / "report.html").read_text().count("data:image/png;base64,") == 4

    (work / "ranking.json").unlink()
    res = json.loads(_nas("report", str(work), "--json", "--no-trackers")[1])
    assert (
        res["figures"]["ranking"].startswith("not available")
        and not (work / "report" / "ranking.png").exists()
    )


def test_a_run_without_search_lists_every_missing_figure_with_its_reason(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run["dir"] / "config.yaml", bare)
    res = json.loads(_nas("report", str(bare), "--json", "--no-trackers")[1])
    assert all(v.startswith("not available: ") for v in res["figures"].values()), res["figures"]
    assert "no epoch events" in res["figures"]["training"] and "no study.db" in res["figures"]["pareto"]
    assert not list((bare / "report").glob("*.png"))
    page = (bare / "report" / "report.html").read_text()
    assert "<img" not in page and page.count('class="na"') >= 4

    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_study_less_copy_reads_the_search_history_csv(run: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "run"
    shutil.copytree(run["dir"], work, ignore=shutil.ignore_patterns(".lock", "wandb", "study.db", "report"))
    from_csv = write_report(work)
    from_study = json.loads((run["dir"] / "report" / "report.json").read_text())
    assert "search/history.csv" in from_csv.record.trials_source
    assert [r[:4] for r in from_csv.pareto_rows] == [
        [r[0], r[1], pytest.approx(r[2], abs=1e-6), pytest.approx(r[3], abs=1e-6)]
        for r in from_study["pareto"]["rows"]
    ]


def test_report_refuses_a_locked_run_unless_it_only_writes_files(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with RunLock(run["dir"]):
        assert main(["report", str(run["dir"]), "--out", str(tmp_path / "a")]) == 2
        assert "--no-trackers" in capsys.readouterr().err
        assert (
            main(["report", str(run["dir"]), "--out", str(tmp_path / "b"), "--no-trackers", "--quiet"]) == 0
        )
    assert (tmp_path / "b" / "report.html").exists()


# --------------------------------------------------------------------------- a real browser


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root only); skip with the reason if that
    fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, capture_output=True, env=env, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip(
            "chromium is not installed and `apt-get install chromium` was not possible here (needs root and"
            " Debian's archive)"
        )
    return exe


def test_html_report_renders_every_figure_offline_in_headless_chromium(
    run: dict[str, Any], tmp_path: Path
) -> None:
    exe = _chromium()
    report = run["dir"] / "report"
    page = (report / "report.html").read_text()
    # The probe runs before the report's Content-Security-Policy <meta> (which forbids scripts and any fetch),
    # then reads every
    # image once the page has loaded: decoded size and the width it is laid out at.
    probe = (
        "<script>addEventListener('load', () => document.documentElement.setAttribute('data-probe',"
        " JSON.stringify([...document.images].map(i => ({id: i.closest('figure') && i.closest('figure').id,"
        " w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width})))));</script>"
    )
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("<head>", "<head>" + probe, 1))
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--dump-dom",
        probed.as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium could not be started here: {exc}")
    if proc.returncode != 0 and "<html" not in proc.stdout:
        pytest.skip(
            f"chromium could not be started here (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        )
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert m, f"the page never finished loading in chromium: {proc.stderr[-500:]}"
    images = {i["id"]: i for i in json.loads(html.unescape(m.group(1)))}
    drawn = {n for n, f in json.loads((report / "report.json").read_text())["figures"].items() if "file" in f}
    assert drawn == {"pareto", "training", "anytime"}
    assert set(images) == {f"fig-{n}" for n in drawn}
    for name in drawn:
        with Image.open(report / f"{name}.png") as png:
            assert (
                images[f"fig-{name}"]["w"],
                images[f"fig-{name}"]["h"],
            ) == png.size  # decoded: the PNG itself, not a broken-image icon
        assert images[f"fig-{name}"]["shown"] > 200  # and laid out on the page


# --------------------------------------------------------------------------- what other tools read


def test_tensorboard_reader_sees_the_reports_scalars_images_and_hparams(run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = run["dir"]
    rec = load_run(run_dir)
    acc = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    assert {"report/pareto", "report/training", "report/anytime"} <= set(tags["images"])
    assert "report/pareto_front/text_summary" in tags["tensors"]
    by_trial = {e.step: e.value for e in acc.Scalars("report/trial/val_accuracy")}
    assert by_trial == {r["trial"]: pytest.approx(r["accuracy"]) for r in rec.rows}
    feasible = {e.step: e.value for e in acc.Scalars("report/trial/feasible")}
    assert feasible == {r["trial"]: float(r["feasible"]) for r in rec.rows}
    hv = [e.value for e in sorted(acc.Scalars("report/trial/hypervolume"), key=lambda e: e.step)]
    assert hv == sorted(hv) and hv[-1] > 0  # the front only grows

    sessions = sorted((run_dir / "tensorboard" / "hparams").iterdir())
    exported = json.loads((run_dir / "export" / "meta.json").read_text())
    expected = {r["trial"] for r in rec.front} | {exported["trial"]}
    assert [p.name for p in sessions] == [f"trial-{t:04d}" for t in sorted(expected)]
    for path in sessions:
        hp_acc = EventAccumulator(str(path))
        hp_acc.Reload()
        content = hp_acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        trial = int(start.hparams["trial"].number_value)
        row = next(r for r in rec.rows if r["trial"] == trial)
        assert {k: v.number_value for k, v in start.hparams.items() if k in row["arch"]} == row[
            "arch"
        ]  # every architecture choice
        assert start.hparams["arch_id"].string_value == row["arch_id"]
        assert start.hparams["exported"].number_value == float(trial == exported["trial"])
        assert hp_acc.Scalars("hparam/val_accuracy")[0].value == pytest.approx(row["accuracy"])
        assert hp_acc.Scalars("hparam/latency_pred_ms")[0].value == pytest.approx(row["latency_ms"])


def test_stock_optuna_study_matches_the_reports_pareto_table(run: dict[str, Any]) -> None:
    run_dir = run["dir"]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir}/study.db")
    complete = {t.number: t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    table = json.loads((run_dir / "report" / "report.json").read_text())["pareto"]
    cols = table["columns"]
    rows = [dict(zip(cols, r)) for r in table["rows"]]
    for r in rows:  # every row is that trial, as the study stores it
        t = complete[r["trial"]]
        assert (t.user_attrs["arch_id"], t.values[0], t.values[1]) == (
            r["arch_id"],
            pytest.approx(r["val_accuracy"]),
            pytest.approx(r["latency_pred_ms"]),
        )
        assert json.loads(r["arch"]) == json.loads(t.user_attrs["arch"])
    # Optuna's own Pareto set of the feasible trials (it honours the latency constraint) is the report's front
    assert {t.user_attrs["arch_id"] for t in study.best_trials} == {
        r["arch_id"] for r in rows if r["on_front"]
    }
    md = (run_dir / "report" / "report.md").read_text()
    md_rows = re.findall(r"^\| (\d+) \| ([0-9a-f]+) \| ([\d.]+) \| ([\d.]+) \|", md, flags=re.M)
    assert [(int(t), a) for t, a, _, _ in md_rows] == [(r["trial"], r["arch_id"]) for r in rows]
    assert [float(acc) for _, _, acc, _ in md_rows] == [
        pytest.approx(100 * r["val_accuracy"], abs=0.005) for r in rows
    ]


def _wandb_records(run_dir: Path) -> list[Any]:
    """Every record of the run's offline wandb runs, decoded with wandb's own protobuf (LevelDB-log framing,
    32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        pos, buf = 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # block trailer padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0:
                break
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            buf = chunk if kind in (1, 2) else buf + chunk
            if kind in (1, 4):
                rec = pb.Record()
                rec.ParseFromString(buf)
                records.append(rec)
    return records


def test_wandb_offline_run_holds_figures_table_summary_and_exported_model(run: dict[str, Any]) -> None:
    run_dir = run["dir"]
    records = _wandb_records(run_dir)
    summary = {u.key for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert {
        "report/pareto_size",
        "report/trials_complete",
        "report/hypervolume",
        "report/exported_test_accuracy",
    } <= summary
    artifacts = [
        r.artifact
        for r in records
        if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"
    ]
    assert len(artifacts) == 1 and artifacts[0].name == f"{run_dir.name}-export"
    stored = {c.path for c in artifacts[0].manifest.contents}
    assert {"model.pt", "arch.json", "meta.json", "space.json"} <= stored
    media = {
        p.relative_to(p.parents[2]).as_posix()
        for p in run_dir.glob("wandb/offline-run-*/files/media/*/report/*")
    }
    assert {m.split("_")[0] for m in media if m.startswith("images/")} == {
        "images/report/pareto",
        "images/report/training",
        "images/report/anytime",
    }
    assert any(m.startswith("table/report/pareto_front") for m in media)


# --------------------------------------------------------------------------- readable figures


def _assert_readable(fig: Any) -> None:
    for ax in fig.axes:
        assert ax.get_title(), "every panel has a title"
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert re.search(r"\[[^\]]+\]$", label), f"axis label without a unit: {label!r}"
        legend = ax.get_legend()
        assert legend is not None and legend.get_texts() and all(t.get_text() for t in legend.get_texts())


def _legend(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figures_of_the_run_are_readable(run: dict[str, Any]) -> None:
    rec = load_run(run["dir"])
    fig = pareto_figure(rec.rows, rec.front, rec.budget_ms, rec.exported, device="cpu")
    _assert_readable(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted latency on cpu [ms]" and ax.get_ylabel().endswith("[%]")
    legend = _legend(ax)
    assert f"latency budget {run['budget']:g} ms" in legend and f"Pareto front ({len(rec.front)})" in legend
    assert any(t.startswith(f"exported: trial {rec.exported['trial']}") for t in legend)
    n_over = sum(not r["feasible"] for r in rec.rows)
    assert (f"trial over budget ({n_over})" in legend) == (n_over > 0)
    star = [c for c in ax.collections if c.get_label().startswith("exported")][0].get_offsets()[0]
    assert (star[0], star[1]) == pytest.approx((rec.exported["latency_ms"], 100 * rec.exported["accuracy"]))
    budget_line = [ln for ln in ax.lines if ln.get_label().startswith("latency budget")][0]
    assert budget_line.get_xdata()[0] == pytest.approx(run["budget"])

    fig = training_figure(rec.epochs, rec.finetune_epochs)
    _assert_readable(fig)
    loss_ax, acc_ax = fig.axes[:2]
    assert list(loss_ax.lines[0].get_xdata()) == [1, 2, 3]
    assert {ln.get_label() for ln in acc_ax.lines} == {"largest subnet", "smallest subnet"}
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx(
        [100 * e["val_acc_largest"] for e in rec.epochs]
    )

    fig = anytime_figure(rec.rows, rec.budget_ms, controller="nsga2")
    _assert_readable(fig)
    assert fig.axes[1].get_ylabel() == "hypervolume [% x ms]"


def test_finetune_and_ranking_figures_are_readable() -> None:
    epochs = [
        {"step": e, "train_loss": 2.0 / e, "val_acc_largest": 0.5 + e / 10, "val_acc_smallest": 0.4 + e / 10}
        for e in (1, 2)
    ]
    finetune = {
        "inherited": [
            {"step": 1, "train_loss": 0.9, "val_acc": 0.8},
            {"step": 2, "train_loss": 0.7, "val_acc": 0.85},
        ]
    }
    fig = training_figure(epochs, finetune, {"inherited": 0.75})
    _assert_readable(fig)
    assert len(fig.axes) == 4 and "fine-tuned" in fig.axes[2].get_title()
    assert [ln.get_label() for ln in fig.axes[3].lines] == ["from inherited weights"]
    assert list(fig.axes[3].lines[0].get_xdata()) == [0, 1, 2]  # epoch 0: the accuracy it started from
    assert list(fig.axes[3].lines[0].get_ydata()) == pytest.approx([75, 80, 85])
    only_finetune = training_figure(
        [], finetune
    )  # a run whose supernet events are gone still shows the fine-tuning
    assert len(only_finetune.axes) == 2
    report = {
        "sampler": "sandwich",
        "distill": False,
        "kendall_tau": 0.5,
        "standalone_epochs": 2,
        "rows": [
            {
                "supernet_val_acc": 0.5 + i / 20,
                "standalone_mean": 0.6 + i / 30,
                "standalone_val_acc": [0.6 + i / 30],
            }
            for i in range(4)
        ],
    }
    fig = ranking_figure(report)
    _assert_readable(fig)
    assert "Kendall tau 0.50" in fig.axes[0].get_title()


def test_anytime_curves_and_hypervolume_by_hand() -> None:
    rows = [
        {"trial": 0, "accuracy": 0.5, "latency_ms": 2.0, "feasible": True},
        {"trial": 1, "accuracy": 0.7, "latency_ms": 5.0, "feasible": True},
        {"trial": 2, "accuracy": 0.9, "latency_ms": 12.0, "feasible": False},
        {"trial": 3, "accuracy": 0.4, "latency_ms": 1.0, "feasible": True},
    ]
    curves = anytime_curves(rows, budget_ms=10.0)
    assert curves["reference"] == pytest.approx([40.0, 10.0])
    assert curves["best_feasible_accuracy_pct"] == pytest.approx([50, 70, 70, 70])
    # (10 - 2) x (50 - 40); then (5 - 2) x 10 + (10 - 5) x 30; an infeasible and a reference-level trial add
    # nothing
    assert curves["hypervolume"] == pytest.approx([80, 180, 180, 180])
    assert hypervolume([(50.0, 2.0), (45.0, 3.0)], 40.0, 10.0) == pytest.approx(
        80
    )  # a dominated point adds nothing
    fig = anytime_figure(rows, 10.0)
    _assert_readable(fig)
    assert "trial over budget" in _legend(fig.axes[0])
