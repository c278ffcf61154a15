#!/bin/bash
# feddm_hpc on a workstation: NP MPI ranks with mpiexec (the pip MPICH wheel or any MPI).
#
#   jobs/mpiexec/train.sh                                   # configs/tiny.yaml on 2 ranks
#   NP=4 CONFIG=configs/quickstart.yaml RUN_DIR=runs/qs jobs/mpiexec/train.sh
#   jobs/mpiexec/train.sh --set federation.rounds=20        # arguments go to `feddm-hpc train`
#
# Variables:
#   NP       number of ranks                      (default 2; at most federation.num_clients)
#   CONFIG   config file                          (default configs/tiny.yaml)
#   RUN_DIR  output folder                        (default runs/<config name>; must not hold
#            checkpoints yet: continue a stopped run with `feddm-hpc resume RUN_DIR`)
#   PYTHON   interpreter with feddm_hpc + mpi4py  (default .venv/bin/python when present, else python3)
#   MPIEXEC  launcher                             (default the mpiexec next to PYTHON, else on PATH)
#   EXTRA    more train arguments, split on spaces (as in the SLURM scripts)
#
# One compute thread per core: each rank takes cores / ranks threads unless system.threads or
# OMP_NUM_THREADS says otherwise. Ctrl-C ends all ranks. `kill -USR1 <pid of this script>`
# (it execs mpiexec, which passes USR1 on to the ranks) stops after the current round with a
# checkpoint and exit code 3. Exit codes: 0 done, 1 internal error, 2 bad input, 3 stopped.
set -euf
here=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${MPIEXEC:-}" ]; then
    MPIEXEC=$(dirname "$(command -v "$PYTHON")")/mpiexec
    [ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
fi
NP=${NP:-2}
CONFIG=${CONFIG:-configs/tiny.yaml}
RUN_DIR=${RUN_DIR:-runs/$(basename "${CONFIG%.*}")}
EXTRA=${EXTRA:-}

# shellcheck disable=SC2086  # EXTRA is meant to split into arguments
exec "$MPIEXEC" -n "$NP" "$PYTHON" -m mpi4py -m feddm_hpc train "$CONFIG" --run-dir "$RUN_DIR" $EXTRA "$@"
