import os

import pytest
import torch

# Tests never talk to the network or to the user's wandb account.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Profiles and data caches go to a per-session temp dir, never the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.fixture(autouse=True)
def _short_timing(request, monkeypatch):
    """Calibrations, validations and export latencies time for 0.6 s, not the 3 s a user's do, in this
    process and the `nas` processes tests start: the tests check what is measured and recorded, not its
    precision (the benchmarks under scripts/ keep 3 s). A test whose subject is the timing itself (the
    machine-state guard's samples) is marked ``full_timing``."""
    from nas.timing_floor import ENV

    if request.node.get_closest_marker("full_timing") is None:
        monkeypatch.setenv(ENV, "0.6")
    else:
        monkeypatch.delenv(ENV, raising=False)
