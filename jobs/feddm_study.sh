#!/bin/bash
# The multi-seed FedDM study on Fashion-MNIST (issue 11 item 3): federated methods and uplink
# codecs under an iid and a pathological (2 classes per client) partition plus a centralized
# reference, each cell run with several seeds, every kept checkpoint evaluated at the same N, then
# `python -m feddm_hpc.evaluation.study_report OUT` into results/feddm_study/ (table.md with mean ± std over
# seeds, fd_vs_round.png, fd_vs_uplink.png, summary.json; COMMAND.txt, study.log).
#
#   jobs/feddm_study.sh                      # foreground
#   jobs/feddm_study.sh --background         # same, detached; log in $OUT/study.log
#   ONLY='fedavg|central' jobs/feddm_study.sh        # a subset (regex on run names)
#   BASE=configs/tiny.yaml EXTRA='--set federation.rounds=2' RUNS=/tmp/t OUT=/tmp/t/out N=64 \
#     SEEDS='0 1' jobs/feddm_study.sh       # dry run
#   python -m feddm_hpc.evaluation.study_report results/feddm_study      # the report again, from the copies
#   python -m feddm_hpc.evaluation.study_report results/feddm_study --best-prox shards   # the prox choice
#
# Cells (settings on top of BASE; run names <cell>-<partition>-s<seed>, central-s<seed>):
#   fedavg        federation.algorithm=fedavg
#   prox-mu<MU>   FedProx, client.prox_mu=MU for MU in PROX_MUS (0.001 0.01 0.1): shards only
#   prox          FedProx with the mu of the prox-mu<MU>-shards cell of lowest mean final FD over
#                 SEEDS, on iid (prox-iid); the choice is kept in $OUT/prox_mu.txt (delete it to
#                 choose again) and is in every prox-iid run's config.yaml and in table.md
#   scaffold      SCAFFOLD with plain SGD clients (it needs them): client.optimizer=sgd,
#                 momentum 0, grad_clip null, client.lr=$SCAFFOLD_LR
#   sgd           FedAvg with the same plain SGD clients as scaffold: the like-for-like baseline
#                 of SCAFFOLD's correction (the report pairs scaffold with sgd)
#   scaffold-lr<LR>, sgd-lr<LR>   both at client lr LR, for LR in SGD_LRS (shards only)
#   q8            8-bit quantized uplink        q4     4-bit, no error feedback (iid only)
#   q4ef          4-bit + error feedback        q2ef   2-bit, stochastic rounding + EF (iid only)
#   topk1ef       top-1% sparsified uplink + error feedback (iid only)
#   post8         the paper's post-training variant: 8-bit quantization of the weights
#                 (compression.target=weights) instead of the update
#   central       num_clients 1, iid, local_steps = num_clients x the base local_steps, same
#                 rounds: as many gradient steps as one federated run's clients together
#   partitions    iid (data.partition=iid), shards (data.partition=shards, 2 classes per client)
#   grid          iid and shards: fedavg, prox, scaffold, sgd, q8, q4ef, post8; iid: q4, q2ef,
#                 topk1ef; shards: the prox-mu sweep and the SGD_LRS cells; plus central. Each x
#                 SEEDS (--set seed=S).
#
# Order: seed by seed, so an interrupted study has whole seeds: every cell's first seed before
# any cell's second one. Exception: the prox sweep's later seeds run right after the first seed of
# the other cells, since prox-iid needs the sweep's mean over all SEEDS before its first seed.
# JOBS runs go at once (a bash job pool), each one process (python -m feddm_hpc, no MPI) with
# THREADS torch threads.
#
# Resumable: a run whose copy $OUT/runs/<name>/ is complete (has DONE) is skipped entirely, so a
# fresh clone with committed results goes on where the study stopped; else a run whose final
# checkpoint exists skips training, one with checkpoints is continued (`feddm-hpc resume`), and an
# evaluation whose JSON exists at this N is skipped. After its evaluations a run's small outputs
# (config.yaml, metrics.jsonl, eval/*.json at this N, partition.json, the final sample grid) are
# copied to $OUT/runs/<name>/ and DONE is written last. A config rejected (by the config check or
# at start-up, e.g. a partition the data cannot make) is reported and skipped; the others go on.
# Stop with Ctrl-C or `kill PID`: the runs checkpoint at their next round end and stop (run the
# script again to go on). Exit code 0 all done, 1 some run failed or was rejected, 3 stopped.
#
# Variables:
#   BASE     base config                     (default configs/study/base.yaml)
#   RUNS     folder of the run directories   (default runs/feddm_study)
#   OUT      report folder                   (default results/feddm_study)
#   SEEDS    seeds                           (default "0 1 2")
#   N        samples per evaluation          (default 1000; FD depends on N: one N for all)
#   EVAL_ROUNDS  all: evaluate every kept checkpoint (FD-per-round and FD-vs-uplink curves);
#            final: the last round only
#   JOBS     runs at once                    (default 2)
#   THREADS  torch threads per run           (default 1)
#   PROX_MUS the prox sweep's mu values      (default "0.001 0.01 0.1")
#   SCAFFOLD_LR  SCAFFOLD's client SGD lr    (default 0.1)
#   SGD_LRS  more SGD lrs for scaffold and sgd on shards (default none, e.g. "0.03 0.3")
#   ONLY     regex: run only matching run names (default all)
#   EXTRA    more arguments for every train, e.g. '--set federation.rounds=2'
#   PYTHON   interpreter                     (default .venv/bin/python when present, else python3)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
BASE=${BASE:-configs/study/base.yaml}
RUNS=${RUNS:-runs/feddm_study}
OUT=${OUT:-results/feddm_study}
SEEDS=${SEEDS:-0 1 2}
N=${N:-1000}
EVAL_ROUNDS=${EVAL_ROUNDS:-all}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
PROX_MUS=${PROX_MUS:-0.001 0.01 0.1}
SCAFFOLD_LR=${SCAFFOLD_LR:-0.1}
SGD_LRS=${SGD_LRS:-}
ONLY=${ONLY:-}
EXTRA=${EXTRA:-}
source "$here/jobs/lib/study_pool.sh"
detach_if_asked "$0" "$@"

