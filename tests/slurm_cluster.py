"""A real one-node Slurm cluster for the tests, in a scratch folder (used by tests/test_slurm.py).

Debian's `slurmctld`, `slurmd` and `slurm-client` (Slurm 22.05) run on localhost without munge
(`AuthType=auth/none`, `CredType=cred/none`); `SlurmdParameters=config_overrides` lets the node
declare more CPUs than the machine has. Both daemons run in the foreground (`-D`) as children of
the test process, so they are stopped by pid whatever happens. Every path (state, spool, logs,
pids) lies in the scratch folder and the ports are free ones picked at start, so nothing touches
/etc/slurm or another cluster on the same machine. Client commands need `SLURM_CONF`: use `env`.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

PACKAGES = ["slurmctld", "slurmd", "slurm-client"]
COMMANDS = ["slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel"]
SBIN_DIRS = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class SlurmUnavailable(Exception):
    """Slurm is missing and cannot be installed here (not root, or no apt-get): tests skip."""


def _which(cmd: str) -> Optional[str]:
    return shutil.which(cmd, path=os.pathsep.join([os.environ.get("PATH", "")] + SBIN_DIRS))


def ensure_installed(timeout: float = 600) -> None:
    """Installs the Debian packages when a command is missing. Raises SlurmUnavailable where the
    cluster cannot run (not root, or Slurm missing and no apt-get) and RuntimeError where the
    install should have worked but failed."""
    if os.geteuid() != 0:  # slurmd launches jobs as root; so does apt-get
        raise SlurmUnavailable("the one-node test cluster needs root (slurmd runs as root, "
                               f"apt-get installs {' '.join(PACKAGES)})")
    missing = [c for c in COMMANDS if _which(c) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"Slurm commands {missing} are missing and there is no apt-get to "
                               f"install {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # wait for dpkg's lock rather than fail at once: on a freshly booted VM apt's daily timer
    # or another installer may hold it for a while
    lock = ["-o", f"DPkg::Lock::Timeout={int(timeout / 2)}"]
    cmd = ["apt-get", *lock, "install", "-y", "-q", *PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:  # a stale package index is the usual cause: refresh once and retry
        subprocess.run(["apt-get", *lock, "update", "-q"], capture_output=True, env=env,
                       timeout=timeout)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    still = [c for c in COMMANDS if _which(c) is None]
    if proc.returncode != 0 or still:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}; missing {still}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF_TEMPLATE = """\
# One-node test cluster written by tests/slurm_cluster.py
ClusterName=feddmtest
FirstJobId={first_job_id}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=pmi2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """Start with `start()`, always end with `stop()` (it is safe to call after a failed start)."""

    def __init__(self, root: Path, cpus: int = 4):
        self.root = Path(root)
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]  # == `hostname -s`; slurmd checks it
        self.conf = self.root / "slurm.conf"
        self.procs: Dict[str, subprocess.Popen] = {}
        self._outs: list = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if key != "SLURM_CONF":  # a surrounding job's settings must not leak into ours
                del self.env[key]

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> None:
        for sub in ("state", "spool", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONF_TEMPLATE.format(
            host=self.host, root=self.root, cpus=self.cpus,
            ctld_port=_free_port(), slurmd_port=_free_port(),
            # MPICH under srun names its shared-memory segment after the job: a cluster whose ids
            # restart at 1 collides with /dev/shm/mpich_shm_* files a killed job of an earlier
            # cluster left behind, and every rank fails MPI_Init with "Out of memory" (measured).
            first_job_id=random.SystemRandom().randrange(1000, 60_000_000)))
        for daemon, extra in (("slurmctld", ["-c", "-i"]), ("slurmd", [])):
            out = open(self.root / f"{daemon}.stdout", "wb")
            self._outs.append(out)
            self.procs[daemon] = subprocess.Popen(
                [_which(daemon), "-D", "-f", str(self.conf), *extra], stdout=out, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} at start:\n{self.logs(name)}")
            state = self.run(["sinfo", "-h", "-n", self.host, "-o", "%T"], check=False).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"node {self.host} not idle after {timeout}s (sinfo: {state!r})\n"
                           f"{self.logs('slurmctld')}\n{self.logs('slurmd')}")

    def stop(self) -> None:
        """Cancels every job, stops both daemons by pid and kills what the jobs left behind."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--user", "root", "--full"], check=False, timeout=15)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and self.run(
                        ["squeue", "-h", "-o", "%i"], check=False, timeout=10).stdout.strip():
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in ("slurmd", "slurmctld"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._kill_leftover_steps()
        for out in self._outs:
            out.close()

    def _kill_leftover_steps(self) -> None:
        """slurmstepd detaches from slurmd; ours hold sockets in our spool folder (and their tasks
        run in our jobs folder): find them through /proc and kill them by pid."""
        marks = (str(self.root / "spool"), str(self.root / "jobs"))
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                cwd = os.readlink(entry / "cwd")
                links = [cwd] + [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            except OSError:
                continue
            if any(link.startswith(marks) for link in links):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass

    def logs(self, name: str, tail: int = 3000) -> str:
        text = ""
        for path in (self.root / f"{name}.log", self.root / f"{name}.stdout"):
            if path.exists():
                text += f"--- {path}\n" + path.read_text(errors="replace")[-tail:]
        return text

    # ------------------------------------------------------------------ clients

    def run(self, args: List[str], check: bool = True, timeout: float = 30, env_extra=None,
            cwd=None) -> subprocess.CompletedProcess:
        env = dict(self.env, **(env_extra or {}))
        proc = subprocess.run([_which(args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=cwd)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, args: List[str], env_extra=None, timeout: float = 60, cwd=None) -> str:
        """Submits (--parsable) and returns the job id; `--wait` in args blocks until the end."""
        proc = self.run(["sbatch", "--parsable", *args], check=False, timeout=timeout,
                        env_extra=env_extra, cwd=cwd)
        if "--wait" not in args and proc.returncode != 0:
            raise RuntimeError(f"sbatch failed: {proc.stderr}")
        self.last_sbatch = proc
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Dict[str, str]:
        """`scontrol show job` as a dict (first record; {} when slurmctld forgot the job)."""
        proc = self.run(["scontrol", "-o", "show", "job", job_id], check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        line = proc.stdout.strip().splitlines()[0]
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))

    def wait_done(self, job_id: str, timeout: float) -> Dict[str, str]:
        """Waits for the end of a job (polling scontrol: `sbatch --wait` polls far more slowly)."""
        return self.wait_state(job_id, DONE_STATES, timeout)

    def wait_state(self, job_id: str, states, timeout: float, poll: float = 0.3) -> Dict[str, str]:
        """Waits until the job's JobState is one of `states`; returns the job record."""
        deadline = time.monotonic() + timeout
        info: Dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout}s: {info}")
