#!/usr/bin/env bash
# The device checks of a lent GPU machine, as one prepared script (issue 17.6): a lease is short (15 minutes
# of device time, the machine's start included), so everything that needs a GPU runs in one call, each step
# under its own `timeout`, the whole under GPU_CHECK_BUDGET_S (default 450 s: under 8 minutes on one H200).
#
#   scripts/gpu_check.sh --prepare     here, before asking for a device: wheels the device image lacks
#                                      (optuna and its needs) and Fashion-MNIST into .whl/ (git-ignored)
#   scripts/gpu_check.sh               there, with .whl carried: device, GPU tests, throughput, ground truth
#   scripts/gpu_check.sh --dry-run     here, on the CPU with tiny sizes; writes only under /tmp
#   scripts/gpu_check.sh --merge-ground-truth FILE [INTO]
#                                      here, after the lease: adds the device's new ground-truth results
#                                      (ground_truth_gpu_session.json, from $OUT) to results/data/
#
# Steps: (1) nvidia-smi -L, torch and CUDA versions -> results/data/gpu_device.json; (2) pytest
# tests/test_gpu, failing if any test was skipped (CUDA not visible); (3) bench_train_throughput.py
# --device cuda -> results/train_throughput_gpu.md and data/train_throughput_gpu.json; (4)
# bench_ground_truth.py --space resnet20_pool --device cuda for the minutes left (every finished training is
# kept, a timeout loses only the running ones); (5) lists what it wrote and copies it to $OUT (the device
# tool's return folder) when $OUT is set.
#
# Environment: GPU_CHECK_BUDGET_S (450), GPU_CHECK_GT_SEEDS (14, the study's target: the budget's timeout
# decides how many land), GPU_CHECK_GT_WORKERS (4), GPU_CHECK_COMPILE (0: the throughput benchmark leaves out
# torch.compile, whose recompilations per subnetwork take minutes), GPU_CHECK_LOGS (/tmp/gpu_check), PYTHON.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --prepare) MODE=prepare ;;
  --merge-ground-truth) MODE=merge ;;
  -h|--help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 0 ;;
  "") ;;
  *) echo "gpu_check: unknown option $1 (--dry-run, --prepare, --merge-ground-truth FILE)" >&2; exit 2 ;;
esac

WHL="$REPO/.whl"  # git-ignored; the device run names it in carry
WHEELS=(optuna alembic colorlog SQLAlchemy Mako)  # what the device image lacks (its KINDS.md package list)
FASHION_SYSTEM=/usr/share/datasets/fashion-mnist
FASHION_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
  t10k-labels-idx1-ubyte.gz)

# ------------------------------------------------------------------------------------------------ prepare
if [[ $MODE == prepare ]]; then
  mkdir -p "$WHL/fashion-mnist"
  pins=()
  for w in "${WHEELS[@]}"; do  # the versions this machine runs, so both ends run the same
    pins+=("$w==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$w")")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL" "${pins[@]}"
  for f in "${FASHION_FILES[@]}"; do cp "$FASHION_SYSTEM/$f" "$WHL/fashion-mnist/"; done
  du -sh "$WHL"; ls "$WHL" "$WHL/fashion-mnist"
  echo "prepared: carry .whl in the device run (see the top of this script)"
  exit 0
fi

# ------------------------------------------------------------------------------------------------ merge
if [[ $MODE == merge ]]; then
  delta="${2:?--merge-ground-truth needs the ground_truth_gpu_session.json the device run returned}"
  into="${3:-results/data/ground_truth.json}"  # a third argument: another ground-truth file
  if [[ -z ${3:-} ]] && pgrep -f "scripts/bench_ground_truth.py" >/dev/null; then
    echo "gpu_check: a bench_ground_truth.py session is running; it rewrites $into from memory with each" \
      "result and would drop the merge. Merge once it has finished." >&2
    exit 1
  fi
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$delta" "$into" <<'EOF'
"""Add the (architecture, seed) results of a device session to the ground truth; the local result wins."""
import json, sys
from pathlib import Path
from nas.run.files import atomic_write_json

