"""scripts/make_results.py rebuilds the published tables from results/data/ alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