# ---------------------------------------------------------------------------- the cells
sgd_sets() {  # LR: plain SGD clients, as SCAFFOLD's option II needs them
    echo "--set client.optimizer=sgd --set client.momentum=0 --set client.grad_clip=null --set client.lr=$1"
}
cell_sets() {
    local q="--set federation.algorithm=fedavg --set compression.uplink=quant"
    case $1 in
        fedavg)   echo "--set federation.algorithm=fedavg" ;;
        prox-mu*) echo "--set federation.algorithm=fedprox --set client.prox_mu=${1#prox-mu}" ;;
        prox)     echo "--set federation.algorithm=fedprox --set client.prox_mu=$PROX_MU" ;;
        scaffold) echo "--set federation.algorithm=scaffold $(sgd_sets "$SCAFFOLD_LR")" ;;
        scaffold-lr*) echo "--set federation.algorithm=scaffold $(sgd_sets "${1#scaffold-lr}")" ;;
        sgd)      echo "--set federation.algorithm=fedavg $(sgd_sets "$SCAFFOLD_LR")" ;;
        sgd-lr*)  echo "--set federation.algorithm=fedavg $(sgd_sets "${1#sgd-lr}")" ;;
        q8)       echo "$q --set compression.bits=8" ;;
        q4)       echo "$q --set compression.bits=4 --set compression.error_feedback=false" ;;
        q4ef)     echo "$q --set compression.bits=4 --set compression.error_feedback=true" ;;
        q2ef)     echo "$q --set compression.bits=2 --set compression.stochastic_rounding=true" \
                       "--set compression.error_feedback=true" ;;
        topk1ef)  echo "--set federation.algorithm=fedavg --set compression.uplink=topk" \
                       "--set compression.topk_fraction=0.01 --set compression.error_feedback=true" ;;
        post8)    echo "$q --set compression.bits=8 --set compression.target=weights" ;;
        central)  echo "--set federation.num_clients=1 --set data.partition=iid" \
                       "--set client.local_steps=$central_steps" ;;
        *)        echo "unknown cell $1" >&2; return 1 ;;
    esac
}
partition_sets() {
    case $1 in
        iid)    echo "--set data.partition=iid" ;;
        shards) echo "--set data.partition=shards --set data.classes_per_client=2" ;;
    esac
}
SWEEP=() OTHERS=()        # (cell partition) pairs, in the order of a seed's runs
for mu in $PROX_MUS; do SWEEP+=("prox-mu$mu shards"); done
for p in iid shards; do
    for m in fedavg scaffold sgd q8 q4ef post8; do OTHERS+=("$m $p"); done
    if [ "$p" = iid ]; then for m in q4 q2ef topk1ef; do OTHERS+=("$m $p"); done; fi
