"""The command line contract: exit codes, one-line errors, inspect/sample/validate."""
import json

import pytest

from feddm_hpc.cli import main

from conftest import TINY, copy_run, run_cli


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


@pytest.mark.parametrize("argv, needle", [
    (["train", "does-not-exist.yaml"], "does-not-exist.yaml"),
    (["train", str(TINY), "--set", "model.base=3"], "model.base"),
    (["train", str(TINY), "--set", "federation.rounds=zero"], "federation.rounds"),
    (["train", str(TINY), "--set", "compression.uplink=gzip"], "compression.uplink"),
    (["train", str(TINY), "--set", "federation.algorithm=fedsgd"], "fedavg"),
    (["validate", str(TINY), "--set", "client.batch_size=2000"], "client.batch_size"),
    (["validate", str(TINY), "--set", "data.dataset=npz"], "data.path"),
    (["validate", str(TINY), "--set", "data.dataset=fashion_mnist", "--set", "data.path=/nonexistent"], "nonexistent"),
    (["resume", "/nonexistent/run"], "/nonexistent/run"),
    (["inspect", "/nonexistent/round-000001.h5"], "round-000001.h5"),
    (["sample", "/nonexistent/round-000001.h5", "--out", "x.png"], "round-000001.h5"),
    (["frobnicate"], "invalid choice"),
    (["train"], "config"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    assert needle in _error_line(capsys)


def test_validate_ok(capsys):
    assert main(["validate", str(TINY)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_corrupt_checkpoint_is_a_user_error_without_traceback(tmp_path):
    bad = tmp_path / "round-000003.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    out = run_cli(["inspect", str(bad)])
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: ") and "round-000003.h5" in out.stderr


@pytest.mark.mpi
def test_more_ranks_than_clients_fails_fast_under_mpi(tmp_path):
    # 2 ranks for 1 client: the same refusal as 3 for 2, one rank process (~3 CPU-s of start-up) fewer
    out = run_cli(["train", str(TINY), "--run-dir", str(tmp_path / "r"), "--set", "federation.num_clients=1"],
                  nprocs=2)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert lines == [l for l in lines if l.startswith("error: ")] and len(lines) == 1, out.stderr
    assert "federation.num_clients" in lines[0]


@pytest.fixture(scope="module")
def trained(tiny_run_shared, tmp_path_factory):
    """A finished train_tiny run of this module's own: a copy of the session's (tests/conftest.py)."""
    return copy_run(tiny_run_shared, tmp_path_factory.mktemp("cli") / "run")


@pytest.mark.slow  # the module fixture `trained` trains a run
def test_train_refuses_a_used_run_dir(trained, capsys):
    assert main(["train", str(TINY), "--run-dir", str(trained)]) == 2
    assert "feddm-hpc resume" in _error_line(capsys)


@pytest.mark.slow  # the module fixture `trained` trains a run
def test_inspect_prints_round_and_checksum(trained, capsys):
    assert main(["inspect", str(trained / "checkpoints" / "round-000001.h5")]) == 0
    out = capsys.readouterr().out
    assert "round: 1" in out and "checksum: ok" in out and "num_clients: 4" in out


@pytest.mark.slow
def test_sample_writes_a_png(trained, tmp_path, capsys):
    from feddm_hpc.rundir.imaging import read_png

    out_png = tmp_path / "s.png"
    assert main(["sample", str(trained / "checkpoints" / "round-000001.h5"), "--num", "4",
                 "--steps", "5", "--out", str(out_png)]) == 0
    img = read_png(out_png)
    assert img.shape == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)
    assert "wrote 4 samples" in capsys.readouterr().out


@pytest.mark.slow  # the module fixture `trained` trains a run
def test_resume_of_a_finished_run_does_nothing(trained, capsys):
    before = (trained / "metrics.jsonl").read_text()
    assert main(["resume", str(trained)]) == 0
    assert (trained / "metrics.jsonl").read_text() == before
    assert json.loads(before.splitlines()[-1])["round"] == 1
