# The run pool shared by the multi-seed studies (jobs/feddm_study.sh, jobs/privacy_study.sh):
# train (or resume) one run, evaluate its kept checkpoints, copy its small outputs to
# $OUT/runs/NAME/ with DONE last; at most $JOBS runs at once; stop on INT/TERM at the next round
# end; rerunning skips complete copies. Sourced, not run: the caller sets BASE RUNS OUT N
# EVAL_ROUNDS JOBS THREADS ONLY EXTRA (PYTHON defaults to the repo's .venv), calls
# `detach_if_asked "$0" "$@"`, writes $OUT/COMMAND.txt's header, then calls
# `submit NAME SETS` per run and `pool_finish` at the end (it fills the arrays failed and stopped).

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi

detach_if_asked() {  # SCRIPT ARGS...: with --background, run SCRIPT detached and exit
    [ "${2:-}" = "--background" ] || return 0
    mkdir -p "$OUT"
    local detach=(nohup)
    command -v setsid > /dev/null && detach=(setsid nohup)
    "${detach[@]}" "$1" > "$OUT/study.log" 2>&1 < /dev/null &
    echo "started in the background: pid $!, log $OUT/study.log (stop it with: kill $!)"
    exit 0
}

feddm() { "$PYTHON" -m feddm_hpc "$@"; }
log() { echo "[$(date '+%F %T')] $*"; }

# ---------------------------------------------------------------------------- one run
# In the background: train (or resume), evaluate, copy; the outcome goes to $RUNS/logs/NAME.status
# (ok | rejected | failed | stopped) and one log line.
run_one() {  # NAME SETS
    local name=$1 sets=$2
    local dir=$RUNS/$name dest=$OUT/runs/$name st=$RUNS/logs/$name.status
    local stop=0 t0 t1 t2 rounds final code ckpt eval_json ok=1
    trap 'stop=1' TERM   # the python process got it too; we stop after it
    t0=$(date +%s)
    # shellcheck disable=SC2206  # the sets and EXTRA are meant to split into arguments
    local args=($sets $EXTRA --set "system.threads=$THREADS" --set system.progress=false)
    if ! rounds=$("$PYTHON" -c 'import sys
from feddm_hpc.config import load_config
from feddm_hpc.errors import UserError
try:
    print(load_config(sys.argv[1], [a for a in sys.argv[2:] if a != "--set"]).federation.rounds)
except UserError as exc:
    sys.exit(f"error: {exc}")' "$BASE" "${args[@]}" 2> "$RUNS/logs/$name.config.err"); then
        log "$name: config rejected, skipped: $(tail -n 1 "$RUNS/logs/$name.config.err")"
        echo rejected > "$st"; return 0
    fi
    final=$dir/checkpoints/$(printf 'round-%06d.h5' $((rounds - 1)))
    code=0
    if [ -f "$final" ]; then
        log "$name: final checkpoint exists, training skipped"
    elif compgen -G "$dir/checkpoints/round-*.h5" > /dev/null; then
        log "$name: resuming"
        feddm resume "$dir" >> "$RUNS/logs/$name.train.log" 2>&1 || code=$?
    else
        log "$name: training ($rounds rounds)"
        feddm train "$BASE" --run-dir "$dir" "${args[@]}" > "$RUNS/logs/$name.train.log" 2>&1 || code=$?
    fi
    if [ $code = 3 ] || [ $stop = 1 ]; then
        log "$name: stopped after a checkpoint (run the study again to go on)"
        echo stopped > "$st"; return 0
    elif [ $code = 2 ]; then   # a user error at start-up: the data cannot make this partition, ...
        log "$name: config rejected at start-up, skipped: $(tail -n 1 "$RUNS/logs/$name.train.log")"
        echo rejected > "$st"; return 0
    elif [ $code != 0 ]; then
        log "$name: training FAILED (exit $code): $(tail -n 1 "$RUNS/logs/$name.train.log")"
        echo failed > "$st"; return 0
    fi
    t1=$(date +%s)
    local ckpts=("$final")
    [ "$EVAL_ROUNDS" = final ] || ckpts=("$dir"/checkpoints/round-*.h5)
    for ckpt in "${ckpts[@]}"; do
        eval_json=$dir/eval/$(basename "${ckpt%.h5}").json
        if [ -f "$eval_json" ] && grep -q "\"num_samples\": $N," "$eval_json"; then
            continue   # already evaluated at this N
        fi
        [ $stop = 1 ] && break
        if ! feddm evaluate "$ckpt" --num-samples "$N" --set "system.threads=$THREADS" \
                > /dev/null 2>> "$RUNS/logs/$name.eval.log"; then
            [ $stop = 1 ] && break
            log "$name: evaluation of $(basename "$ckpt") FAILED: $(tail -n 1 "$RUNS/logs/$name.eval.log")"
            ok=0
        fi
    done
    if [ $stop = 1 ]; then
        log "$name: stopped during the evaluations (run the study again to go on)"
        echo stopped > "$st"; return 0
    fi
    if [ $ok = 0 ]; then echo failed > "$st"; return 0; fi
    t2=$(date +%s)
    # The copy: small files only; DONE last, so a copy with DONE is complete.
    rm -rf "$dest"
    mkdir -p "$dest/eval"
    cp "$dir/config.yaml" "$dir/metrics.jsonl" "$dest/"
    [ -f "$dir/partition.json" ] && cp "$dir/partition.json" "$dest/"
    grep -l "\"num_samples\": $N," "$dir"/eval/round-*.json | xargs -r cp -t "$dest/eval/"
    local grid
    grid=$dir/samples/$(printf 'round-%06d.png' $((rounds - 1)))
    if [ -f "$grid" ]; then mkdir -p "$dest/samples" && cp "$grid" "$dest/samples/"; fi
    printf 'N=%s\ntrain_s=%s\neval_s=%s\nfinished=%s\n' "$N" $((t1 - t0)) $((t2 - t1)) \
        "$(date '+%F %T')" > "$dest/DONE"
    log "$name: complete in $((t2 - t0)) s (train $((t1 - t0)) s, evaluate $((t2 - t1)) s)"
    echo ok > "$st"
}

declare -gA PID=()           # run name -> pid of its job (this invocation)
STARTED=() SKIPPED=() UNREADY=()
STOPPING=0
stop_all() {
    STOPPING=1
    log "stop requested: the running runs stop at their next round end"
    local pid
    for pid in $(jobs -rp); do kill -TERM -- "-$pid" 2> /dev/null || true; done
}
trap stop_all INT TERM

wanted() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }
is_done() { [ -f "$OUT/runs/$1/DONE" ]; }

