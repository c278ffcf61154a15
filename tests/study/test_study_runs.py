"""Where a run stands (train / resume / evaluate / done / differs), what the pool does about it
(with a stand-in for `feddm-hpc` that records its arguments), --status and --slurm."""
import json
import os
import sys

import pytest
from synthetic import FAKE, TWO_CELLS, load, make_run, write_spec

from feddm_hpc.config import dump_yaml
from feddm_hpc.errors import UserError
from feddm_hpc.study import pool, slurm
from feddm_hpc.study.runs import inspect_run, kept_rounds, plan_runs, write_marker
from feddm_hpc.study.status import status_text


@pytest.fixture
def spec(tmp_path):
    return load(write_spec(tmp_path, TWO_CELLS))


def _state(spec, out, cell="base", seed=0):
    plan = next(p for p in plan_runs(spec, out) if (p.cell, p.seed) == (cell, seed))
    return inspect_run(spec, plan)


def test_states_from_the_run_directory(spec, tmp_path):
    out = tmp_path / "out"
    assert _state(spec, out).state == "train"                      # nothing there
    make_run(spec, out, "base", 0, rounds_done=1, ckpts=[0])
    st = _state(spec, out)
    assert (st.state, st.rounds_done, st.rounds) == ("resume", 1, 2)
    make_run(spec, out, "base", 0, ckpts=[0, 1])
    st = _state(spec, out)
    assert (st.state, st.wanted, st.to_evaluate) == ("evaluate", (1,), (1,))
    make_run(spec, out, "base", 0, ckpts=[0, 1], evals={1: 5.0}, n=1000)   # another N
    assert _state(spec, out).state == "evaluate"
    make_run(spec, out, "base", 0, ckpts=[0, 1], evals={1: 5.0})
    assert _state(spec, out).state == "done"
    # A copy without checkpoints (metrics of every round, the evaluation) is complete too.
    make_run(spec, out, "q8", 1, evals={1: 5.0})
    assert _state(spec, out, "q8", 1).state == "done"
    # A crash before the first checkpoint: train again.
    make_run(spec, out, "q8", 2, rounds_done=1)
    assert _state(spec, out, "q8", 2).state == "train"


def test_config_differs_but_not_in_fields_the_run_predates(spec, tmp_path):
    out = tmp_path / "out"
    text = dump_yaml(spec.config(spec.cell("base"), 0))
    make_run(spec, out, "base", 0, evals={1: 5.0}, config_text=text.replace("rounds: 2", "rounds: 5"))
    st = _state(spec, out)
    assert st.state == "differs" and "federation.rounds is 5 there, 2 in the spec" in st.message
    with pytest.raises(UserError, match="another config than the spec's"):
        pool.run_pool(spec, out, 1, launcher=["false"])    # before any run starts
    older = "\n".join(x for x in text.splitlines() if "collective_timeout_s" not in x)
    threads = older.replace("threads: 0", "threads: 7")   # a runtime setting: not compared
    make_run(spec, out, "base", 0, evals={1: 5.0}, config_text=threads)
    assert _state(spec, out).state == "done"
    # Trained when extractor_epochs defaulted to 2 (now null: the extractor's own): the extractor
    # of evaluations does not change what was trained, and each evaluation JSON is checked alone.
    assert "extractor_epochs: null" in text
    earlier = text.replace("extractor_epochs: null", "extractor_epochs: 2")
    make_run(spec, out, "base", 0, evals={1: 5.0}, config_text=earlier)
    assert _state(spec, out).state == "done"


def test_kept_rounds_follow_the_checkpoint_settings(tmp_path):
    spec = load(write_spec(tmp_path, TWO_CELLS.replace(
        "federation.rounds: 2", "federation.rounds: 9, checkpoint.every: 3, checkpoint.keep_last: 2")))
    assert kept_rounds(spec.config(spec.cell("base"), 0)) == [5, 8]


@pytest.fixture
def fake(spec, tmp_path, monkeypatch):
    """The pool's launcher: the stand-in script; returns (launcher, recorded calls)."""
    script = tmp_path / "fake_feddm.py"
    script.write_text(FAKE)
    configs = {str(p.run_dir): dump_yaml(spec.config(spec.cell(p.cell), p.seed))
               for p in plan_runs(spec, tmp_path / "out")}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_CONFIGS", str(tmp_path / "configs.json"))
    monkeypatch.setenv("FAKE_ROUNDS", "2")

    def calls():
        got = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        log.write_text("")
        return [(c[0], c[1] if c[0] != "train" else c[c.index("--run-dir") + 1]) for c in got]
    return [sys.executable, str(script)], calls