delta, into = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
raw = json.loads(into.read_text()) if into.exists() else {**delta["provenance"], "spaces": {}, "sessions": []}
added = kept = 0
for name, d in delta["spaces"].items():
    entry = raw["spaces"].setdefault(name, {**d["entry"], "results": {}})
    for key in ("recipe_id", "common", "standalone_epochs"):
        if entry[key] != d["entry"][key]:
            there = d["entry"][key]
            raise SystemExit(f"{name}: {key} differs ({entry[key]!r} here, {there!r} there): not merged")
    if [a["id"] for a in entry["archs"]] != [a["id"] for a in d["entry"]["archs"]]:
        raise SystemExit(f"{name}: the device session ranked other architectures: not merged")
    for arch, per_seed in d["results"].items():
        for seed, res in per_seed.items():
            if seed in entry["results"].setdefault(arch, {}):
                kept += 1
            else:
                entry["results"][arch][seed], added = res, added + 1
sessions = delta["sessions"] if added else []  # a session none of whose results were taken is not recorded
raw["sessions"] += sessions
atomic_write_json(into, raw)
print(f"{into}: {added} results added, {kept} already here (kept), {len(sessions)} session(s) recorded")
EOF
  exit 0
fi

# ------------------------------------------------------------------------------------------------ check run
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-$([[ $MODE == dry ]] && echo 1200 || echo 450)}  # the dry run: a slow CPU
LOGS="${GPU_CHECK_LOGS:-/tmp/gpu_check}"
mkdir -p "$LOGS"  # and clear a last run's files
rm -f "$LOGS"/{gpu_check.log,gpu_tests.xml,ground_truth_before.json,ground_truth_gpu_session.json}
exec 3>&1 4>&2 > >(tee "$LOGS/gpu_check.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the device's copy is not pip-installed
if [[ $MODE == dry ]]; then
  RESULTS=/tmp/gpu_check_dry/results  # scratch: a dry run never touches results/
  rm -rf /tmp/gpu_check_dry && mkdir -p "$RESULTS/data"
else
  RESULTS="$REPO/results"
fi
DATA="$RESULTS/data"
STEPS=()
FAILED=0
STAMP="$LOGS/.start"
touch "$STAMP"

elapsed() { echo $(( $(date +%s) - T0 )); }
RESERVE=25  # seconds kept at the end for listing and copying
# limit N: N seconds, or what is left of the budget (less the reserve) when that is less
limit() { local l=$(( BUDGET - $(elapsed) - RESERVE )); echo $(( l < $1 ? l : $1 )); }
say() { printf '\n=== [%4ss] %s\n' "$(elapsed)" "$*"; }

# step NAME SECONDS CMD...: run CMD under `timeout`; record its status (124: stopped at its time limit).
step() {
  local name=$1 secs=$2 rc=0 t=$SECONDS
  shift 2
  if (( secs < 30 )); then
    echo "gpu_check: no time left for $name (${secs}s of the ${BUDGET}s budget)" >&2
    STEPS+=("$(printf '%-14s not run: no time left' "$name")")
    return 1
  fi
  say "$name (limit ${secs}s): $*"
  timeout --kill-after=15 "$secs" "$@" || rc=$?
  STEPS+=("$(printf '%-14s rc %-3s %4ss' "$name" "$rc" "$((SECONDS - t))")")
  return "$rc"
}

copy_out() {
  # The device tool returns at most 8 files from $OUT, no more than 2 folders down: the figures, the log.
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] || return 0
  mkdir -p "$OUT/results/data"
  local f
  for f in "$RESULTS/train_throughput_gpu.md"; do if [[ -f $f ]]; then cp "$f" "$OUT/results/"; fi; done
  for f in "$DATA/gpu_device.json" "$DATA/train_throughput_gpu.json"; do
    if [[ -f $f ]]; then cp "$f" "$OUT/results/data/"; fi
  done
  for f in "$LOGS/ground_truth_gpu_session.json" "$LOGS/gpu_tests.xml" "$LOGS/gpu_check.log"; do
    if [[ -f $f ]]; then cp "$f" "$OUT/"; fi
  done
  echo "copied to \$OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
}

