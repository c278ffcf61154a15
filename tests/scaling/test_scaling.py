"""Scaling studies: SPEC parsing and its errors, the network model against hand-computed times,
a real 2-point grid (1 and 2 ranks under mpiexec) to CSV and plots, and the SLURM sweep files."""
from __future__ import annotations

import csv
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from feddm_hpc.cli import build_parser
from feddm_hpc.cli import main as cli_main
from feddm_hpc.config import dump_yaml, load_config
from feddm_hpc.errors import ConfigError
from feddm_hpc.scaling import network as net
from feddm_hpc.scaling.collect import COLUMNS
from feddm_hpc.scaling.plots import FILES
from feddm_hpc.scaling.spec import load_spec, render_value
from feddm_hpc.scaling.study import run_study

from conftest import ROOT, TINY

QUIET = lambda *a, **k: None  # noqa: E731


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def base_spec(**extra) -> dict:
    spec = {"base": str(TINY), "rounds": 2,
            "set": {"system.threads": 1, "sampling.num_samples": 0, "client.local_steps": 2},
            "grid": {"ranks": [1, 2]}}
    spec.update(extra)
    return spec


# ---------------------------------------------------------------------------- SPEC

def test_spec_expands_the_grid_and_skips_impossible_points(tmp_path):
    spec = load_spec(write_spec(tmp_path, base_spec(grid={
        "ranks": [1, 2, 4], "num_clients": [2, 4], "clients_per_round": [None, 3],
        "codec": {"f32": {}, "q4": {"uplink": "quant", "bits": 4}}, "model": ["tiny"]})))
    # 3 ranks x 2 clients x 2 cohorts x 2 codecs = 24; skipped: 4 ranks > 2 clients, cohort 3 > 2
    # clients, ranks 4 > 2 clients, ...
    runnable = [(r, n, p) for n in (2, 4) for p in (None, 3) for r in (1, 2, 4)
                if not (p is not None and p > n) and r <= n]
    assert len(spec.points) == 2 * len(runnable)
    assert spec.skipped and all("ranks" in s for s in spec.skipped)
    p = spec.points[-1]
    assert (p.ranks, p.num_clients, p.clients_per_round, p.codec, p.model) == (4, 4, 3, "q4", "tiny")
    cfg = load_config(TINY, list(p.overrides))
    assert (cfg.federation.rounds, cfg.federation.num_clients, cfg.federation.clients_per_round) == (2, 4, 3)
    assert (cfg.compression.uplink, cfg.compression.bits, cfg.system.threads) == ("quant", 4, 1)
    assert spec.resolved[p.name] == dump_yaml(cfg)
    assert [q.name for q in spec.points][:2] == ["point-000", "point-001"]


def test_spec_base_relative_to_the_spec_file_and_scalars_as_lists(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yaml").write_text(TINY.read_text())
    spec = load_spec(write_spec(tmp_path / "sub", {"base": "base.yaml", "grid": {"ranks": 2}}))
    assert [p.ranks for p in spec.points] == [2]
    assert spec.rounds == load_config(TINY).federation.rounds


@pytest.mark.parametrize("value", [None, True, 3, 0.5, "quant", [1, 2], "a,b"])
def test_render_value_round_trips_through_yaml(value):
    text = render_value(value, "x")
    assert not any(c.isspace() for c in text)
    assert yaml.safe_load(text) == value


@pytest.mark.parametrize("change, field", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"grid": {"ranks": [1], "cores": [2]}}, "grid.cores: unknown key"),
    ({"grid": {"ranks": [1, "x"]}}, "grid.ranks[1]: expected an integer"),
    ({"grid": {"ranks": [0]}}, "grid.ranks[0]: must be >= 1"),
    ({"grid": {"num_clients": [4]}}, "grid.ranks: required"),
    ({"grid": {"ranks": [1], "codec": {"q": {"nope": 1}}}}, "grid.codec.q: compression.nope: unknown key"),
    ({"grid": {"ranks": [1], "codec": {"q": {"uplink": "zip"}}}}, "grid.codec.q: compression.uplink"),
    ({"grid": {"ranks": [1], "model": {"m": {"base_channels": 2}}}}, "grid.model.m: model.base_channels"),
    ({"grid": {"ranks": [1], "model": {"m": "big"}}}, "grid.model.m: expected a mapping"),
    ({"grid": {"ranks": [8], "num_clients": [4]}}, "grid: no point can run"),
    ({"set": {"federation.foo": 1}}, "set: federation.foo: unknown key"),
    ({"set": {"data.path": "a b"}}, "set.data.path: a value with whitespace"),
    ({"rounds": 0}, "rounds: must be >= 1"),
    ({"options": {"warmup_rounds": 2}}, "options.warmup_rounds: must be below rounds"),
    ({"options": {"fast": True}}, "options.fast: unknown key"),
    ({"options": {"timeout_s": -1}}, "options.timeout_s"),
    ({"slurm": {"max_parallel": "all"}}, "slurm.max_parallel: expected an integer"),
    ({"network": {"uplink_mbps": {"median": -1}}}, "network.uplink_mbps.median: must be > 0"),
    ({"network": {"uplink_mbps": {"mean": 3}}}, "network.uplink_mbps.mean: unknown key"),
    ({"network": {"compute": "guess"}}, "network.compute: 'guess' is not one of"),
    ({"network": {"bandwidth": 3}}, "network.bandwidth: unknown key"),
    ({"base": "no/such/config.yaml"}, "base: no/such/config.yaml: file not found"),
])
def test_spec_errors_name_the_field(tmp_path, change, field):
    with pytest.raises(ConfigError) as exc:
        load_spec(write_spec(tmp_path, base_spec(**change)))
    assert field in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cli_reports_a_bad_spec_in_one_line_with_exit_2(tmp_path):
    path = write_spec(tmp_path, base_spec(grid={"ranks": [1], "codec": {"q": {"bits": "many"}}}))
    out = subprocess.run([sys.executable, "-m", "feddm_hpc", "scaling", str(path), "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "grid.codec.q: compression.bits" in out.stderr


def test_cli_dry_run_prints_one_mpiexec_command_per_point(tmp_path, capsys):
    path = write_spec(tmp_path, base_spec())
    assert cli_main(["scaling", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "mpiexec" in l]
    assert len(lines) == 2 and "-n 1" in lines[0] and "-n 2" in lines[1]
    assert not (tmp_path / "o").exists()


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


# ---------------------------------------------------------------------------- a real grid

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """2 points (1 and 2 ranks) of configs/tiny.yaml, 2 rounds, under a real mpiexec."""
    tmp = tmp_path_factory.mktemp("study")
    # modelled compute and no measured server time: the network model is then rank-independent
    spec = base_spec(network={"uplink_mbps": {"median": 5, "sigma": 0.7}, "compute": "modelled",
                              "include_server": False},
                     grid={"ranks": [1, 2], "codec": {"q8": {"uplink": "quant", "bits": 8}}})
    path = write_spec(tmp, spec)
    out = tmp / "out"
    code = run_study(str(path), str(out), echo=QUIET)
    return path, out, code


@pytest.mark.mpi  # its tiny_study runs mpiexec
def test_grid_writes_the_csv_and_the_plots(tiny_study):
    _, out, code = tiny_study
    assert code == 0, (out / "point-001.log").read_text()[-3000:]
    with open(out / "scaling.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [(r["point"], r["ranks"], r["status"]) for r in rows] == [("point-000", "1", "ok"),
                                                                     ("point-001", "2", "ok")]
    for r in rows:
        assert r["codec"] == "q8" and int(r["model_params"]) > 0 and r["rounds_measured"] == "2"
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
        assert (out / name).stat().st_size > 1000
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "point-001" / "rss").glob("rank-*.json"))) == 2


