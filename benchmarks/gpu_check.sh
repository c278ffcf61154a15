#!/usr/bin/env bash
# The prepared GPU check of feddm_hpc: one script that fits a 15-minute device loan (a few minutes
# of machine start-up, then at most GPU_CHECK_BUDGET_S = 480 s here), one summary file.
#
#   bash benchmarks/gpu_check.sh --plan       # anywhere (pure bash): the steps in order, their
#                                             # budgets and the total; exit 0
#   bash benchmarks/gpu_check.sh --prepare    # here, on the CPU machine, once: fills .gpu/ with
#                                             # MNIST's IDX files, the MPICH and mpi4py wheels for
#                                             # Python 3.12 and the cached LeNet weights
#   bash benchmarks/gpu_check.sh [SUMMARY]    # on the GPU machine, from the repository root;
#                                             # SUMMARY defaults to $OUT/gpu_check.txt
#
# Through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"],
# timeout_s=600); $OUT/gpu_check.txt and $OUT/gpu_check_logs.tar.gz come back.
#
# Before anything starts (no python, no torch yet) it stops with exit 3 and one line where there
# is no NVIDIA GPU or where .gpu/ lacks what the steps need (MNIST's files; the wheels where no
# mpiexec is at hand; a missing LeNet cache only warns). Then a start-up of at most STARTUP_S
# (the wheels, a torch/CUDA probe that computes on the GPU, a 2-rank mpi4py probe), then the steps
# of the STEPS table below, most important first: (1) the device is used, and training is
# deterministic and rank-invariant under system.deterministic (a repeat, the host-memory image
# store, 1 vs 2 ranks sharing the GPU: each bit-identical to the first run, or the step FAILs);
# (2) correctness on the GPU (one client under torch.cuda.set_sync_debug_mode, `evaluate` on the
# GPU and on the CPU); (3) throughput (quickstart at 1 and 2 ranks, fp32 vs bf16, client groups,
# the simulator's overhead). Each step runs under `timeout` with its budget (kill grace included);
# a step whose budget exceeds the time left is skipped and the summary says so.
# Exit: 0 when no step failed, 1 when one did, 3 when it could not start, 2 on a usage error.
# Environment: PYTHON (default .venv/bin/python if present, else python3), MPIEXEC,
# GPU_CHECK_WORK (default /tmp/feddm_gpu_check), GPU_CHECK_BUDGET_S (default 480 x scale),
# GPU_CHECK_CARRY_DIR (default .gpu), GPU_CHECK_SKIP (step names or globs to skip, e.g.
# "quickstart-* overhead"), GPU_CHECK_DEVICE (default cuda; cpu: a dry run of the plumbing on a
# machine without a GPU), GPU_CHECK_SCALE (integer, default 1: multiplies every budget, for a slow
# machine's dry run).
set -u -o pipefail