submit() {  # NAME SETS: start it in the pool (or skip it)
    local name=$1 sets=$2
    [ -n "${PID[$name]:-}" ] && return 0
    wanted "$name" || return 0
    if is_done "$name"; then
        local n_done
        n_done=$(sed -n 's/^N=//p' "$OUT/runs/$name/DONE")
        if [ "$n_done" = "$N" ]; then
            log "$name: complete in $OUT/runs/$name, skipped"
        else
            log "$name: complete at N=$n_done in $OUT/runs/$name, not N=$N: skipped (delete it to redo)"
        fi
        SKIPPED+=("$name"); PID[$name]=done; return 0
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n 2> /dev/null || true; done
    [ $STOPPING = 1 ] && return 0
    echo "feddm-hpc train $BASE --run-dir $RUNS/$name $sets $EXTRA --set system.threads=$THREADS --set system.progress=false" >> "$OUT/COMMAND.txt"
    echo "feddm-hpc evaluate $RUNS/$name/checkpoints/round-NNNNNN.h5 --num-samples $N --set system.threads=$THREADS   # each kept checkpoint ($EVAL_ROUNDS)" >> "$OUT/COMMAND.txt"
    rm -f "$RUNS/logs/$name.status"
    set -m   # its own process group, so a stop reaches the job and its python process together
    run_one "$name" "$sets" &
    PID[$name]=$!
    set +m
    STARTED+=("$name")
}

pool_finish() {  # wait for every run, then collect the outcomes of those started here
    while [ -n "$(jobs -rp)" ]; do wait -n 2> /dev/null || true; done
    failed=() stopped=()
    for name in "${STARTED[@]}"; do
        st=$(cat "$RUNS/logs/$name.status" 2> /dev/null || true)
        [ -n "$st" ] || { if [ $STOPPING = 1 ]; then st=stopped; else st="failed, no status: see $RUNS/logs/$name.*"; fi; }
        case $st in
            ok) ;;
            stopped) stopped+=("$name") ;;
            *) failed+=("$name ($st)") ;;
        esac
    done
}
