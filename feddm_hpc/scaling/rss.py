"""Peak RSS of one MPI rank: `mpiexec -n R python -m feddm_hpc.scaling.rss DIR -- CMD ...`.

Each rank's wrapper runs CMD (the real rank: it inherits the launcher's PMI environment, so it
joins MPI as if started directly), waits for it with wait4, and writes DIR/rank-<N>.json with
the child's own ru_maxrss, wall seconds and exit status (a resumed run adds to the record of its
earlier part: the larger peak, the summed seconds). The wrapper imports nothing heavy and
never touches MPI. Signals it receives are passed on; if the wrapper itself is killed, the
kernel kills the child too (PR_SET_PDEATHSIG), so an aborted job leaves no stray rank behind.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def rank_from_env(env=None) -> int:
    env = os.environ if env is None else env
    for key in RANK_VARS:
        if env.get(key, "").isdigit():
            return int(env[key])
    return 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def run_measured(cmd, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # close_fds=False: the rank talks to the launcher over inherited descriptors (MPICH's PMI_FD).
    proc = subprocess.Popen(cmd, close_fds=False,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, lambda s, f: proc.send_signal(s))
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
    proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    rank = rank_from_env()
    path = out_dir / f"rank-{rank}.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = {}
    path.write_text(json.dumps({
        "rank": rank, "max_rss_kb": max(int(usage.ru_maxrss), int(before.get("max_rss_kb", 0))),
        "wall_s": round(time.perf_counter() - t0 + before.get("wall_s", 0.0), 3),
        "user_s": round(usage.ru_utime + before.get("user_s", 0.0), 3),
        "sys_s": round(usage.ru_stime + before.get("sys_s", 0.0), 3), "exit": code}))
    return code


def read_ranks(out_dir: Path) -> list:
    """The rank records of a point, sorted by rank ([] when none were written)."""
    out = []
    for path in sorted(Path(out_dir).glob("rank-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda d: d["rank"])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m feddm_hpc.scaling.rss OUT_DIR -- COMMAND ...", file=sys.stderr)
        return 2
    return run_measured(argv[2:], Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
