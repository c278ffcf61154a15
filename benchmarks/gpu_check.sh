#!/usr/bin/env bash
# The prepared GPU check of feddm_hpc: one script, at most ~9.5 minutes (every step under
# `timeout`, steps skipped once the budget is spent), one summary file.
#
#   bash benchmarks/gpu_check.sh --prepare    # here, on the CPU machine, once: fills .gpu/ with
#                                             # MNIST's IDX files, the MPICH and mpi4py wheels for
#                                             # Python 3.12 and the cached LeNet weights
#   bash benchmarks/gpu_check.sh [SUMMARY]    # on the GPU machine, from the repository root;
#                                             # SUMMARY defaults to $OUT/gpu_check.txt
#
# Through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"],
# timeout_s=600); $OUT/gpu_check.txt and $OUT/gpu_check_logs.tar.gz come back.
# Steps: tiny and quickstart (2 rounds) on CUDA at 1 rank and at 2 ranks sharing the GPU, the
# overhead benchmark, the client-group benchmark (if benchmarks/client_groups.py exists),
# fp32 vs bf16 steps/s (benchmarks/precision.py),
# `evaluate` at N=1000 on the GPU and on the CPU, one client's training under
# torch.cuda.set_sync_debug_mode, then system.deterministic (repeatability, the host-memory
# image store, 1 vs 2 ranks).
# Environment: PYTHON (default .venv/bin/python if present, else python3), MPIEXEC,
# GPU_CHECK_WORK (default /tmp/feddm_gpu_check), GPU_CHECK_BUDGET_S (default 560),
# GPU_CHECK_SKIP (step names or globs to skip, e.g. "quickstart-* overhead"),
# GPU_CHECK_DEVICE (default cuda; cpu: a dry run of the plumbing on a machine without a GPU).
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
GPU_DIR="$ROOT/.gpu"

if [ "${1:-}" = "--prepare" ]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    mkdir -p "$GPU_DIR/mnist" "$GPU_DIR/wheels" "$GPU_DIR/cache" || exit 2
    src=$("$PY" -c 'from feddm_hpc.data.datasets import mnist_dir; print(mnist_dir())') || exit 2
    cp "$src"/*-ubyte.gz "$GPU_DIR/mnist/" || exit 2
    ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 \
        -d "$GPU_DIR/wheels" "mpich==$(ver mpich)" "mpi4py==$(ver mpi4py)" || exit 2
    cache=${FEDDM_HPC_CACHE:-$HOME/.cache/feddm_hpc}
    cp "$cache"/lenet5-mnist-*.pt "$GPU_DIR/cache/" 2>/dev/null \
        || echo "note: no cached LeNet in $cache: evaluate will train it on the GPU machine (~1 min)"
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")" && touch "$exclude"
    grep -qx '/.gpu/' "$exclude" || echo '/.gpu/' >> "$exclude"
    du -sh "$GPU_DIR"
    echo "prepared; on the GPU machine: bash benchmarks/gpu_check.sh (carry .gpu)"
    exit 0
fi

SUMMARY=${1:-${OUT:+$OUT/gpu_check.txt}}
SUMMARY=${SUMMARY:-$ROOT/runs/gpu_check/gpu_check.txt}
mkdir -p "$(dirname "$SUMMARY")" || exit 2
WORK=${GPU_CHECK_WORK:-/tmp/feddm_gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-560}
DEV=${GPU_CHECK_DEVICE:-cuda}
SKIP=${GPU_CHECK_SKIP:-}
START=$SECONDS
: > "$SUMMARY"
line() { echo "$*" | tee -a "$SUMMARY"; }
die() { line "gpu_check: FAILED: $*"; exit 3; }

line "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
# Fail fast without a GPU: no driver tool and no device node means no NVIDIA GPU at all.
if [ "$DEV" = cuda ] && ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /dev/nvidiactl ]; then
    die "no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidiactl); run it on the GPU machine"
fi
rm -rf "$WORK" && mkdir -p "$WORK/logs" "$WORK/runs" || die "cannot create $WORK"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi

# Carried wheels (--prepare) install under a private prefix, and only where no mpiexec is at
# hand (never into an environment that has one); the package itself is not installed.
if compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null && [ -z "${MPIEXEC:-}" ] \
        && [ ! -x "$(dirname "$PY")/mpiexec" ] && ! command -v mpiexec >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        --prefix "$WORK/prefix" "$GPU_DIR"/wheels/*.whl >"$WORK/logs/wheels.log" 2>&1 \
        || die "installing .gpu/wheels failed: $(tail -n 3 "$WORK/logs/wheels.log")"
    for d in "$WORK"/prefix/lib/python3*/site-packages; do PYTHONPATH=$d${PYTHONPATH:+:$PYTHONPATH}; done
    export PATH="$WORK/prefix/bin:$PATH" LD_LIBRARY_PATH="$WORK/prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FEDDM_HPC_CACHE="$WORK/cache"
