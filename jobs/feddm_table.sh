#!/bin/bash
# The FedDM comparison table on Fashion-MNIST: five federated methods under three label
# partitions plus a centralized reference, their checkpoints evaluated at the same N, then
# `feddm-hpc report` into results/feddm_table/ (table.md, plots, samples, COMMAND.txt).
#
#   jobs/feddm_table.sh                      # foreground, about 60-90 min on 2 idle cores
#   jobs/feddm_table.sh --background         # same, detached; log in results/feddm_table/study.log
#   ONLY='vanilla|central' jobs/feddm_table.sh      # a subset of the runs (regex on run names)
#   EXTRA='--set federation.rounds=2' RUNS=/tmp/t OUT=/tmp/t/out N=64 jobs/feddm_table.sh  # dry run
#
# Runs (names are <method>-<partition>):
#   methods     vanilla   FedAvg (FedDM-vanilla)
#               prox      FedProx, client.prox_mu 0.01 (FedDM-prox)
#               quant8    8-bit quantized uplink (FedDM-quant)
#               quant4ef  4-bit quantized uplink with error feedback
#               scaffold  SCAFFOLD (plain SGD clients: no momentum, no clipping)
#   partitions  iid, dir0.5 (dirichlet alpha 0.5), dir0.1 (dirichlet alpha 0.1; plain dirichlet
#               gives every client >= 1,043 images there, checked with `feddm-hpc validate`)
#   central     num_clients 1, iid, local_steps = num_clients x local_steps of the base config,
#               same rounds: the same number of gradient steps (and images seen) as one
#               federated run's clients together, i.e. a compute-matched reference. A federated
#               run advances the global model by only ~local_steps sequential steps per round,
#               so the reference is expected to be ahead; that gap is what federation costs.
#
# Resumable: a run whose final checkpoint exists is skipped, a run with some checkpoints is
# continued with `feddm-hpc resume`, an evaluation whose JSON exists at this N is skipped. Run it
# again after an interruption. A run whose config is rejected (e.g. an algorithm this build does
# not have yet) is reported and skipped; the others go on. Exit code 1 if any run failed.
#
# Variables:
#   BASE     base config                    (default configs/table/base.yaml)
#   RUNS     folder of the run directories   (default runs/feddm_table)
#   OUT      report folder                   (default results/feddm_table)
#   N        samples per evaluation          (default 1000; FD depends on N: one N for all)
#   EVAL_ROUNDS  all: evaluate every kept checkpoint (base: rounds 5, 10, 15, 20), giving the
#            FD-per-round and FD-vs-uplink curves; final: the last round only (~14 min less)
#   NP       MPI ranks per run               (default 1: plain python, runs one after another)
#   THREADS  torch threads per rank          (default: the config's system.threads, auto)
#   ONLY     regex: run only matching names  (default all)
#   EXTRA    more arguments for every train, e.g. '--set federation.rounds=2'
#   PYTHON   interpreter                     (default .venv/bin/python when present, else python3)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
BASE=${BASE:-configs/table/base.yaml}
RUNS=${RUNS:-runs/feddm_table}
OUT=${OUT:-results/feddm_table}
N=${N:-1000}
EVAL_ROUNDS=${EVAL_ROUNDS:-all}
NP=${NP:-1}
THREADS=${THREADS:-}
ONLY=${ONLY:-}
EXTRA=${EXTRA:-}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi

if [ "${1:-}" = "--background" ]; then
    mkdir -p "$OUT"
    nohup "$0" > "$OUT/study.log" 2>&1 < /dev/null &
    echo "started in the background: pid $!, log $OUT/study.log"
    exit 0
fi

feddm() {
    if [ "$NP" -gt 1 ]; then
        "$(dirname "$PYTHON")/mpiexec" -n "$NP" "$PYTHON" -m mpi4py -m feddm_hpc "$@"
    else
        "$PYTHON" -m feddm_hpc "$@"
    fi
}
log() { echo "[$(date '+%F %T')] $*"; }