@pytest.mark.mpi  # its tiny_study runs mpiexec
def test_rerun_reuses_finished_points_and_collect_rebuilds_the_csv(tiny_study, capsys):
    path, out, code = tiny_study
    assert code == 0
    (out / "scaling.csv").unlink()
    lines = []
    assert run_study(str(path), str(out), echo=lines.append) == 0
    assert sum("reused" in l for l in lines) == 2
    (out / "scaling.csv").unlink()
    assert cli_main(["scaling", str(path), "--out", str(out), "--collect"]) == 0
    assert len((out / "scaling.csv").read_text().splitlines()) == 3


# ---------------------------------------------------------------------------- SLURM

def sweep_lines(path: Path):
    return [l for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]


def test_slurm_sweep_files_have_one_line_per_point(tmp_path):
    spec = base_spec(grid={"ranks": [1, 2], "num_clients": [4, 8],
                           "codec": {"f32": {}, "q8": {"uplink": "quant", "bits": 8}}},
                     slurm={"sbatch_args": ["--time=00:10:00"], "max_parallel": 2})
    path = write_spec(tmp_path, spec)
    out = tmp_path / "out"
    assert run_study(str(path), str(out), dry_run=True, slurm=True, echo=QUIET) == 0
    points = json.loads((out / "points.json").read_text())["points"]
    assert len(points) == 8
    total = 0
    for ranks in (1, 2):
        lines = sweep_lines(out / "slurm" / f"sweep-np{ranks}.txt")
        mine = [p for p in points if p["ranks"] == ranks]
        assert len(lines) == len(mine) == 4
        total += len(lines)
        for i, (line, p) in enumerate(zip(lines, mine)):
            args = build_parser().parse_args(["train", str(TINY), "--run-dir", "x", *line.split()])
            assert args.overrides == list(p["overrides"])
            cfg = load_config(TINY, args.overrides)
            assert cfg.federation.num_clients == p["num_clients"]
            assert cfg.compression.uplink == ("quant" if p["codec"] == "q8" else "none")
            assert p["run_dir"] == str((out / "slurm" / f"np{ranks}" / f"task-{i}").resolve())
    assert total == len(points)
    submit = (out / "slurm" / "submit.sh").read_text()
    assert "--array=0-3%2" in submit and "--ntasks=2" in submit and "--time=00:10:00" in submit
    assert submit.count("sweep.sbatch") == 2


def test_sweep_sbatch_runs_the_generated_line_of_its_task(tmp_path):
    """jobs/slurm/sweep.sbatch itself, with a stand-in `srun` that records its arguments."""
    path = write_spec(tmp_path, base_spec(grid={"ranks": [2], "num_clients": [4, 8]}))
    out = tmp_path / "out"
    assert run_study(str(path), str(out), dry_run=True, slurm=True, echo=QUIET) == 0
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "srun"
    fake.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {tmp_path / 'srun-args.txt'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    submit = (out / "slurm" / "submit.sh").read_text().splitlines()[-1]
    env_assign = dict(kv.split("=", 1) for kv in shlex.split(submit) if "=" in kv and kv.split("=")[0].isupper())
    env = {**os.environ, **env_assign, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "78"}
    res = subprocess.run(["bash", str(ROOT / "jobs" / "slurm" / "sweep.sbatch")], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "srun-args.txt").read_text().splitlines()
    i = args.index("train")
    assert args[i + 1] == str(TINY) and args[i + 2:i + 4] == ["--run-dir", str((out / "slurm" / "np2" / "task-1").resolve())]
    assert "federation.num_clients=8" in args
