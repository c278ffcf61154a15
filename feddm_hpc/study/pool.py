"""Running a study's runs: a local pool of N at once, or one run as a Slurm array task.

Each run is brought forward from the state its directory is in (runs.py): trained (or resumed),
then its wanted checkpoints evaluated, every step a `feddm-hpc` subprocess in its own session
(`mpiexec -n R python -m mpi4py -m feddm_hpc ...` for R > 1 ranks, `srun` in a Slurm task) with
its output in OUT/logs/<cell>-seed<k>.{train,eval}.log. SIGINT/SIGTERM/SIGUSR1 stop the study:
SIGUSR1 goes on to every running step, so training stops at its next round end with a checkpoint
(rerun the study to go on) and an evaluation is cut short (it is redone). The study keeps no
state of its own, so it runs as well under nohup and stops and resumes at any point.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from feddm_hpc.errors import UserError
from feddm_hpc.study import runs as R
from feddm_hpc.study.spec import Spec

EXIT_STOPPED = 3


def log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


RSS_MODULE = "feddm_hpc.scaling.rss"   # wraps each rank of a training step (measure_rss)


def default_jobs(spec: Spec) -> int:
    """The spec's `jobs`, else as many of its smallest runs as the cores hold."""
    return spec.jobs or max(1, cores() // min(c.cores for c in spec.cells))


def _rss(rss_dir: Optional[Path]) -> List[str]:
    return [sys.executable, "-m", RSS_MODULE, str(rss_dir), "--"] if rss_dir else []


def local_launcher(ranks: int, rss_dir: Optional[Path] = None) -> List[str]:
    """The command before `train ...`: python (1 rank) or mpiexec; each rank under the RSS
    wrapper when rss_dir is given."""
    if ranks == 1:
        return [*_rss(rss_dir), sys.executable, "-m", "feddm_hpc"]
    mpiexec = Path(sys.executable).parent / "mpiexec"
    found = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if found is None:
        raise UserError("ranks > 1 needs mpiexec (next to the Python interpreter or on PATH): "
                        "pip install mpich, or run with --slurm")
    return [found, "-n", str(ranks), *_rss(rss_dir), sys.executable, "-m", "mpi4py", "-m",
            "feddm_hpc"]


def srun_launcher(rss_dir: Optional[Path] = None) -> List[str]:
    return ["srun", f"--mpi={os.environ.get('SRUN_MPI', 'pmi2')}", *_rss(rss_dir), sys.executable,
            "-m", "mpi4py", "-m", "feddm_hpc"]


class Cores:
    """The pool's core budget: a run takes its ranks x threads; it starts while they fit, or
    when nothing else runs (a run larger than the machine runs alone)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._cv = threading.Condition()

    def take(self, n: int, stopping: threading.Event) -> None:
        with self._cv:
            while self.used and self.used + n > self.total and not stopping.is_set():
                self._cv.wait(0.2)
            self.used += n

    def give(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


def _tail(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines()
                 if x.strip() and not x.startswith("# 20")]   # not our own command lines
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Runner:
    """Steps as subprocesses; stop() passes SIGUSR1 to every running one."""

    def __init__(self, spec: Spec, out: Path, launcher: Optional[List[str]] = None,
                 srun: bool = False, echo: Callable = log):
        """launcher: one fixed command before `train ...` for every step (tests); else each
        run's own: srun (a Slurm task) or local_launcher(its cell's ranks)."""
        self.spec, self.out, self.fixed, self.srun, self.echo = spec, Path(out), launcher, srun, echo
        self.stopping = threading.Event()
        self._procs: set = set()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            for p in self._procs:
                try:
                    p.send_signal(signal.SIGUSR1)
                except ProcessLookupError:
                    pass

    def launcher(self, plan: R.RunPlan, train: bool) -> List[str]:
        if self.fixed is not None:
            return self.fixed
        rss = plan.run_dir / "rss" if train and self.spec.measure_rss else None
        return srun_launcher(rss) if self.srun else local_launcher(self.spec.cell(plan.cell).ranks, rss)

    def step(self, args: List[str], log_path: Path, launcher: List[str]) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out, self._lock:
            if self.stopping.is_set():
                return EXIT_STOPPED
            out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} feddm-hpc {' '.join(args)}\n")
            out.flush()
            proc = subprocess.Popen(launcher + args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def advance(self, plan: R.RunPlan, own: bool = False) -> str:
        """done | skipped | busy | stopped | failed | differs; `own`: the caller alone runs this
        run (a Slurm array task), so a marker left by an earlier attempt is no obstacle."""
        st = R.inspect_run(self.spec, plan)
        if st.state == "differs":
            self.echo(f"{plan.name}: config differs from the spec ({st.message}): delete "
                      f"{plan.run_dir} or use another --out")
            return "differs"
        if st.state == "done":
            self.echo(f"{plan.name}: complete, skipped")
            return "skipped"
        if st.running is not None and not own and st.running.get("pid") != os.getpid():
            self.echo(f"{plan.name}: being worked on by pid {st.running.get('pid')} on "
                      f"{st.running.get('host')}, skipped")
            return "busy"
        R.write_marker(plan.run_dir)
        try:
            return self._advance(plan, st)
        finally:
            R.remove_marker(plan.run_dir)

    def _advance(self, plan: R.RunPlan, st: R.RunState) -> str:
        logs = self.out / "logs" / f"{plan.cell}-seed{plan.seed}"
        t0 = time.time()
        if st.state in ("train", "resume"):
            if st.state == "train":
                self.echo(f"{plan.name}: training ({st.rounds} rounds)")
                args = R.train_args(self.spec, plan)
            else:
                self.echo(f"{plan.name}: resuming after round {st.rounds_done} of {st.rounds}")
                args = R.resume_args(plan)
            code = self.step(args, Path(f"{logs}.train.log"), self.launcher(plan, True))
            if code == EXIT_STOPPED or self.stopping.is_set():
                self.echo(f"{plan.name}: stopped (rerun the study to go on)")
                return "stopped"
            if code != 0:
                self.echo(f"{plan.name}: training FAILED (exit {code}): {_tail(Path(f'{logs}.train.log'))}")
                return "failed"
            st = R.inspect_run(self.spec, plan)
            if st.state not in ("evaluate", "done"):
                self.echo(f"{plan.name}: FAILED: training ended without its final round ({st.state})")
                return "failed"
        t1 = time.time()
        for r in st.to_evaluate:
            if not R.checkpoint_path(plan.run_dir, r).is_file():
                self.echo(f"{plan.name}: FAILED: no checkpoint of round {r + 1} to evaluate")
                return "failed"
            code = self.step(R.evaluate_args(self.spec, plan, r), Path(f"{logs}.eval.log"),
                             self.launcher(plan, False))
            if self.stopping.is_set():
                self.echo(f"{plan.name}: stopped during the evaluations (rerun the study to go on)")
                return "stopped"
            if code != 0 or not R.evaluated(self.spec, plan.run_dir, r):
                self.echo(f"{plan.name}: evaluation of round {r + 1} FAILED (exit {code}): "
                          f"{_tail(Path(f'{logs}.eval.log'))}")
                return "failed"
        self.echo(f"{plan.name}: complete in {time.time() - t0:.0f} s (train {t1 - t0:.0f} s, "
                  f"evaluate {time.time() - t1:.0f} s)")
        return "done"


def _check_configs(spec: Spec, plans: List[R.RunPlan]) -> List[R.RunState]:
    states = [R.inspect_run(spec, p) for p in plans]
    bad = [s for s in states if s.state == "differs"]
    if bad:
        raise UserError(f"{len(bad)} run director{'y' if len(bad) == 1 else 'ies'} hold another "
                        f"config than the spec's, e.g. {bad[0].plan.run_dir} ({bad[0].message}): "
                        f"delete them or choose another --out")
    return states


def _with_stop_signals(runner: Runner, body: Callable[[], None]) -> None:
    def handler(signum, frame):
        if not runner.stopping.is_set():
            log(f"got {signal.Signals(signum).name}: the running steps stop at their next round end")
        runner.stop()
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        body()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _shape(spec: Spec) -> str:
    shapes = {(c.ranks, c.threads) for c in spec.cells}
    if len(shapes) > 1:
        return "ranks and threads per cell"
    ranks, threads = shapes.pop()
    return f"{ranks} rank(s) x {threads or 'auto'} thread(s) each"


def run_pool(spec: Spec, out: Path, jobs: int, launcher: Optional[List[str]] = None) -> int:
    """Every run of the spec, at most `jobs` at once and within the cores (Cores: the machine's,
    or jobs x the smallest run's if more); exit 0 all done, 1 some failed, 3 stopped.
    `launcher`: one command before `train ...` for every step (default: each run's own)."""
    plans = R.plan_runs(spec, out)
    if launcher is None:   # fail before the first run if mpiexec is missing
        for ranks in {c.ranks for c in spec.cells}:
            local_launcher(ranks)
    states = _check_configs(spec, plans)
    counts = {k: sum(s.state == k for s in states) for k in ("done", "evaluate", "resume", "train")}
    log(f"study {spec.name}: {len(plans)} run(s) in {out / 'runs'} ({counts['done']} complete, "
        f"{counts['evaluate']} to evaluate, {counts['resume']} to resume, {counts['train']} to "
        f"train); {jobs} at once, {_shape(spec)}")
    for why in spec.skipped:
        log(f"grid combination skipped: {why}")
    runner = Runner(spec, out, launcher)
    budget = Cores(max(cores(), jobs * min(c.cores for c in spec.cells)))
    todo: queue.Queue = queue.Queue()
    for p in plans:
        todo.put(p)
    outcomes: dict = {}

    def worker():
        while not runner.stopping.is_set():
            try:
                plan = todo.get_nowait()
            except queue.Empty:
                return
            need = spec.cell(plan.cell).cores
            budget.take(need, runner.stopping)
            try:
                outcomes[plan.name] = runner.advance(plan)
            except Exception as exc:   # one run's surprise must not end the others
                log(f"{plan.name}: FAILED: {type(exc).__name__}: {exc}")
                outcomes[plan.name] = "failed"
            finally:
                budget.give(need)

    def body():
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    _with_stop_signals(runner, body)
    failed = sorted(n for n, o in outcomes.items() if o in ("failed", "differs"))
    stopped = runner.stopping.is_set() or any(o in ("stopped", "busy") for o in outcomes.values())
    done = sum(o in ("done", "skipped") for o in outcomes.values())
    log(f"study {spec.name}: {done} of {len(plans)} run(s) complete"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + ("; stopped or busy runs left: rerun to go on" if stopped and done < len(plans) else ""))
    if failed:
        return 1
    return EXIT_STOPPED if done < len(plans) else 0


def run_task(spec: Spec, out: Path, index: int) -> int:
    """One run (a Slurm array task): its steps under srun; exit as train's (3: stopped)."""
    plans = R.plan_runs(spec, out)
    if not 0 <= index < len(plans):
        raise UserError(f"--task {index}: the study has runs 0..{len(plans) - 1}")
    runner = Runner(spec, out, srun=bool(os.environ.get("SLURM_JOB_ID")))
    result = {}
    _with_stop_signals(runner, lambda: result.setdefault("o", runner.advance(plans[index], own=True)))
    return {"done": 0, "skipped": 0, "stopped": EXIT_STOPPED, "busy": EXIT_STOPPED,
            "differs": 2}.get(result.get("o", "stopped"), 1)