done
for lr in $SGD_LRS; do OTHERS+=("scaffold-lr$lr shards" "sgd-lr$lr shards"); done
# shellcheck disable=SC2086  # EXTRA is meant to split into arguments
central_steps=$("$PYTHON" -c 'import sys; from feddm_hpc.config import load_config
c = load_config(sys.argv[1], [a for a in sys.argv[2:] if a != "--set"])
print(c.federation.num_clients * c.client.local_steps)' "$BASE" $EXTRA)

run_name() {  # CELL PARTITION SEED
    if [ "$1" = central ]; then echo "central-s$3"; else echo "$1-$2-s$3"; fi
}

# ---------------------------------------------------------------------------- the study
mkdir -p "$RUNS/logs" "$OUT/runs"
{
    echo "# $(date '+%F %T') on $(hostname), git $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "BASE=$BASE RUNS=$RUNS OUT=$OUT SEEDS='$SEEDS' N=$N EVAL_ROUNDS=$EVAL_ROUNDS JOBS=$JOBS THREADS=$THREADS PROX_MUS='$PROX_MUS' SCAFFOLD_LR=$SCAFFOLD_LR SGD_LRS='$SGD_LRS' ONLY='$ONLY' EXTRA='$EXTRA' $0 $*"
    echo "# per run: train (or resume RUN_DIR), then evaluate each kept checkpoint; then: python -m feddm_hpc.evaluation.study_report $OUT"
} > "$OUT/COMMAND.txt"

submit_cell() {  # CELL PARTITION SEED
    submit "$(run_name "$1" "$2" "$3")" "$(cell_sets "$1") $(partition_sets "$2") --set seed=$3"
}

PROX_MU=
choose_prox_mu() {  # once: wait for the sweep, pick its best mu (kept in $OUT/prox_mu.txt)
    if [ -f "$OUT/prox_mu.txt" ]; then
        PROX_MU=$(head -n 1 "$OUT/prox_mu.txt")
        log "prox-iid: mu $PROX_MU (kept in $OUT/prox_mu.txt)"; return 0
    fi
    local mu s name pid
    for mu in $PROX_MUS; do for s in $SEEDS; do
        name=$(run_name "prox-mu$mu" shards "$s")
        pid=${PID[$name]:-}
        if [ -n "$pid" ] && [ "$pid" != done ]; then wait "$pid" 2> /dev/null || true; fi
    done; done
    [ $STOPPING = 1 ] && return 1
    # shellcheck disable=SC2086
    if ! PROX_MU=$("$PYTHON" -m feddm_hpc.evaluation.study_report "$OUT" --best-prox shards --seeds $SEEDS \
            --mus $PROX_MUS 2> "$RUNS/logs/prox-choice.log"); then
        log "prox-iid: no mu chosen, skipped: $(tail -n 1 "$RUNS/logs/prox-choice.log")"
        PROX_MU=none; return 1
    fi
    { echo "$PROX_MU"; echo "# best FedProx mu on shards over seeds $SEEDS ($(date '+%F %T')): $(tail -n 1 "$RUNS/logs/prox-choice.log")"; } > "$OUT/prox_mu.txt"
    log "prox-iid: mu $PROX_MU, the lowest mean final FD on shards ($(tail -n 1 "$RUNS/logs/prox-choice.log"))"
}
submit_prox_iid() {  # SEED
    local name
    name=$(run_name prox iid "$1")
    wanted "$name" || return 0
    [ -n "${PID[$name]:-}" ] && return 0
    if ! is_done "$name" && [ -z "$PROX_MU" ]; then choose_prox_mu || true; fi
    if [ "$PROX_MU" = none ] && ! is_done "$name"; then UNREADY+=("$name"); return 0; fi
    submit_cell prox iid "$1"
}

t_study=$(date +%s)
first=1
log "study: $(echo "$SEEDS" | wc -w) seed(s) x $((${#SWEEP[@]} + ${#OTHERS[@]} + 2)) cells, $JOBS at once, $THREADS thread(s) each; runs in $RUNS, results in $OUT"
for seed in $SEEDS; do
    [ $STOPPING = 1 ] && break
    for c in "${SWEEP[@]}" "${OTHERS[@]}"; do
        # shellcheck disable=SC2086
        submit_cell $c "$seed"
    done
    submit_cell central - "$seed"
    if [ $first = 1 ]; then   # the sweep's other seeds, before prox-iid's first
        for s in $SEEDS; do for c in "${SWEEP[@]}"; do
            # shellcheck disable=SC2086
            submit_cell $c "$s"
        done; done
        first=0
    fi
    submit_prox_iid "$seed"
done
pool_finish

if compgen -G "$OUT/runs/*/DONE" > /dev/null; then
    echo "python -m feddm_hpc.evaluation.study_report $OUT" >> "$OUT/COMMAND.txt"
    "$PYTHON" -m feddm_hpc.evaluation.study_report "$OUT" || failed+=("the report")
fi
wall=$(($(date +%s) - t_study))
log "study finished in $((wall / 60)) min $((wall % 60)) s: $((${#STARTED[@]} - ${#failed[@]} - ${#stopped[@]})) run(s) done now, ${#SKIPPED[@]} already complete, $(compgen -G "$OUT/runs/*/DONE" | wc -l) in $OUT/runs"
[ ${#UNREADY[@]} -gt 0 ] && log "not started (no prox mu chosen): ${UNREADY[*]}"
[ ${#stopped[@]} -gt 0 ] && log "stopped: ${stopped[*]}"
[ ${#failed[@]} -gt 0 ] && log "failed or rejected: ${failed[*]}"
if [ ${#failed[@]} -gt 0 ] || [ ${#UNREADY[@]} -gt 0 ]; then exit 1; fi
if [ $STOPPING = 1 ] || [ ${#stopped[@]} -gt 0 ]; then exit 3; fi
exit 0