mkdir -p "$FEDDM_HPC_CACHE" && cp "$GPU_DIR"/cache/* "$FEDDM_HPC_CACHE"/ 2>/dev/null
DATA=()
[ -d "$GPU_DIR/mnist" ] && DATA=(--set "data.path=$GPU_DIR/mnist")

info=$(timeout 90 "$PY" - "$DEV" <<'EOF' 2>&1
import sys, torch
if sys.argv[1] != "cuda":
    sys.exit(print(f"torch {torch.__version__}, dry run on {sys.argv[1]}"))
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
      f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
EOF
) || die "no CUDA GPU visible to $PY: $(echo "$info" | tail -n 1)"
line "python $PY: $info"
command -v nvidia-smi >/dev/null && line "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,compute_mode --format=csv,noheader 2>&1 | head -n 2 | tr '\n' ' ')"
MPI=${MPIEXEC:-}
[ -z "$MPI" ] && [ -x "$(dirname "$PY")/mpiexec" ] && MPI="$(dirname "$PY")/mpiexec"
[ -z "$MPI" ] && MPI=$(command -v mpiexec || true)
MPI_ARGS=()
if [ -n "$MPI" ] && "$MPI" --version 2>&1 | grep -q "Open MPI"; then MPI_ARGS=(--allow-run-as-root --oversubscribe); fi
if [ -n "$MPI" ] && ! timeout 60 "$MPI" "${MPI_ARGS[@]}" -n 2 "$PY" -c "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2" \
        >"$WORK/logs/mpi.log" 2>&1; then
    line "note: mpiexec $MPI cannot start 2 ranks of mpi4py ($(tail -n 1 "$WORK/logs/mpi.log")): 2-rank steps skipped"
    MPI=""
fi
export MPIEXEC="$MPI"
line "mpiexec: ${MPI:-none}; setup took $((SECONDS - START))s"
line ""

# step NAME LIMIT_S CMD...: runs CMD under timeout (capped by the budget left), logs to
# $WORK/logs/NAME.log, writes PASS/FAIL/SKIP and, on failure, the log's tail.
step() {
    local name=$1 limit=$2 pat; shift 2
    for pat in $SKIP; do
        # shellcheck disable=SC2053  # a glob on purpose
        [[ $name == $pat ]] && { line "SKIP $name: GPU_CHECK_SKIP"; return 1; }
    done
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then line "SKIP $name: out of time (budget ${BUDGET}s)"; return 1; fi
    [ "$limit" -gt $((left - 10)) ] && limit=$((left - 10))
    local t0=$SECONDS rc
    timeout -k 5 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then line "PASS $name $((SECONDS - t0))s"; return 0; fi
    line "FAIL $name rc=$rc $((SECONDS - t0))s$([ "$rc" -eq 124 ] && echo " (timed out at ${limit}s)")"
    tail -n 15 "$WORK/logs/$name.log" | sed 's/^/    | /' >> "$SUMMARY"
    return "$rc"
}
train() {  # train NAME NPROCS CONFIG [--set ...]
    local name=$1 np=$2 config=$3; shift 3
    local cmd=("$PY" -m feddm_hpc train "$config" --run-dir "$WORK/runs/$name" --set "system.device=$DEV"
               --set system.progress=false --set system.threads=1 "${DATA[@]}" "$@")
    if [ "$np" -gt 1 ]; then
        [ -z "$MPI" ] && { line "SKIP $name: no working mpiexec"; return 1; }
        cmd=("$MPI" "${MPI_ARGS[@]}" -n "$np" "$PY" -m mpi4py "${cmd[@]:1}")
    fi
    step "$name" "${LIMIT:-120}" "${cmd[@]}" || return 1
    grep -h -E "warning|share GPU|pinned host" "$WORK/logs/$name.log" | sort -u | head -n 4 | sed 's/^/    /' | tee -a "$SUMMARY"
    "$PY" - "$WORK/runs/$name" <<'EOF' | tee -a "$SUMMARY"
import hashlib, json, sys
from pathlib import Path
import h5py
run = Path(sys.argv[1])
ckpt = sorted((run / "checkpoints").glob("round-*.h5"))[-1]
with h5py.File(ckpt, "r") as f:
    digest = hashlib.sha256(f["global/params"][()].tobytes()).hexdigest()[:12]
last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
rounds = [json.loads(l).get("wall_s") for l in (run / "metrics.jsonl").read_text().splitlines()]
print(f"    params={digest} rounds={len(rounds)} train_loss={last.get('train_loss')} "
      f"round_wall_s={[round(w, 2) for w in rounds if w is not None]}")
EOF
}
compare() {  # compare LABEL RUN_A RUN_B
    local a b
    a=$(grep -A6 -E "^PASS $2 " "$SUMMARY" | grep -o "params=[0-9a-f]*" | head -n 1)
    b=$(grep -A6 -E "^PASS $3 " "$SUMMARY" | grep -o "params=[0-9a-f]*" | head -n 1)
    if [ -z "$a" ] || [ -z "$b" ]; then line "CMP  $1: not compared (a run failed or was skipped)"
    elif [ "$a" = "$b" ]; then line "CMP  $1: bit-identical ($a)"
    else line "CMP  $1: DIFFER ($2 $a, $3 $b)"; fi
}

Q=(--set federation.rounds=2 --set sampling.num_samples=16)
train tiny-1rank 1 configs/tiny.yaml
train tiny-2ranks 2 configs/tiny.yaml
compare "tiny 1 vs 2 ranks (default kernels)" tiny-1rank tiny-2ranks
LIMIT=180 train quickstart-1rank 1 configs/quickstart.yaml "${Q[@]}"
LIMIT=180 train quickstart-2ranks 2 configs/quickstart.yaml "${Q[@]}"
compare "quickstart 1 vs 2 ranks (default kernels)" quickstart-1rank quickstart-2ranks

cat > "$WORK/sync_debug.py" <<'EOF'
"""One client's training of the tiny config on CUDA under torch.cuda.set_sync_debug_mode:
"error" reports the first call that synchronizes with the GPU, "warn" lists every one."""
import collections, sys, time, traceback, warnings
import torch
from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.config import load_config
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.setup import build_setup
from feddm_hpc.rundir.runlog import RunLog

cfg = load_config("configs/tiny.yaml", ["system.device=cuda", "system.progress=false", *sys.argv[1:]])
s = build_setup(cfg, SerialCommunicator(), RunLog(0, None, progress=False))
trainer = LocalTrainer(s.model, s.schedule, cfg.client, s.images, s.device, cfg.seed,
                       loss_fn=make_loss(cfg.diffusion), total_rounds=cfg.federation.rounds)
cid = s.hosted[0][0]
train = lambda: trainer.train(s.initial_params, cid, s.parts[cid], 0)  # noqa: E731
train()                                   # warm-up: allocator, cuBLAS/cuDNN handles
torch.cuda.synchronize()
t0 = time.perf_counter(); train(); torch.cuda.synchronize()
print(f"sync_debug: one client ({trainer.cfg.local_steps} steps) in {time.perf_counter() - t0:.3f}s on {s.device}")
torch.cuda.set_sync_debug_mode("error")
try:
    train()
    print("sync_debug: error mode: no synchronizing call")
except RuntimeError as exc:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "feddm_hpc" in f.filename] or frames
    f = ours[-1]
    print(f"sync_debug: error mode: first sync at {f.filename.split('feddm_hpc/')[-1]}:{f.lineno} "
          f"`{(f.line or '').strip()}`: {str(exc).splitlines()[0]}")
finally:
    torch.cuda.set_sync_debug_mode(0)
torch.cuda.set_sync_debug_mode("warn")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    train()
torch.cuda.set_sync_debug_mode(0)
sites = collections.Counter(f"{w.filename.split('feddm_hpc/')[-1]}:{w.lineno}" for w in caught
                            if "synchroniz" in str(w.message).lower())
print(f"sync_debug: warn mode: {sum(sites.values())} synchronizing call(s) in one client's training")
for site, n in sites.most_common(12):
    print(f"sync_debug:   {n:4d} x {site}")
EOF
SYNC_ARGS=(client.local_steps=20)
[ -d "$GPU_DIR/mnist" ] && SYNC_ARGS+=("data.path=$GPU_DIR/mnist")
[ "$DEV" = cuda ] || SKIP="$SKIP sync-debug"
if step sync-debug 120 "$PY" "$WORK/sync_debug.py" "${SYNC_ARGS[@]}"; then
    grep "^sync_debug" "$WORK/logs/sync-debug.log" | sed 's/^/    /' | tee -a "$SUMMARY"
fi

if [ -n "$MPI" ]; then
    if step overhead 200 "$PY" benchmarks/overhead.py --config configs/tiny.yaml --np 2 --repeats 1 \
            --set "system.device=$DEV" "${DATA[@]}"; then
        grep -E "^(config|repeat|overhead_ratio|simulator_wall_s|plain_loop_wall_s)" "$WORK/logs/overhead.log" | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
else
    line "SKIP overhead: no working mpiexec"
fi

# 64 clients of 10 steps each at G = 1, 4, 16, 64 (one vectorized computation of all 64).
if step client-groups 200 "$PY" benchmarks/client_groups.py --device "$DEV" --groups 1 4 16 64 \
        --clients 64 --steps 10 --repeats 1 "${DATA[@]}"; then
    grep -E " G=|^client_groups=" "$WORK/logs/client-groups.log" | sed 's/^/    /' | tee -a "$SUMMARY"
fi

# fp32 against bf16 autocast (system.precision): the quickstart's U-Net, 100 local steps.
if step precision 120 "$PY" benchmarks/precision.py --device "$DEV" --configs configs/quickstart.yaml \
        --steps 100 --repeats 2 "${DATA[@]}"; then
    grep -E " (fp32|bf16) |^precision=" "$WORK/logs/precision.log" | sed 's/^/    /' | tee -a "$SUMMARY"
fi

ckpt=$(ls "$WORK"/runs/tiny-1rank/checkpoints/round-*.h5 2>/dev/null | tail -n 1)
if [ -n "$ckpt" ]; then
    for dev in $(echo "$DEV cpu" | tr ' ' '\n' | uniq); do
        step "evaluate-$dev" 200 "$PY" -m feddm_hpc evaluate "$ckpt" --num-samples 1000 --device "$dev" \
                --out "$WORK/eval-$dev.json" \
            && "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print('    ' + ' '.join(f'{k}={r.get(k)}' for k in ('fd','kid','recall','coverage','class_histogram_distance','num_samples')))" \
                "$WORK/eval-$dev.json" | tee -a "$SUMMARY"
    done
else
    line "SKIP evaluate: no checkpoint from tiny-1rank"
fi

D=(--set system.deterministic=true)
train det-a 1 configs/tiny.yaml "${D[@]}"
train det-b 1 configs/tiny.yaml "${D[@]}"
compare "deterministic repeat" det-a det-b
train det-host-store 1 configs/tiny.yaml "${D[@]}" --set system.device_data_max_mb=0
compare "deterministic, host-memory store vs GPU store" det-a det-host-store
train det-2ranks 2 configs/tiny.yaml "${D[@]}"
compare "deterministic, 1 vs 2 ranks sharing the GPU" det-a det-2ranks

line ""
line "done in $((SECONDS - START))s; logs: $(dirname "$SUMMARY")/gpu_check_logs.tar.gz"
tar -czf "$(dirname "$SUMMARY")/gpu_check_logs.tar.gz" -C "$WORK" logs 2>/dev/null
grep -q "^FAIL" "$SUMMARY" && exit 1
exit 0
