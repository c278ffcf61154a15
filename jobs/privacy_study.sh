#!/bin/bash
# The privacy and robustness study on MNIST (issue 10 item 5): what a client-level DP budget
# costs in sample quality and what it does to memorization, and how the robust rules fare
# against one attacked client of ten. Every run is evaluated at its last round (FD/KID and the
# memorization audit, N samples), then `python -m feddm_hpc.evaluation.privacy_report OUT`
# writes results/privacy/ (table.md, fd_vs_epsilon.png, summary.json; COMMAND.txt, study.log).
#
#   jobs/privacy_study.sh                    # foreground
#   jobs/privacy_study.sh --background       # detached; log in $OUT/study.log
#   ONLY='^dp' jobs/privacy_study.sh         # a subset (regex on run names)
#   BASE=configs/tiny.yaml EXTRA='--set federation.rounds=1' RUNS=/tmp/p OUT=/tmp/p/out N=16 \
#     SEEDS=0 ROBUST_SEEDS=0 jobs/privacy_study.sh   # a quick dry run
#
# Cells (on top of BASE, default configs/privacy/base.yaml: 20 clients, 5 sampled per round):
#   nodp            no clipping, no noise
#   clip            privacy.clip_norm=$CLIP, no noise (what clipping alone costs)
#   dp-z<Z>         clip_norm $CLIP and noise_multiplier Z for Z in $ZS; epsilon at delta 1e-5
#                   comes from the metrics (feddm-hpc privacy BASE --set ... prints it upfront)
#   <rule>-clean, <rule>-attacked   server.aggregation=<rule> for mean, median, trimmed_mean,
#                   krum with all 10 of 10 clients per round and $ROBUST_STEPS local steps (the
#                   same client steps per round as the DP cells); attacked: client 3 sends its
#                   update scaled by $ATTACK_SCALE (attack.kind=scaled), clean: no attack
# Runs are named <cell>-s<seed>: the DP cells with SEEDS, the robust ones with ROBUST_SEEDS.
# Order: seed by seed, the robust cells last. Resumable and stoppable like jobs/feddm_study.sh
# (the run pool is jobs/lib/study_pool.sh): rerun it to go on; complete copies are skipped.
#
# Variables (besides those of jobs/feddm_study.sh: BASE RUNS OUT SEEDS N JOBS THREADS ONLY
# EXTRA PYTHON): CLIP (default 1.0), ZS (default "0.01 0.1 1"), ROBUST_SEEDS (default 0),
# ROBUST_STEPS (default 50), ATTACK_SCALE (default 100).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
BASE=${BASE:-configs/privacy/base.yaml}
RUNS=${RUNS:-runs/privacy_study}
OUT=${OUT:-results/privacy}
SEEDS=${SEEDS:-0 1 2}
ROBUST_SEEDS=${ROBUST_SEEDS:-0}
N=${N:-1000}
EVAL_ROUNDS=final
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
CLIP=${CLIP:-1.0}
ZS=${ZS:-0.01 0.1 1}
ATTACK_SCALE=${ATTACK_SCALE:-100}
ROBUST_STEPS=${ROBUST_STEPS:-50}
ONLY=${ONLY:-}
EXTRA=${EXTRA:-}
source "$here/jobs/lib/study_pool.sh"
detach_if_asked "$0" "$@"

cell_sets() {
    case $1 in
        nodp)      echo "" ;;
        clip)      echo "--set privacy.clip_norm=$CLIP" ;;
        dp-z*)     echo "--set privacy.clip_norm=$CLIP --set privacy.noise_multiplier=${1#dp-z}" ;;
        *-clean|*-attacked)
            local rule=${1%-*} sets="--set federation.num_clients=10 --set federation.clients_per_round=null"
            sets="$sets --set client.local_steps=$ROBUST_STEPS"
            sets="$sets --set server.aggregation=$rule"
            [ "${1##*-}" = attacked ] && sets="$sets --set attack.kind=scaled --set attack.clients=[3] --set attack.scale=$ATTACK_SCALE"
            echo "$sets" ;;
        *)         echo "unknown cell $1" >&2; return 1 ;;
    esac
}
DP_CELLS=(nodp clip)
for z in $ZS; do DP_CELLS+=("dp-z$z"); done
ROBUST_CELLS=()
for rule in mean median trimmed_mean krum; do ROBUST_CELLS+=("$rule-clean" "$rule-attacked"); done

mkdir -p "$RUNS/logs" "$OUT/runs"
{
    echo "# $(date '+%F %T') on $(hostname), git $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "BASE=$BASE RUNS=$RUNS OUT=$OUT SEEDS='$SEEDS' ROBUST_SEEDS='$ROBUST_SEEDS' N=$N JOBS=$JOBS THREADS=$THREADS CLIP=$CLIP ZS='$ZS' ATTACK_SCALE=$ATTACK_SCALE ROBUST_STEPS=$ROBUST_STEPS ONLY='$ONLY' EXTRA='$EXTRA' $0 $*"
    echo "# per run: train (or resume RUN_DIR), then evaluate the last checkpoint; then: python -m feddm_hpc.evaluation.privacy_report $OUT"
} > "$OUT/COMMAND.txt"

t_study=$(date +%s)
log "study: DP cells ${DP_CELLS[*]} x seeds $SEEDS, robust cells x seeds $ROBUST_SEEDS; $JOBS at once; runs in $RUNS, results in $OUT"
for seed in $SEEDS; do
    for c in "${DP_CELLS[@]}"; do submit "$c-s$seed" "$(cell_sets "$c") --set seed=$seed"; done
done
for seed in $ROBUST_SEEDS; do
    for c in "${ROBUST_CELLS[@]}"; do submit "$c-s$seed" "$(cell_sets "$c") --set seed=$seed"; done
done
pool_finish

if compgen -G "$OUT/runs/*/DONE" > /dev/null; then
    echo "python -m feddm_hpc.evaluation.privacy_report $OUT" >> "$OUT/COMMAND.txt"
    "$PYTHON" -m feddm_hpc.evaluation.privacy_report "$OUT" || failed+=("the report")
fi
wall=$(($(date +%s) - t_study))
log "study finished in $((wall / 60)) min $((wall % 60)) s: $((${#STARTED[@]} - ${#failed[@]} - ${#stopped[@]})) run(s) done now, ${#SKIPPED[@]} already complete, $(compgen -G "$OUT/runs/*/DONE" | wc -l) in $OUT/runs"
[ ${#stopped[@]} -gt 0 ] && log "stopped: ${stopped[*]}"
if [ ${#failed[@]} -gt 0 ]; then log "FAILED: ${failed[*]}"; exit 1; fi
[ ${#stopped[@]} -gt 0 ] && exit 3
exit 0