finish() {
  local rc=$?
  say "summary (mode $MODE, $(elapsed)s of ${BUDGET}s)"
  if (( ${#STEPS[@]} )); then printf '  %s\n' "${STEPS[@]}"; fi
  say "written"
  find "$RESULTS" "$LOGS" -type f -newer "$STAMP" -printf '  %p (%s bytes)\n' 2>/dev/null | sort
  if (( rc == 0 && FAILED == 0 )); then echo "gpu_check: OK"; else echo "gpu_check: FAILED (see above)"; fi
  exec 1>&3 2>&4 3>&- 4>&-  # end the log: tee writes its last lines, then the log is complete
  for _ in {1..20}; do kill -0 "$TEE_PID" 2>/dev/null || break; sleep 0.25; done  # at most 5 s
  copy_out || true
  if (( rc != 0 )); then exit "$rc"; fi
  exit "$FAILED"
}
trap finish EXIT

fail() { echo "gpu_check: FAIL: $*" >&2; FAILED=1; }

# --- 0. what the device image lacks: the carried wheels and Fashion-MNIST
if ! "$PY" -c "import optuna" 2>/dev/null; then
  if compgen -G "$WHL/*.whl" >/dev/null; then
    say "installing the carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHL"/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "gpu_check: optuna is not installed and no wheels were carried: run scripts/gpu_check.sh --prepare" \
      "here and name .whl in the device run's carry" >&2
    exit 1
  fi
fi
if [[ $MODE == gpu && ! -f $FASHION_SYSTEM/${FASHION_FILES[0]} ]] \
  && [[ -f $WHL/fashion-mnist/${FASHION_FILES[0]} ]]; then
  say "placing the carried Fashion-MNIST in $FASHION_SYSTEM (where the ground-truth study reads it)"
  mkdir -p "$FASHION_SYSTEM" && cp "$WHL"/fashion-mnist/*.gz "$FASHION_SYSTEM/"
fi

# --- 1. the device, named next to every figure
say "device"
if [[ $MODE == gpu ]]; then
  nvidia-smi -L
  GPU_CSV=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
else
  GPU_CSV="none (dry run on the CPU), n/a, n/a"
fi
"$PY" - "$DATA/gpu_device.json" "$GPU_CSV" "$MODE" <<'EOF'
import json, platform, sys, time
from pathlib import Path
import torch

path, csv, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
name, driver, memory = (s.strip() for s in csv.split(",", 2))
cuda = torch.cuda.is_available()
info = {
    "device": torch.cuda.get_device_name(0) if cuda else name,
    "nvidia_smi": {"name": name, "driver": driver, "memory": memory},
    "driver": driver,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cuda_available": cuda,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    "mode": mode,
}
print(json.dumps(info, indent=2))
if mode == "gpu" and not cuda:  # before anything is written
    sys.exit("gpu_check: FAIL: torch sees no CUDA device: nothing here can be measured on a GPU")
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(info, indent=2) + "\n")
EOF

# --- 2. the tests that need CUDA; skipped ones are a failure on a GPU machine (CUDA not visible to torch)
if step gpu-tests "$(limit 200)" "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu \
  --junitxml="$LOGS/gpu_tests.xml"; then
  :
else
  fail "tests/test_gpu failed"
fi
if [[ -f $LOGS/gpu_tests.xml ]]; then
  counts=$("$PY" -c "
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
s = s if s.tag == 'testsuite' else s.find('testsuite')
print(s.get('tests'), s.get('skipped'))" "$LOGS/gpu_tests.xml")
  read -r n_tests n_skipped <<<"$counts"
  echo "tests/test_gpu: $n_tests tests, $n_skipped skipped"
  if (( n_tests == 0 )); then
    fail "tests/test_gpu collected no tests"
  elif [[ $MODE == gpu ]] && (( n_skipped > 0 )); then
    fail "$n_skipped of tests/test_gpu were SKIPPED on the GPU machine: CUDA is not visible to torch"
  elif [[ $MODE == dry ]] && (( n_skipped != n_tests )); then
    fail "on a machine without CUDA every tests/test_gpu test must be skipped, $((n_tests - n_skipped)) ran"
  fi
else
  fail "tests/test_gpu wrote no report"
fi

# --- 3. training throughput, its own report beside the CPU one
if [[ $MODE == gpu ]]; then
  bench=(--device cuda)
  [[ ${GPU_CHECK_COMPILE:-0} == 1 ]] || bench+=(--no-compile)
  bench_limit=150
else
  bench=(--device cpu --batch 8 --steps 1 --rounds 1)
  bench_limit=${GPU_CHECK_DRY_BENCH_S:-480}  # 12 CPU steps of 4 subnetworks, bf16 among them: minutes
fi
step throughput "$(limit "$bench_limit")" "$PY" scripts/bench_train_throughput.py "${bench[@]}" \
  --out "$RESULTS/train_throughput_gpu.md" || fail "bench_train_throughput.py failed"

# --- 4. ground truth: seeds of the resnet20_pool study, trained on the GPU for the time that is left
GT_JSON="$DATA/ground_truth.json"
if [[ $MODE == gpu ]]; then
  gt=(--seeds "${GPU_CHECK_GT_SEEDS:-14}" --device cuda --workers "${GPU_CHECK_GT_WORKERS:-4}")
  gt_limit=$(limit 100000)  # all that is left
else
  gt=(--seeds 1 --device cpu --workers 2)  # the scratch file starts empty: 36 trainings, a few finish
  gt_limit=$(limit "${GPU_CHECK_DRY_GT_S:-200}")
fi
if [[ -f $GT_JSON ]]; then cp "$GT_JSON" "$LOGS/ground_truth_before.json"; fi
rc=0
step ground-truth "$gt_limit" "$PY" scripts/bench_ground_truth.py --space resnet20_pool "${gt[@]}" \
  --out "$RESULTS/ground_truth.md" || rc=$?
if (( rc == 124 || rc == 137 )); then
  echo "ground truth: stopped at its time limit; every finished training is in $GT_JSON"
elif (( rc != 0 )); then
  fail "bench_ground_truth.py failed or did not run (rc $rc)"
fi
# What this session added, alone: the merge input for the machine the data lives on (its file moved on).
"$PY" - "$LOGS/ground_truth_before.json" "$GT_JSON" "$LOGS/ground_truth_gpu_session.json" <<'EOF'
import json, sys
from pathlib import Path

before_p, after_p, out_p = (Path(p) for p in sys.argv[1:])
if not after_p.exists():
    print("ground truth: no data file was written")
    sys.exit(0)
before = json.loads(before_p.read_text()) if before_p.exists() else {"spaces": {}, "sessions": []}
after = json.loads(after_p.read_text())
delta = {"provenance": {k: v for k, v in after.items() if k not in ("spaces", "sessions")}, "spaces": {}}
new = 0
for name, entry in after["spaces"].items():
    old = before["spaces"].get(name, {}).get("results", {})
    results = {}
    for arch, per in entry["results"].items():
        added = {seed: r for seed, r in per.items() if seed not in old.get(arch, {})}
        if added:
            results[arch] = added
    if results:
        meta = {k: v for k, v in entry.items() if k != "results"}
        delta["spaces"][name] = {"entry": meta, "results": results}
        new += sum(len(per) for per in results.values())
delta["sessions"] = after["sessions"][len(before["sessions"]) :]
out_p.write_text(json.dumps(delta, indent=1) + "\n")
print(f"ground truth: {new} new (architecture, seed) results this session -> {out_p}")
EOF
