"""scripts/make_results.py rebuilds the published tables from results/data/ alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_results.py"


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_committed_tables_match_their_data() -> None:
    done = _make("--check")
    assert done.returncode == 0, done.stderr


def test_changed_data_changes_the_table_and_check_names_it(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    data = results / "data" / "supernet_overhead.json"
    raw = json.loads(data.read_text())
    median = next(r for r in raw["rows"] if r["architecture"] == "median")
    median["supernet_ms"] = 123.45  # not a figure of the committed table
    data.write_text(json.dumps(raw))
    checked = _make("--check", "--only", "supernet_overhead", "--results-dir", str(results))
    assert checked.returncode == 1 and "supernet_overhead.md" in checked.stderr
    before = (results / "supernet_overhead.md").read_text()
    assert "123.45" not in before
    assert _make("--only", "supernet_overhead", "--results-dir", str(results)).returncode == 0
    after = (results / "supernet_overhead.md").read_text()
    assert "123.45" in after and after != before
    assert _make("--check", "--only", "supernet_overhead", "--results-dir", str(results)).returncode == 0


def test_check_names_a_hand_edited_table_and_an_orphan(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    table = results / "mixtures.md"
    table.write_text(table.read_text().replace("| 4 | **", "| 4 | **0.999 ± 0.000** (edited) | **", 1))
    (results / "orphan.md").write_text("# A table with no data behind it\n")
    checked = _make("--check", "--results-dir", str(results))
    assert checked.returncode == 1
    assert "mixtures.md: differs" in checked.stderr and "orphan.md: no data" in checked.stderr
    assert "ranking.md" not in checked.stderr  # only the files that differ are named


def test_full_render_writes_tables_and_plots(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "data", results / "data")
    assert _make("--only", "controllers", "--results-dir", str(results)).returncode == 0
    assert (results / "controllers.md").read_text() == (ROOT / "results" / "controllers.md").read_text()
    assert (results / "controllers.png").stat().st_size > 10_000


def test_ranking_report_names_extra_settings_in_its_reproduce_command(tmp_path: Path, monkeypatch) -> None:
    """A ranking run made with --set KEY=VALUE must say so, or its command would not reproduce it."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_ranking

    raw = json.loads((ROOT / "results" / "data" / "ranking.json").read_text())
    plain = bench_ranking.render(raw, tmp_path, md_name="plain.md", figures=False)[0].read_text()
    assert "--set" not in plain  # data written before the option existed still renders
    raw["settings"]["set"] = ["train.lr=0.05", "train.label_smoothing=0.0"]
    text = bench_ranking.render(raw, tmp_path, md_name="set.md", figures=False)[0].read_text()
    assert "--set train.lr=0.05 --set train.label_smoothing=0.0`" in text
    assert "with `train.lr=0.05`, `train.label_smoothing=0.0`" in text


def test_data_files_round_trip_with_value_lists_on_one_line(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from _results import load_raw, save_raw

    raw = {"b": [0.5, 1.25, 2], "a": {"best": [[3, 900], [12, 60]], "runs": [{"x": 1}, {"x": [2, "s]"]}]}}
    save_raw(tmp_path / "d.json", raw)
    text = (tmp_path / "d.json").read_text()
    assert load_raw(tmp_path / "d.json") == raw
    assert '"b": [0.5, 1.25, 2]' in text and '"best": [[3, 900], [12, 60]]' in text
    assert text.index('"a"') < text.index('"b"')  # keys sorted: files diff well between runs