METHODS="vanilla prox quant8 quant4ef scaffold"
PARTITIONS="iid dir0.5 dir0.1"
method_sets() {
    case $1 in
        vanilla)  echo "--set federation.algorithm=fedavg" ;;
        prox)     echo "--set federation.algorithm=fedprox --set client.prox_mu=0.01" ;;
        quant8)   echo "--set compression.uplink=quant --set compression.bits=8" ;;
        quant4ef) echo "--set compression.uplink=quant --set compression.bits=4 --set compression.error_feedback=true" ;;
        # SCAFFOLD option II needs plain SGD clients (config.validate rejects Adam, momentum, clipping);
        # the base lr was chosen for Adam and is untuned for SGD.
        scaffold) echo "--set federation.algorithm=scaffold --set client.optimizer=sgd --set client.momentum=0 --set client.grad_clip=null" ;;
    esac
}
partition_sets() {
    case $1 in
        iid)    echo "--set data.partition=iid" ;;
        dir0.5) echo "--set data.partition=dirichlet --set data.dirichlet_alpha=0.5" ;;
        dir0.1) echo "--set data.partition=dirichlet --set data.dirichlet_alpha=0.1" ;;
    esac
}
# Centralized: one client doing all clients' steps each round (compute-matched, see above).
central_steps=$("$PYTHON" -c 'import sys; from feddm_hpc.config import load_config
c = load_config(sys.argv[1]); print(c.federation.num_clients * c.client.local_steps)' "$BASE")

NAMES=() SETS=()
for m in $METHODS; do
    for p in $PARTITIONS; do
        NAMES+=("$m-$p"); SETS+=("$(method_sets "$m") $(partition_sets "$p")")
    done
done
NAMES+=("central")
SETS+=("--set federation.num_clients=1 --set client.local_steps=$central_steps --set data.partition=iid")

mkdir -p "$RUNS/logs" "$OUT"
{
    echo "# $(date '+%F %T') on $(hostname), git $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "BASE=$BASE RUNS=$RUNS OUT=$OUT N=$N EVAL_ROUNDS=$EVAL_ROUNDS NP=$NP THREADS=$THREADS ONLY='$ONLY' EXTRA='$EXTRA' $0 $*"
    echo "# per run (see below); then: feddm-hpc report <run dirs> --out $OUT"
} > "$OUT/COMMAND.txt"

threads_set=()
[ -n "$THREADS" ] && threads_set=(--set "system.threads=$THREADS")
failed=() done_dirs=()
t_study=$(date +%s)
for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then continue; fi
    # shellcheck disable=SC2206  # the sets and EXTRA are meant to split into arguments
    args=(${SETS[$i]} ${EXTRA} "${threads_set[@]}" --set system.progress=false)
    dir=$RUNS/$name
    if ! rounds=$("$PYTHON" -c 'import sys
from feddm_hpc.config import load_config
from feddm_hpc.errors import UserError
try:
    print(load_config(sys.argv[1], [a for a in sys.argv[2:] if a != "--set"]).federation.rounds)
except UserError as exc:
    sys.exit(f"error: {exc}")' "$BASE" "${args[@]}" 2> "$RUNS/logs/$name.config.err"); then
        log "$name: config rejected, skipped: $(tail -n 1 "$RUNS/logs/$name.config.err")"
        failed+=("$name"); continue
    fi
    final=$dir/checkpoints/$(printf 'round-%06d.h5' $((rounds - 1)))
    echo "feddm-hpc train $BASE --run-dir $dir ${args[*]}" >> "$OUT/COMMAND.txt"
    t0=$(date +%s)
    if [ -f "$final" ]; then
        log "$name: final checkpoint exists, training skipped"
    elif compgen -G "$dir/checkpoints/round-*.h5" > /dev/null; then
        log "$name: resuming"
        if ! feddm resume "$dir" >> "$RUNS/logs/$name.train.log" 2>&1; then
            log "$name: resume FAILED (see $RUNS/logs/$name.train.log)"; failed+=("$name"); continue
        fi
    else
        log "$name: training ($rounds rounds)"
        if ! feddm train "$BASE" --run-dir "$dir" "${args[@]}" > "$RUNS/logs/$name.train.log" 2>&1; then
            log "$name: training FAILED: $(tail -n 1 "$RUNS/logs/$name.train.log")"
            failed+=("$name"); continue
        fi
    fi
    t1=$(date +%s)
    if [ "$EVAL_ROUNDS" = final ]; then ckpts=("$final"); else ckpts=("$dir"/checkpoints/round-*.h5); fi
    ok=1
    for ckpt in "${ckpts[@]}"; do
        eval_json=$dir/eval/$(basename "${ckpt%.h5}").json
        echo "feddm-hpc evaluate $ckpt --num-samples $N" >> "$OUT/COMMAND.txt"
        if [ -f "$eval_json" ] && grep -q "\"num_samples\": $N," "$eval_json"; then
            continue   # already evaluated at this N
        fi
        if ! feddm evaluate "$ckpt" --num-samples "$N" > /dev/null 2>> "$RUNS/logs/$name.eval.log"; then
            log "$name: evaluation of $(basename "$ckpt") FAILED: $(tail -n 1 "$RUNS/logs/$name.eval.log")"
            ok=0
        fi
    done
    if [ $ok = 0 ]; then failed+=("$name"); continue; fi
    log "$name: complete (train $((t1 - t0)) s, evaluate $(($(date +%s) - t1)) s)"
done

# The report covers every run of the study that has an evaluation, also those an earlier
# invocation (or another ONLY subset) completed, in the study's order.
for name in "${NAMES[@]}"; do
    if compgen -G "$RUNS/$name/eval/round-*.json" > /dev/null; then done_dirs+=("$RUNS/$name"); fi
done
if [ ${#done_dirs[@]} -gt 0 ]; then
    echo "feddm-hpc report ${done_dirs[*]} --out $OUT" >> "$OUT/COMMAND.txt"
    feddm report "${done_dirs[@]}" --out "$OUT"
fi
log "study finished in $(( ($(date +%s) - t_study) / 60 )) min: ${#done_dirs[@]} run(s) in $OUT/table.md"
if [ ${#failed[@]} -gt 0 ]; then
    log "failed or skipped: ${failed[*]}"
    exit 1
fi