# ---------------------------------------------------------------------------------------------
# The plan. Budgets are seconds, each about 2.5-3x what the step should take on one H100/H200
# with 16 cores: every process pays ~3 s of Python + torch import, ~2 s of CUDA context and
# ~1 s reading MNIST from .gpu/, so even the tiny config's run takes ~10 s.
# Start-up allowance: wheels install (pip, two local wheels) + torch/CUDA probe (the first torch
# import on a fresh machine reads ~2 GB of CUDA libraries) + nvidia-smi query + 2-rank mpi4py probe.
T_WHEELS=15 T_PROBE=30 T_SMI=5 T_MPI=10
STARTUP_S=$((T_WHEELS + T_PROBE + T_SMI + T_MPI))
# "name budget kind function", run in this order; kind: invariance, correctness, throughput.
STEPS=(
    # (1) The device is used (det-a's log must name it) and runs repeat bit for bit. tiny under
    # system.deterministic: 2 rounds of 4 clients x 3 steps + 16 samples, ~10 s; its checkpoint
    # feeds evaluate.
    "det-a 30 invariance st_det_a"
    # det-a again, clients one at a time (det-a pipelines them: system.pipeline_clients auto, the
    # side-stream readback); = det-a. det-host-store and det-2ranks repeat det-a pipelined, so a
    # det-b alone differing points at the pipelining, all three at nondeterminism.
    "det-b 20 invariance st_det_b"
    "det-host-store 20 invariance st_det_host_store"     # images in pinned host memory: = det-a
    "det-2ranks 40 invariance st_det_2ranks"             # + mpiexec, 2 processes on 1 GPU: = det-a
    # (2) Correctness. One client of tiny, 20 steps, trained 4 times (warm-up, timed, "error"
    # and "warn" sync-debug modes) in one process: ~10 s.
    "sync-debug 25 correctness st_sync_debug"
    # det-a's checkpoint at N=500 (was 1000: the GPU-vs-CPU comparison needs no more), no
    # memorization audit: ~10 s on the GPU (+ ~10 s training a LeNet on 5,000 images when
    # .gpu/cache has none; evaluate-cpu then reuses it) ...
    "evaluate-cuda 45 correctness st_evaluate_cuda"
    "evaluate-cpu 30 correctness st_evaluate_cpu"        # ... the same sampling on 16 CPU cores
    # (3) Throughput, last. quickstart for 2 rounds of 2 clients x 135 steps (280k-parameter
    # U-Net) + 16 samples at DDIM 50: ~12 s; at 2 ranks + mpiexec and a second process.
    "quickstart-1rank 35 throughput st_quickstart_1rank"
    "quickstart-2ranks 35 throughput st_quickstart_2ranks"
    "precision 25 throughput st_precision"               # quickstart: 100 steps x 2 x fp32/bf16
    # 32 clients x 10 steps at G = 1, 4, 8, 32 (was 64 clients up to G = 64), tiny and quickstart,
    # one process, MNIST partitioned twice, a vmap trace per G: ~20 s.
    "client-groups 35 throughput st_client_groups"
    # tiny on 2 ranks twice: the simulator and a plain loop, one mpiexec each (~10-15 s each).
    "overhead 40 throughput st_overhead"
    # benchmarks/transport.py at the 40M-parameter U-Net only, float32 updates, 8 clients, 2
    # rounds on 2 ranks: the raw warm Gatherv against the simulator's gather (gather_vs_raw=),
    # host side (payloads are host buffers); ~15 s of building and moving 1.3 GB a round.
    "transport 40 throughput st_transport"
)
DEFAULT_BUDGET_S=480

SCALE=${GPU_CHECK_SCALE:-1}
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check: GPU_CHECK_SCALE must be a positive integer" >&2; exit 2; }

if [ "${1:-}" = "--plan" ]; then
    total=$((STARTUP_S * SCALE)) i=0
    echo "gpu_check plan: steps in order, each under \`timeout\` with its budget (seconds)"
    printf '    %-20s %4d s  (wheels %d + torch/CUDA probe %d + nvidia-smi %d + mpi probe %d)\n' \
        start-up "$total" $((T_WHEELS * SCALE)) $((T_PROBE * SCALE)) $((T_SMI * SCALE)) $((T_MPI * SCALE))
    for entry in "${STEPS[@]}"; do
        read -r name budget kind _ <<< "$entry"
        i=$((i + 1)) total=$((total + budget * SCALE))
        printf '%2d. %-20s %4d s  %s\n' "$i" "$name" $((budget * SCALE)) "$kind"
    done
    printf 'total %24d s  (GPU_CHECK_BUDGET_S default %d)\n' "$total" $((DEFAULT_BUDGET_S * SCALE))
    [ "$total" -le $((DEFAULT_BUDGET_S * SCALE)) ] || { echo "gpu_check: the plan exceeds its budget" >&2; exit 1; }
    exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
CARRY=${GPU_CHECK_CARRY_DIR:-$ROOT/.gpu}
MNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