@pytest.mark.slow   # ~24 stand-in subprocesses: 3-5 s on two shared cores
def test_pool_trains_evaluates_then_skips_and_resumes(spec, tmp_path, fake, capsys, monkeypatch):
    launcher, calls = fake
    out = tmp_path / "out"
    assert pool.run_pool(spec, out, 2, launcher=launcher) == 0
    got = calls()
    runs = [str(p.run_dir) for p in plan_runs(spec, out)]
    assert sorted(d for c, d in got if c == "train") == sorted(runs)
    assert sorted(c for c, _ in got) == ["evaluate"] * 6 + ["train"] * 6
    assert all(_state(spec, out, p.cell, p.seed).state == "done" for p in plan_runs(spec, out))
    assert "6 of 6 run(s) complete" in capsys.readouterr().out

    # Again: everything is skipped. Then one evaluation lost, one run stopped after round 1.
    assert pool.run_pool(spec, out, 2, launcher=launcher) == 0
    assert calls() == [] and capsys.readouterr().out.count("complete, skipped") == 6
    q8 = out / "runs" / "q8" / "seed1"
    (q8 / "eval" / "round-000001.json").unlink()
    base = out / "runs" / "base" / "seed2"
    make_run(spec, out, "base", 2, rounds_done=1, ckpts=[0])
    assert pool.run_pool(spec, out, 1, launcher=launcher) == 0
    assert sorted(calls()) == sorted([("evaluate", str(q8 / "checkpoints" / "round-000001.h5")),
                                      ("resume", str(base)),
                                      ("evaluate", str(base / "checkpoints" / "round-000001.h5"))])
    assert not (base / ".running").exists()


@pytest.mark.slow
def test_pool_stopped_runs_are_exit_3_and_the_rerun_resumes(spec, tmp_path, fake, monkeypatch,
                                                          capsys):
    launcher, calls = fake
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_STOP", "1")   # each train stops after one round (exit 3), as on USR1
    assert pool.run_pool(spec, out, 2, launcher=launcher) == 3
    assert capsys.readouterr().out.count("stopped (rerun the study to go on)") == 6
    assert [c for c, _ in calls()] == ["train"] * 6       # a stopped run does not stop the others
    monkeypatch.setenv("FAKE_STOP", "0")
    assert pool.run_pool(spec, out, 2, launcher=launcher) == 0
    assert sorted(c for c, _ in calls()) == ["evaluate"] * 6 + ["resume"] * 6


def test_status_counts_per_cell(spec, tmp_path):
    out = tmp_path / "out"
    make_run(spec, out, "base", 0, ckpts=[1], evals={1: 5.0})        # done
    make_run(spec, out, "base", 1, ckpts=[1])                         # to evaluate
    make_run(spec, out, "q8", 0, rounds_done=1, ckpts=[0])            # started
    make_run(spec, out, "q8", 1, rounds_done=1, ckpts=[0])
    write_marker(out / "runs" / "q8" / "seed1")                       # running (this pid)
    text = status_text(spec, out)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[3:6]}
    #        runs done running evaluate started missing differs rounds
    assert rows["base"] == ["3", "1", "0", "1", "0", "1", "0", "4/6"]
    assert rows["q8"] == ["3", "0", "1", "0", "1", "1", "0", "2/6"]
    assert rows["all"] == ["6", "1", "1", "1", "1", "2", "0", "6/12"]
    assert f"running: q8/seed1 (round 1 of 2; pid {os.getpid()}" in text
    assert "6 run(s)" in text.splitlines()[0] and "1 complete, 1 running, 4 to do" in text


def test_slurm_submits_an_array_of_the_runs_to_do(spec, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    make_run(spec, out, "base", 0, ckpts=[1], evals={1: 5.0})        # run 0 complete
    record = tmp_path / "sbatch.txt"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(f'#!/bin/bash\necho "$@ SPEC=$SPEC OUT=$OUT" > {record}\n'
                                   f'echo "Submitted batch job 4242"\n')
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert slurm.submit(spec, out) == 0
    args = record.read_text().split()
    assert "--array=1-5" in args and "--ntasks=1" in args and "--job-name=study-two" in args
    assert args[args.index(str(slurm.STUDY_SBATCH)) + 1:] == [f"SPEC={spec.path.resolve()}",
                                                              f"OUT={out.resolve()}"]
    assert "submitted job array 4242: 5 run(s)" in capsys.readouterr().out
    assert "#   3: base/seed1 (train)" not in (out / "slurm" / "submit.sh").read_text()
    assert "#   1: q8/seed0 (train)" in (out / "slurm" / "submit.sh").read_text()
    assert slurm.array_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
