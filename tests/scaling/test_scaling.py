"""Scaling studies, a kind of study (report: {kind: scaling}): the spec's grid and per-cell ranks
and their errors, the old scaling format's translation, the network model against hand-computed
times, the Slurm arrays per rank count, and a real study of 2 points (1 and 2 ranks under
mpiexec) interrupted, resumed and collected to CSV and plots."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from feddm_hpc.cli import main as cli_main
from feddm_hpc.cli.report import load_scaling_spec
from feddm_hpc.config import dump_yaml, load_config
from feddm_hpc.errors import ConfigError, UserError
from feddm_hpc.scaling import network as net
from feddm_hpc.scaling.collect import COLUMNS
from feddm_hpc.scaling.plots import FILES
from feddm_hpc.study import slurm
from feddm_hpc.study.runs import plan_runs
from feddm_hpc.study.spec import load_spec

from conftest import ROOT, TINY, cli_in_process, run_cli

NETWORK = {"uplink_mbps": {"median": 5, "sigma": 0.7}, "compute": "modelled",
           "include_server": False}


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_spec(**extra) -> dict:
    """A scaling study of configs/tiny.yaml: 1 and 2 ranks, 2 rounds."""
    spec = {"base": str(TINY), "seeds": [0], "threads": 1, "jobs": 1, "measure_rss": True,
            "set": {"federation.rounds": 2, "sampling.num_samples": 0, "client.local_steps": 2},
            "grid": {"ranks": [1, 2]}, "evaluate": {"at": "none"},
            "report": {"kind": "scaling", "warmup_rounds": 1, "network": NETWORK}}
    spec.update(extra)
    return {k: v for k, v in spec.items() if v is not None}   # None: leave the key out


# ---------------------------------------------------------------------------- the spec

def test_grid_expands_to_cells_with_their_ranks_and_skips_what_cannot_run(tmp_path):
    spec = load_spec(write_spec(tmp_path, study_spec(grid={
        "codec": {"f32": {}, "q4": {"compression.uplink": "quant", "compression.bits": 4}},
        "federation.num_clients": [2, 4], "federation.clients_per_round": [None, 3],
        "ranks": [1, 2, 4]})))
    runnable = [(n, p, r) for n in (2, 4) for p in (None, 3) for r in (1, 2, 4)
                if not (p is not None and p > n) and r <= n]
    assert len(spec.cells) == 2 * len(runnable)
    assert len(spec.skipped) == 2 * (12 - len(runnable))
    assert any("more ranks (4) than clients (2)" in s for s in spec.skipped)
    assert any("clients_per_round exceeds num_clients" in s for s in spec.skipped)
    cell = spec.cells[-1]
    assert (cell.name, cell.ranks, cell.threads) == ("q4-num_clients4-clients_per_round3-np4", 4, 1)
    assert dict(cell.axes)["codec"] == "q4"
    cfg = spec.config(cell, 0)
    assert (cfg.federation.rounds, cfg.federation.num_clients, cfg.federation.clients_per_round) == (2, 4, 3)
    assert (cfg.compression.uplink, cfg.compression.bits, cfg.system.threads) == ("quant", 4, 1)
    assert spec.cells[0].name == "f32-num_clients2-clients_per_roundnull-np1"


def test_cells_may_set_their_own_ranks_and_threads(tmp_path):
    spec = load_spec(write_spec(tmp_path, study_spec(grid=None, cells={
        "one": {}, "two": {"ranks": 2, "threads": 2}})))
    one, two = spec.cells
    assert (one.ranks, one.threads, two.ranks, two.threads) == (1, 1, 2, 2)
    assert spec.config(two, 0).system.threads == 2 and spec.config(one, 0).system.threads == 1
    assert [p.index for p in plan_runs(spec, tmp_path)] == [0, 1]


BAD = [
    ({"cells": {"a": {"ranks": 0}}, "grid": None}, "cells.a.ranks: must be >= 1"),
    ({"cells": {"a": {"ranks": "two"}}, "grid": None}, "cells.a.ranks: expected an integer"),
    ({"cells": {"a": {"ranks": 8}}, "grid": None}, "cells.a: ranks 8 exceed its federation.num_clients 4"),
    ({"cells": {"a": {"threads": 0}}, "grid": None}, "cells.a.threads: must be >= 1"),
    ({"grid": {"ranks": [1, "x"]}}, "grid.ranks[1]: expected an integer"),
    ({"grid": {"ranks": [8]}}, "grid: no cell can run"),
    ({"grid": {"codec": {"q": {"compression.bits": "many"}}}}, "grid (q): compression.bits"),
    ({"grid": {"codec": {"a b": {}}}}, "grid.codec.a b: an entry name is part of a cell name"),
    ({"grid": {"data.path": ["a/b"]}}, "grid.data.path[0]: value 'a/b' cannot be part of a cell name"),
    ({"grid": {"ranks": [1], "codec": {"x": {"ranks": 2}}}}, "grid.codec: sets ranks"),
    ({"jobs": 0}, "jobs: must be >= 1"),
    ({"measure_rss": "yes"}, "measure_rss: expected true or false"),
    ({"report": {"kind": "speed"}}, "report.kind: 'speed' is not one of fd, scaling"),
    ({"report": {"kind": "scaling", "warmup_rounds": 2}}, "report.warmup_rounds: must be below"),
    ({"report": {"kind": "scaling", "tables": []}}, "report.tables: unknown key"),
    ({"report": {"kind": "scaling", "network": {"uplink_mbps": {"median": -1}}}},
     "report.network.uplink_mbps.median: must be > 0"),
    ({"report": {"kind": "scaling", "network": {"compute": "guess"}}}, "report.network.compute"),
    ({"evaluate": {"at": "never"}}, "evaluate.at: 'never' is not one of final, all, none"),
]


@pytest.mark.parametrize("change, field", BAD, ids=[f.split(":")[0] for _, f in BAD])
def test_spec_errors_name_the_field(tmp_path, change, field):
    body = study_spec(**change)
    with pytest.raises(ConfigError) as exc:
        load_spec(write_spec(tmp_path, body))
    assert field in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("command", ["study", "scaling"])
def test_cli_reports_a_bad_spec_in_one_line_with_exit_2(tmp_path, command):
    path = write_spec(tmp_path, study_spec(cells={"a": {"ranks": -1}}, grid=None))
    out = subprocess.run([sys.executable, "-m", "feddm_hpc", command, str(path), "--status"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "cells.a.ranks: must be >= 1" in out.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "scaling").glob("*.yaml")))
def test_committed_scaling_specs_load(path):
    spec = load_spec(path)
    assert spec.report.kind == "scaling" and {c.ranks for c in spec.cells} == {1, 2}


# ---------------------------------------------------------------------------- the old format

OLD = {"rounds": 2, "set": {"system.threads": 1, "sampling.num_samples": 0},
       "grid": {"ranks": [1, 2], "num_clients": [4, 8],
                "codec": {"f32": {}, "q8": {"uplink": "quant", "bits": 8}}},
       "options": {"warmup_rounds": 1, "timeout_s": 60}, "slurm": {"cpus_per_task": 1}}


def test_old_scaling_specs_become_the_same_study(tmp_path):
    lines = []
    spec = load_scaling_spec(str(write_spec(tmp_path, {"base": str(TINY), **OLD})), lines.append)
    assert [c.name for c in spec.cells] == ["f32-num_clients4-np1", "f32-num_clients4-np2",
                                            "f32-num_clients8-np1", "f32-num_clients8-np2",
                                            "q8-num_clients4-np1", "q8-num_clients4-np2",
                                            "q8-num_clients8-np1", "q8-num_clients8-np2"]
    assert spec.report.kind == "scaling" and spec.report.warmup_rounds == 1
    assert spec.jobs == 1 and spec.measure_rss and spec.evaluate.at == "none"
    cfg = spec.config(spec.cells[-1], spec.cells[-1].seeds[0])
    assert (cfg.federation.rounds, cfg.federation.num_clients, cfg.compression.bits) == (2, 8, 8)
    assert cfg.seed == load_config(TINY).seed and spec.cells[-1].ranks == 2
    assert any("options.timeout_s: dropped" in x for x in lines)
    assert any("slurm.cpus_per_task: dropped" in x for x in lines)


@pytest.mark.parametrize("change, field", [
    ({"grid": {"ranks": [1], "cores": [2]}}, "grid.cores: unknown key"),
    ({"grid": {"num_clients": [4]}}, "grid.ranks: required"),
    ({"options": {"fast": True}}, "options.fast: unknown key"),
    ({"grid": {"ranks": [1], "codec": {"q": {"uplink": "zip"}}}}, "compression.uplink"),
])
def test_old_format_errors_name_the_field(tmp_path, change, field):
    with pytest.raises(ConfigError) as exc:
        load_scaling_spec(str(write_spec(tmp_path, {"base": str(TINY), **OLD, **change})))
    assert field in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------- network model

def constant_net(**kw) -> net.NetworkConfig:
    # 8 Mbit/s up = 1e6 B/s, 16 Mbit/s down = 2e6 B/s, 10 ms latency each way
    base = {"uplink_mbps": 8, "downlink_mbps": 16, "latency_ms": 10, "compute": "none",
            "include_server": False}
    return net.parse_network({**base, **kw})


def test_round_time_is_bytes_over_bandwidth_plus_latency_max_over_clients():
    cfg = constant_net()
    t = net.round_time(0, cfg, [3, 7], down_bytes={3: 2e6, 7: 2e6}, up_bytes={3: 1e6, 7: 3e6},
                       compute_s={3: 0.5, 7: 0.0})
    assert t.client_s[3] == pytest.approx(0.01 + 1.0 + 0.5 + 0.01 + 1.0)
    assert t.client_s[7] == pytest.approx(0.01 + 1.0 + 0.0 + 0.01 + 3.0)
    assert t.round_s == pytest.approx(4.02)
    cut = net.round_time(0, constant_net(deadline_s=3.0), [3, 7], {3: 2e6, 7: 2e6},
                         {3: 1e6, 7: 3e6}, {3: 0.5, 7: 0.0}, server_s=9.0)
    assert cut.round_s == pytest.approx(3.0) and cut.late == [7]   # include_server is off
    with_server = net.round_time(0, constant_net(include_server=True), [3], {3: 0}, {3: 0}, {3: 0}, 0.25)
    assert with_server.round_s == pytest.approx(0.02 + 0.25)


def test_links_are_lognormal_per_client_deterministic_and_seeded():
    cfg = net.parse_network({"uplink_mbps": {"median": 10, "sigma": 0.5}})
    a = [net.client_link(1, c, cfg) for c in range(3000)]
    assert [net.client_link(1, c, cfg) for c in (5, 17)] == [a[5], a[17]]    # same seed, same link
    assert net.client_link(2, 5, cfg) != a[5]                                 # another seed
    up = np.array([l.up_bps for l in a]) / 1e6
    assert np.median(up) == pytest.approx(10, rel=0.06)
    assert np.std(np.log(up)) == pytest.approx(0.5, rel=0.06)
    # a sigma of 0 elsewhere does not shift this draw: the four normals are always drawn
    other = net.parse_network({"uplink_mbps": {"median": 10, "sigma": 0.5}, "latency_ms": {"median": 5, "sigma": 1}})
    assert net.client_link(1, 5, other).up_bps == a[5].up_bps


def write_run(run_dir: Path, records, **overrides) -> None:
    run_dir.mkdir(parents=True)
    sets = [f"{k}={v}" for k, v in overrides.items()]
    (run_dir / "config.yaml").write_text(dump_yaml(load_config(TINY, sets)))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def record(r, up=None, uplink=4e6, down=8e6, clients=(0, 1, 2, 3), train_max=0.0):
    rec = {"round": r, "clients": list(clients), "arrived": list(clients), "stragglers": [],
           "uplink_bytes": uplink, "downlink_bytes": down, "client_train_s_max": train_max,
           "phases": {"decode": 0.1, "aggregate": 0.2}}
    if up is not None:
        rec["client_uplink_bytes"] = {str(c): b for c, b in up.items()}
    return rec


def test_simulate_run_on_a_run_directory(tmp_path):
    """Per-client bytes where logged, else uplink_bytes / clients; downlink / cohort per client."""
    write_run(tmp_path / "run", [record(0, up={0: 1e6, 1: 1e6, 2: 1e6, 3: 5e6}),
                                 record(1, uplink=8e6)])
    times = net.simulate_run(tmp_path / "run", {"uplink_mbps": 8, "downlink_mbps": 16,
                                                "latency_ms": 10, "compute": "none",
                                                "include_server": False})
    # round 0: down 2e6 B at 2e6 B/s = 1 s; slowest up 5e6 B at 1e6 B/s = 5 s; + 2 x 10 ms
    # round 1: no per-client bytes: 8e6 / 4 clients = 2e6 B each -> 2 s
    assert times == pytest.approx([6.02, 3.02])
    measured = net.simulate_run(tmp_path / "run", {"uplink_mbps": 8, "downlink_mbps": 16,
                                                   "latency_ms": 10, "compute": "measured"})
    assert measured == pytest.approx([6.02 + 0.3, 3.02 + 0.3])   # + decode + aggregate, train 0


def test_modelled_compute_follows_the_participation_model(tmp_path):
    """compute: modelled = local_steps x federation.step_time_s (no stragglers configured)."""
    write_run(tmp_path / "run", [record(0, uplink=0, down=0)], **{"federation.step_time_s": 0.5})
    cfg = constant_net(compute="modelled", latency_ms=0.001)
    (t,) = net.simulate_run(tmp_path / "run", cfg)
    assert t == pytest.approx(3 * 0.5, abs=1e-4)   # tiny.yaml: 3 local steps


def test_large_cohorts_without_id_lists_are_rebuilt_from_the_config(tmp_path):
    """Over 64 clients metrics.jsonl logs counts, not ids: the cohort comes from the seed."""
    rec = {"round": 0, "clients": 70, "arrived": 70, "stragglers": 0, "uplink_bytes": 7e6,
           "downlink_bytes": 7e6, "client_uplink_bytes": None}
    write_run(tmp_path / "run", [rec], **{"federation.num_clients": 100,
                                          "federation.clients_per_round": 70, "client.batch_size": 8})
    run = net.RunModel(tmp_path / "run")
    timing = net.simulate_record(run, rec, constant_net())
    assert len(timing.client_s) == 70 and timing.per_client_bytes_estimated
    assert timing.round_s == pytest.approx(0.01 + 7e6 / 70 / 2e6 + 0.01 + 7e6 / 70 / 1e6)



# ---------------------------------------------------------------------------- Slurm

def test_slurm_submits_one_array_per_rank_count(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, study_spec(
        grid={"federation.num_clients": [4, 8], "ranks": [1, 2]},
        slurm={"sbatch_args": ["--time=00:10:00"], "max_parallel": 2})))
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)   # no sbatch on this machine
    with pytest.raises(UserError, match="sbatch: not found"):
        slurm.submit(spec, tmp_path / "out", echo=lambda *a: None)
    lines = (tmp_path / "out" / "slurm" / "submit.sh").read_text().splitlines()
    arrays = [x for x in lines if "sbatch " in x and not x.startswith("#")]
    assert len(arrays) == 2
    assert "--array=0,2%2" in arrays[0] and "--ntasks=1" in arrays[0]
    assert "--array=1,3%2" in arrays[1] and "--ntasks=2" in arrays[1]
    assert all("--time=00:10:00" in a and "study.sbatch" in a for a in arrays)


# ---------------------------------------------------------------------------- a real study

@pytest.fixture(scope="module")
def interrupted_study(tmp_path_factory):
    """configs/tiny.yaml at 1 and 2 ranks under a real mpiexec: stopped (SIGTERM) once the first
    run has a checkpoint, then run again to the end. 3 rounds, so the stop falls before the last
    round whatever the machine's speed (a stop in the last round just completes the run)."""
    tmp = tmp_path_factory.mktemp("scaling")
    body = study_spec()
    body["set"] = {**body["set"], "federation.rounds": 3, "checkpoint.keep_last": 3}
    path = write_spec(tmp, body)
    out = tmp / "out"
    cmd = ["scaling", str(path), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "feddm_hpc", *cmd], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "runs" / "np1" / "seed0" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(first.glob("round-*.h5")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stopped = (proc.communicate(timeout=240)[0], proc.returncode)
    status = cli_in_process([*cmd, "--status"])   # reads files: no process of its own needed
    again = run_cli(cmd, timeout=600)
    return path, out, stopped, status, again


@pytest.mark.mpi
def test_interrupted_scaling_study_resumes(interrupted_study):
    _, out, (log, code), status, again = interrupted_study
    assert code == 3 and "np1/seed0: stopped" in log, log
    assert "0 complete, 0 running, 2 to do" in status.stdout, status.stdout
    assert again.returncode == 0, again.stdout + again.stderr
    assert "np1/seed0: resuming after round" in again.stdout, again.stdout
    assert "np2/seed0: training (3 rounds)" in again.stdout, again.stdout
    steps = [x.split(" ")[4] for x in (out / "logs" / "np1-seed0.train.log").read_text().splitlines()
             if x.startswith("# 20")]   # the study's own command lines: one train, one resume
    assert steps == ["train", "resume"], steps


@pytest.mark.mpi
def test_scaling_study_writes_the_csv_table_and_plots(interrupted_study):
    path, out, _, _, again = interrupted_study
    assert again.returncode == 0, again.stdout + again.stderr
    with open(out / "scaling.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [(r["cell"], r["ranks"], r["status"]) for r in rows] == [("np1", "1", "ok"), ("np2", "2", "ok")]
    for r in rows:
        assert int(r["model_params"]) > 0 and r["rounds_measured"] == "2" and r["threads"] == "1"
        assert float(r["wall_s"]) > 0 and float(r["train_s"]) > 0 and float(r["client_updates_per_s"]) > 0
        assert float(r["peak_rss_mb"]) > 50
        phases = sum(float(r[f"{p}_s"]) for p in ("broadcast", "train", "encode", "wait", "gather", "decode",
                                                  "aggregate", "checkpoint", "other"))
        assert phases == pytest.approx(float(r["wall_s"]), rel=1e-3)
    # bytes and the network model's round time do not depend on the rank count
    assert rows[0]["uplink_bytes"] == rows[1]["uplink_bytes"]
    net0, net1 = float(rows[0]["net_round_s"]), float(rows[1]["net_round_s"])
    assert net0 == net1 and net0 > 0
    for name in FILES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "runs" / "np2" / "seed0" / "rss").glob("rank-*.json"))) == 2
    table = (out / "table.md").read_text()
    assert "| np2 | 0 | 2 | 1 |" in table and "strong_scaling.png" in table
    # --collect alone rebuilds them from the run directories
    (out / "scaling.csv").unlink()
    assert cli_main(["study", str(path), "--out", str(out), "--collect"]) == 0
    assert len((out / "scaling.csv").read_text().splitlines()) == 3
    assert json.loads((out / "scaling.json").read_text())[1]["ranks"] == 2


def test_sweep_sbatch_still_runs_a_line_of_its_sweep_file(tmp_path):
    """jobs/slurm/sweep.sbatch (kept for users' own sweeps) with a stand-in `srun`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "srun"
    fake.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {tmp_path / 'srun-args.txt'}\n")
    fake.chmod(0o755)
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# a comment\n--set federation.num_clients=4\n--set federation.num_clients=8\n")
    import os
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "CONFIG": str(TINY),
           "SWEEP_FILE": str(sweep), "RUN_ROOT": str(tmp_path / "runs"),
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "78"}
    res = subprocess.run(["bash", str(ROOT / "jobs" / "slurm" / "sweep.sbatch")], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "srun-args.txt").read_text().splitlines()
    i = args.index("train")
    assert args[i + 1:i + 4] == [str(TINY), "--run-dir", str(tmp_path / "runs" / "task-1")]
    assert "federation.num_clients=8" in args