if [ "${1:-}" = "--prepare" ]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    mkdir -p "$CARRY/mnist" "$CARRY/wheels" "$CARRY/cache" || exit 2
    src=$("$PY" -c 'from feddm_hpc.data.datasets import mnist_dir; print(mnist_dir())') || exit 2
    cp "$src"/*-ubyte.gz "$CARRY/mnist/" || exit 2
    ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 \
        -d "$CARRY/wheels" "mpich==$(ver mpich)" "mpi4py==$(ver mpi4py)" || exit 2
    cache=${FEDDM_HPC_CACHE:-$HOME/.cache/feddm_hpc}
    cp "$cache"/lenet5-mnist-*.pt "$CARRY/cache/" 2>/dev/null \
        || echo "note: no cached LeNet in $cache: evaluate will train a small one on the GPU machine (~10 s)"
    if [ "$CARRY" = "$ROOT/.gpu" ]; then
        exclude="$(git rev-parse --git-common-dir)/info/exclude"
        mkdir -p "$(dirname "$exclude")" && touch "$exclude"
        grep -qx '/.gpu/' "$exclude" || echo '/.gpu/' >> "$exclude"
    fi
    du -sh "$CARRY"
    echo "prepared; on the GPU machine: bash benchmarks/gpu_check.sh (carry .gpu)"
    exit 0
fi
case "${1:-}" in -*) echo "usage: bash benchmarks/gpu_check.sh [--plan | --prepare | SUMMARY]" >&2; exit 2;; esac

SUMMARY=${1:-${OUT:+$OUT/gpu_check.txt}}
SUMMARY=${SUMMARY:-$ROOT/runs/gpu_check/gpu_check.txt}
mkdir -p "$(dirname "$SUMMARY")" || exit 2
WORK=${GPU_CHECK_WORK:-/tmp/feddm_gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-$((DEFAULT_BUDGET_S * SCALE))}
DEV=${GPU_CHECK_DEVICE:-cuda}
SKIP=${GPU_CHECK_SKIP:-}
START=$SECONDS
: > "$SUMMARY"
line() { echo "$*" | tee -a "$SUMMARY"; }
die() { line "gpu_check: FAILED: $*"; exit 3; }
# within SECONDS CMD...: CMD under timeout, its kill grace included in SECONDS.
within() { local s=$1; shift; timeout -k 2 $((s > 4 ? s - 2 : 2)) "$@"; }

line "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
# Fail fast without a GPU: no driver tool and no device node means no NVIDIA GPU at all.
if [ "$DEV" = cuda ] && ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /dev/nvidiactl ]; then
    die "no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidiactl); run it on the GPU machine"
fi
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi
PYDIR=$(dirname "$(command -v "$PY" 2>/dev/null || echo "$PY")")
HAVE_MPIEXEC=""
if [ -n "${MPIEXEC:-}" ] || [ -x "$PYDIR/mpiexec" ] || command -v mpiexec >/dev/null 2>&1; then HAVE_MPIEXEC=1; fi

# The carried files, checked before any device time is spent on python.
fix="bash benchmarks/gpu_check.sh --prepare"
[ "$CARRY" = "$ROOT/.gpu" ] || fix="GPU_CHECK_CARRY_DIR=$CARRY $fix"
fix="fix: run \`$fix\` on the CPU machine, then carry .gpu (run(..., carry=[\".gpu\"]))"
missing=()
if [ ! -d "$CARRY" ]; then
    die "no carried folder $CARRY; $fix"
else
    for f in "${MNIST_FILES[@]}"; do
        [ -s "$CARRY/mnist/$f.gz" ] || [ -s "$CARRY/mnist/$f" ] || missing+=("mnist/$f.gz")
    done
    if [ -z "$HAVE_MPIEXEC" ]; then
        compgen -G "$CARRY/wheels/mpich-*.whl" >/dev/null || missing+=("wheels/mpich-*.whl (no mpiexec here)")
        compgen -G "$CARRY/wheels/mpi4py-*.whl" >/dev/null || missing+=("wheels/mpi4py-*.whl (no mpiexec here)")
    fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
    die "carried files missing from $CARRY: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g'); $fix"
fi
EXTRACTOR=()
if ! compgen -G "$CARRY/cache/lenet5-mnist-*.pt" >/dev/null; then
    line "warning: no cached LeNet in $CARRY/cache: evaluate trains one on 5,000 images for 1 epoch (~10 s; its FD compares only within this check)"
    EXTRACTOR=(--extractor-train-subset 5000 --extractor-epochs 1)
fi
DATA=(--set "data.path=$CARRY/mnist")

rm -rf "$WORK" && mkdir -p "$WORK/logs" "$WORK/runs" "$WORK/notes" "$WORK/digests" "$WORK/skips" \
    || die "cannot create $WORK"
# Carried wheels (--prepare) install under a private prefix, and only where no mpiexec is at
# hand (never into an environment that has one); the package itself is not installed.
if [ -z "$HAVE_MPIEXEC" ]; then
    within $((T_WHEELS * SCALE)) "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --ignore-installed --prefix "$WORK/prefix" "$CARRY"/wheels/*.whl >"$WORK/logs/wheels.log" 2>&1 \
        || die "installing $CARRY/wheels failed: $(tail -n 3 "$WORK/logs/wheels.log" | tr '\n' ' ')"
    for d in "$WORK"/prefix/lib/python3*/site-packages; do PYTHONPATH=$d${PYTHONPATH:+:$PYTHONPATH}; done
    export PATH="$WORK/prefix/bin:$PATH" LD_LIBRARY_PATH="$WORK/prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FEDDM_HPC_CACHE="$WORK/cache"
