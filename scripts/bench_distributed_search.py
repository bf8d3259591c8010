"""Distributed search throughput: trials per minute with 1 worker vs 4 workers sharing one study on
PostgreSQL.

    python scripts/bench_distributed_search.py [--run-dir DIR] [--trials 40] [--workers 1,4] [--data digits]

Without ``--run-dir`` it first trains a small supernet (``mbv3`` width 0.5, 2
epochs on digits, or ``--data=fashion_mnist`` after ``apt-get install
dataset-fashion-mnist``) and pins its cpu latency profile. Every configuration
then runs the same ``nas search --storage postgresql://... --trials=N`` on a
fresh database of a throwaway local PostgreSQL server (nas/testing/pg_server.py), its
workers started together, each with its share of the cores as torch threads.
Two times are reported: wall (workers launched to last worker exited: process
start-up, model loading and the final history included) and search (first trial
started to last trial completed, from the study). Writes the measured data to
results/data/distributed_search.json (rendered into results/controllers.md by
bench_controllers.render, so `python scripts/make_results.py` picks it up) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from _results import machine_info
from optuna.trial import TrialState

from nas.run.files import atomic_write_json
from nas.testing.pg_server import PostgresServer

NAME = (  # results/data/<NAME>.json: an input of bench_controllers' report, no markdown of its own
    "distributed_search"
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nas import nas  # noqa: E402


def _train(run_dir: Path, data: str, epochs: int, train_limit: int | None) -> dict:
    settings = [f"--data={data}", f"--epochs={epochs}", "--trackers=jsonl"] + (
        [f"--train-limit={train_limit}"] if train_limit else []
    )
    nas("train", "--run-dir", str(run_dir), "--quiet", "--json", *settings)
    return {"settings": settings}


def _run_workers(run_dir: Path, url: str, study: str, trials: int, workers: int, extra: list[str]) -> dict:
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [
        sys.executable,
        "-m",
        "nas.cli",
        "search",
        "--run-dir",
        str(run_dir),
        "--storage",
        url,
        "--study",
        study,
        f"--trials={trials}",
        "--quiet",
        "--json",
        "--trackers=jsonl",
        *extra,
    ]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(workers)
    ]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.exit(f"a search worker failed:\n{err[-4000:]}")
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))
    study_obj = optuna.load_study(study_name=study, storage=storage)
    done = [t for t in study_obj.trials if t.state == TrialState.COMPLETE]
    if len(done) != trials:
        sys.exit(f"{workers} workers left {len(done)} complete trials, expected {trials}")
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    search_s = (last - first).total_seconds()
    return {
        "workers": workers,
        "torch_threads_per_worker": threads,
        "trials": trials,
        "wall_seconds": round(wall, 2),
        "trials_per_minute_wall": round(60 * trials / wall, 2),
        "search_seconds": round(search_s, 2),
        "trials_per_minute_search": round(60 * trials / search_s, 2),
        "pruned_surplus_trials": sum(t.state == TrialState.PRUNED for t in study_obj.trials),
        "distinct_architectures": len({t.user_attrs["arch_id"] for t in done}),
        "workers_that_completed_trials": len({t.user_attrs.get("worker") for t in done}),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run-dir", help="a run directory with a trained supernet (default: train a small one here)"
    )
    ap.add_argument("--data", default="digits", help="data set when training here (digits or fashion_mnist)")
    ap.add_argument("--epochs", type=int, default=2, help="supernet epochs when training here")
    ap.add_argument(
        "--train-limit", type=int, default=None, help="training images when training here (default: all)"
    )
    ap.add_argument(
        "--trials", type=int, default=40, help="total trials of each search (the same for every worker count)"
    )
    ap.add_argument("--workers", default="1,4", help="worker counts to compare")
    ap.add_argument("--controller", default="nsga2")
    ap.add_argument("--out", default="results/data/distributed_search.json")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as pg:
        os.environ.setdefault("XDG_CACHE_HOME", str(Path(tmp) / "cache"))
        if args.run_dir:
            run_dir, trained = Path(args.run_dir).resolve(), {"given": str(args.run_dir)}
        else:
            run_dir = Path(tmp) / "run"
            t0 = time.perf_counter()
            trained = _train(run_dir, args.data, args.epochs, args.train_limit)
            trained["seconds"] = round(time.perf_counter() - t0, 1)
        if not (run_dir / "cost_profile.json").exists():  # one latency model for every worker
            nas(
                "latency",
                "calibrate",
                "--run-dir",
                str(run_dir),
                "--profile",
                str(run_dir / "cost_profile.json"),
                "--quiet",
                "--json",
            )
        results = []
        for w in counts:
            url = pg.create_database(f"bench_w{w}")
            results.append(
                _run_workers(run_dir, url, "bench", args.trials, w, [f"--controller={args.controller}"])
            )
            print(
                f"{w} worker(s): {results[-1]['wall_seconds']} s wall, {results[-1]['search_seconds']} s"
                " search",
                file=sys.stderr,
            )
        pg_version = pg.version
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    base = results[0]
    report = {
        "benchmark": (
            "distributed search: trials per minute with several `nas search` workers sharing one Optuna study"
            " on PostgreSQL"
        ),
        "command": "python scripts/bench_distributed_search.py " + " ".join(sys.argv[1:]),
        "storage": f"PostgreSQL {pg_version}, local server on 127.0.0.1 (fsync off), psycopg2",
        "supernet": {
            "space": config["space"]["name"],
            "width_mult": config["space"]["width_mult"],
            "data": config["data"]["name"],
            "epochs": config["train"]["epochs"],
            "train_limit": config["data"]["train_limit"],
            **trained,
        },
        "controller": args.controller,
        "trials": args.trials,
        "results": results,
        "speedup_vs_first": {
            str(r["workers"]): {
                "wall": round(base["wall_seconds"] / r["wall_seconds"], 2),
                "search": round(base["search_seconds"] / r["search_seconds"], 2),
            }
            for r in results
        },
        "note": (
            f"{os.cpu_count()} logical cores: the workers share them (torch threads = cores // workers), so"
            " more workers than cores cannot multiply throughput here; wall time includes each worker's"
            " start-up (imports, data, supernet). The machine may be shared with other jobs: see the load"
            " averages."
        ),
        "machine": machine_info(),
    }
    atomic_write_json(args.out, report)
    print(
        "| workers | torch threads each | trials | wall s | trials/min (wall) | search s | trials/min"
        " (search) | speed-up (wall / search) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = report["speedup_vs_first"][str(r["workers"])]
        print(
            f"| {r['workers']} | {r['torch_threads_per_worker']} | {r['trials']} | {r['wall_seconds']:.1f} |"
            f" {r['trials_per_minute_wall']:.1f} | {r['search_seconds']:.1f} |"
            f" {r['trials_per_minute_search']:.1f} | {s['wall']:.2f}x / {s['search']:.2f}x |"
        )
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