mkdir -p "$FEDDM_HPC_CACHE" && cp "$CARRY"/cache/* "$FEDDM_HPC_CACHE"/ 2>/dev/null

# The probe: torch sees the GPU and computes on it (a matrix product checked against the CPU's),
# and the package and its dependencies import.
info=$(within $((T_PROBE * SCALE)) "$PY" - "$DEV" <<'EOF' 2>&1
import sys, torch
import h5py, feddm_hpc.cli  # noqa: F401  (the steps need them: fail here, once, if they are missing)
dev = sys.argv[1]
if dev != "cuda":
    sys.exit(print(f"torch {torch.__version__}, dry run on {dev}"))
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
on_gpu = (a.cuda() @ a.cuda()).cpu()
assert torch.allclose(on_gpu, a @ a), "a float64 matrix product on the GPU differs from the CPU's"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
      f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB; a matrix product on it matches the CPU")
EOF
)
rc=$?
[ "$rc" -eq 0 ] || die "no CUDA GPU visible to $PY: $(echo "$info" | tail -n 1)$([ "$rc" -ge 124 ] && echo " (timed out at ${T_PROBE}s x $SCALE)")"
line "python $PY: $info"
command -v nvidia-smi >/dev/null && line "nvidia-smi: $(within $((T_SMI * SCALE)) nvidia-smi --query-gpu=name,driver_version,compute_mode --format=csv,noheader 2>&1 | head -n 2 | tr '\n' ' ')"
MPI=${MPIEXEC:-}
[ -z "$MPI" ] && [ -x "$PYDIR/mpiexec" ] && MPI="$PYDIR/mpiexec"
[ -z "$MPI" ] && MPI=$(command -v mpiexec || true)
MPI_ARGS=()
if [ -n "$MPI" ] && "$MPI" --version 2>&1 | grep -q "Open MPI"; then MPI_ARGS=(--allow-run-as-root --oversubscribe); fi
if [ -n "$MPI" ] && ! within $((T_MPI * SCALE)) "$MPI" "${MPI_ARGS[@]}" -n 2 "$PY" -c \
        "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2" >"$WORK/logs/mpi.log" 2>&1; then
    line "note: mpiexec $MPI cannot start 2 ranks of mpi4py ($(tail -n 1 "$WORK/logs/mpi.log")): 2-rank steps skipped"
    MPI=""
fi
export MPIEXEC="$MPI"
line "mpiexec: ${MPI:-none}; start-up took $((SECONDS - START))s (allowance $((STARTUP_S * SCALE))s)"
line ""

# ---------------------------------------------------------------------------------------------
# The steps. Each st_* function runs in a child bash (under `timeout`, so its helpers' work counts
# too) with stdout/stderr in $LOG; what it writes to fd 3 goes into the summary under its
# PASS/FAIL line; `skip REASON` ends it as a SKIP.
note() { echo "    $*" >&3; }
skip() { echo "$*" > "$WORK/skips/$STEP_NAME"; exit 75; }
train() {  # train NAME NPROCS CONFIG [--set ...]: a run, its device checked, its parameters digested
    local name=$1 np=$2 config=$3; shift 3
    local cmd=("$PY" -m feddm_hpc train "$config" --run-dir "$WORK/runs/$name" --set "system.device=$DEV"
               --set system.progress=false --set system.threads=1 "${DATA[@]}" "$@")
    if [ "$np" -gt 1 ]; then
        [ -n "$MPI" ] || skip "no working mpiexec"
        cmd=("$MPI" "${MPI_ARGS[@]}" -n "$np" "$PY" -m mpi4py "${cmd[@]:1}")
    fi
    "${cmd[@]}" || return
    grep -h -E "warning|share GPU|pinned host" "$LOG" | sort -u | head -n 4 | sed 's/^/    /' >&3
    if ! grep -q "device $DEV" "$LOG"; then note "the run's log does not name device $DEV"; return 1; fi
    "$PY" "$WORK/digest.py" "$WORK/runs/$name" "$WORK/digests/$name" >&3
}
same_as() {  # same_as REF NAME LABEL [info]: CMP line; a difference fails the step unless info
    local a b
    a=$(cat "$WORK/digests/$1" 2>/dev/null) b=$(cat "$WORK/digests/$2" 2>/dev/null)
    if [ -z "$a" ] || [ -z "$b" ]; then echo "CMP  $3: not compared ($([ -z "$a" ] && echo "$1" || echo "$2") did not pass)" >&3
    elif [ "$a" = "$b" ]; then echo "CMP  $3: bit-identical ($a)" >&3
    else echo "CMP  $3: DIFFER ($1 $a, $2 $b)" >&3; [ "${4:-}" = info ] || return 1; fi
}
DET=(--set system.deterministic=true)
st_det_a() { train det-a 1 configs/tiny.yaml "${DET[@]}"; }
st_det_b() {
    train det-b 1 configs/tiny.yaml "${DET[@]}" --set system.pipeline_clients=false &&
        same_as det-a det-b "deterministic repeat, one client at a time vs pipelined"
}
st_det_host_store() {
    train det-host-store 1 configs/tiny.yaml "${DET[@]}" --set system.device_data_max_mb=0 || return
    if [ "$DEV" = cuda ] && ! grep -q "pinned host" "$LOG"; then note "no 'pinned host' line: the host store was not used"; return 1; fi
    same_as det-a det-host-store "deterministic, host-memory store vs GPU store"
}
st_det_2ranks() {
    train det-2ranks 2 configs/tiny.yaml "${DET[@]}" && same_as det-a det-2ranks "deterministic, 1 vs 2 ranks sharing the GPU"
}
st_sync_debug() {
    [ "$DEV" = cuda ] || skip "needs CUDA (dry run on $DEV)"
    "$PY" "$WORK/sync_debug.py" client.local_steps=20 "data.path=$CARRY/mnist" || return
    grep "^sync_debug" "$LOG" | sed 's/^/    /' >&3
}
evaluate() {  # evaluate DEVICE: det-a's last checkpoint at N=500
    local ckpt
    [ -s "$WORK/digests/det-a" ] || skip "no checkpoint from det-a (it did not pass)"
    ckpt=$(ls "$WORK"/runs/det-a/checkpoints/round-*.h5 | tail -n 1)
    "$PY" -m feddm_hpc evaluate "$ckpt" --num-samples 500 --no-memorization --device "$1" \
        "${EXTRACTOR[@]}" --out "$WORK/eval-$1.json" || return
    "$PY" "$WORK/eval_summary.py" "$WORK/eval-$1.json" "$WORK/eval-cuda.json" >&3
}
st_evaluate_cuda() { [ "$DEV" = cuda ] || skip "dry run on $DEV: evaluate-cpu covers it"; evaluate cuda; }
st_evaluate_cpu() { evaluate cpu; }
Q=(--set federation.rounds=2 --set sampling.num_samples=16)
st_quickstart_1rank() { train quickstart-1rank 1 configs/quickstart.yaml "${Q[@]}"; }
st_quickstart_2ranks() {
    train quickstart-2ranks 2 configs/quickstart.yaml "${Q[@]}" \
        && same_as quickstart-1rank quickstart-2ranks "quickstart 1 vs 2 ranks (default kernels, informative)" info
}
st_precision() {  # fp32 against bf16 autocast (system.precision)
    "$PY" benchmarks/precision.py --device "$DEV" --configs configs/quickstart.yaml --steps 100 \
        --repeats 2 "${DATA[@]}" || return
    grep -E " (fp32|bf16) |^precision=" "$LOG" | sed 's/^/    /' >&3
}
st_client_groups() {  # one vectorized computation of G clients (system.client_group_size)
    "$PY" benchmarks/client_groups.py --device "$DEV" --groups 1 4 8 32 --clients 32 --steps 10 \
        --repeats 1 "${DATA[@]}" || return
    grep -E " G=|^client_groups=" "$LOG" | sed 's/^/    /' >&3
}
st_overhead() {
    [ -n "$MPI" ] || skip "no working mpiexec"
    "$PY" benchmarks/overhead.py --config configs/tiny.yaml --np 2 --repeats 1 --set "system.device=$DEV" \
        "${DATA[@]}" || return
    grep -E "^(config|repeat|overhead_ratio|simulator_wall_s|plain_loop_wall_s|cpu_ratio_median|wall_ratio_median)" "$LOG" | sed 's/^/    /' >&3
}

st_transport() {
    [ -n "$MPI" ] || skip "no working mpiexec"
    "$PY" benchmarks/transport.py --np 2 --clients 8 --rounds 2 --codecs float32 || return
    grep -E "gather|rss|gather_vs_raw=" "$LOG" | tail -8 | sed 's/^/    /' >&3
}

cat > "$WORK/digest.py" <<'EOF'
"""digest.py RUN_DIR OUT: the last checkpoint's global parameters (sha256, 12 hex) -> OUT, and one line."""
import hashlib, json, sys
from pathlib import Path
import h5py
run = Path(sys.argv[1])
ckpt = sorted((run / "checkpoints").glob("round-*.h5"))[-1]
with h5py.File(ckpt, "r") as f:
    digest = hashlib.sha256(f["global/params"][()].tobytes()).hexdigest()[:12]
Path(sys.argv[2]).write_text(digest)
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
print(f"    params={digest} rounds={len(rows)} train_loss={rows[-1].get('train_loss')} "
      f"round_wall_s={[round(r['wall_s'], 2) for r in rows if r.get('wall_s') is not None]}")
EOF
cat > "$WORK/eval_summary.py" <<'EOF'
"""eval_summary.py RESULT.json [CUDA.json]: the main metrics, and the CPU result against the GPU's."""
import json, sys
from pathlib import Path
keys = ("fd", "kid", "recall", "coverage", "class_histogram_distance", "num_samples", "sample_s", "score_s")
r = json.loads(Path(sys.argv[1]).read_text())
print("    " + " ".join(f"{k}={r.get(k)}" for k in keys))
other = Path(sys.argv[2]) if len(sys.argv) > 2 else None
if other and other.resolve() != Path(sys.argv[1]).resolve() and other.exists():
    g = json.loads(other.read_text())
    fd_a, fd_b = g.get("fd"), r.get("fd")
    if fd_a is not None and fd_b is not None:
        print(f"CMP  evaluate cuda vs cpu: fd {fd_a:.3f} vs {fd_b:.3f} "
              f"(relative difference {abs(fd_a - fd_b) / max(abs(fd_b), 1e-12):.2e})")
EOF
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
# What the children need: these variables and every function above.
{ echo "set -u -o pipefail"; declare -p ROOT WORK PY DEV MPI MPI_ARGS DATA DET Q EXTRACTOR CARRY; declare -f; } \
    > "$WORK/env.sh"

# run_step NAME BUDGET FUNCTION: PASS/FAIL/SKIP line with seconds, the step's notes, a failure's log tail.
TIME_SKIPPED=() FAILED=() PASSED=()
run_step() {
    local name=$1 budget=$(($2 * SCALE)) fn=$3 pat left t0 rc
    local log="$WORK/logs/$name.log" notes="$WORK/notes/$name.txt"
    for pat in $SKIP; do
        # shellcheck disable=SC2053  # a glob on purpose
        [[ $name == $pat ]] && { line "SKIP $name: GPU_CHECK_SKIP"; return; }
    done
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt "$budget" ]; then
        line "SKIP $name: out of time (${left}s left of ${BUDGET}s, its budget is ${budget}s)"
        TIME_SKIPPED+=("$name"); return
    fi
    t0=$SECONDS
    STEP_NAME=$name LOG=$log within "$budget" bash -c 'source "$1" && "$2"' _ "$WORK/env.sh" "$fn" \
        >"$log" 2>&1 3>"$notes"
    rc=$?
    if [ "$rc" -eq 75 ]; then line "SKIP $name: $(cat "$WORK/skips/$name" 2>/dev/null)"; return; fi
    if [ "$rc" -eq 0 ]; then
        line "PASS $name $((SECONDS - t0))s"; PASSED+=("$name")
        tee -a "$SUMMARY" < "$notes"
        return
    fi
    line "FAIL $name rc=$rc $((SECONDS - t0))s$( { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && echo " (timed out: budget ${budget}s)")"
    FAILED+=("$name")
    tee -a "$SUMMARY" < "$notes"
    tail -n 15 "$log" | sed 's/^/    | /' >> "$SUMMARY"
}
for entry in "${STEPS[@]}"; do
    read -r name budget _ fn <<< "$entry"
    run_step "$name" "$budget" "$fn"
done

line ""
line "done in $((SECONDS - START))s: ${#PASSED[@]} passed, ${#FAILED[@]} failed${FAILED[*]:+ (${FAILED[*]})}, $((${#STEPS[@]} - ${#PASSED[@]} - ${#FAILED[@]})) skipped"
[ "${#TIME_SKIPPED[@]}" -gt 0 ] && line "skipped for lack of time (budget ${BUDGET}s): ${TIME_SKIPPED[*]}"
line "logs: $(dirname "$SUMMARY")/gpu_check_logs.tar.gz"
tar -czf "$(dirname "$SUMMARY")/gpu_check_logs.tar.gz" -C "$WORK" logs 2>/dev/null
[ "${#FAILED[@]}" -gt 0 ] && exit 1
exit 0
