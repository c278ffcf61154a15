"""Runs of configs/tiny.yaml with model.parameterization=lowrank: the shared vector is the factors,
and every guarantee of the dense runs holds for it (rank-count invariance, exact resume), here
with an 8-bit quantized uplink and error feedback on top."""
import json

import numpy as np
import pytest

from conftest import DETERMINISTIC, final_params, run_cli, train_tiny

LOWRANK = ["--set", "model.parameterization=lowrank", "--set", "model.lowrank_rank=1",
           "--set", "compression.uplink=quant", "--set", "compression.bits=8",
           "--set", "compression.error_feedback=true"]
SHARED, DENSE = 8041, 41609   # tiny.yaml's U-Net at rank 1 (tests/diffusion/test_lowrank.py)
TIMING = {"wall_s", "phases", "sim_round_s", "client_train_s_max"}


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def untimed(run_dir):
    return [{k: v for k, v in rec.items() if k not in TIMING} for rec in metrics(run_dir)]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("lowrank") / "np1", *LOWRANK)


@pytest.mark.slow
def test_lowrank_run_shares_the_factors_and_reports_both_sizes(serial):
    params = final_params(serial)
    assert params.size == SHARED and np.isfinite(params).all()
    clients = 4
    for rec in metrics(serial):
        assert rec["shared_params"] == SHARED and rec["dense_equivalent_params"] == DENSE
        assert rec["uplink_float32_bytes"] == 4 * SHARED * clients
        for b in rec["client_uplink_bytes"].values():   # 8 bits a factor value plus a small header
            assert SHARED <= b < SHARED + 256


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_lowrank_q8_ef_run_is_rank_count_invariant(serial, tmp_path, nprocs):
    run_dir = train_tiny(tmp_path / f"np{nprocs}", *LOWRANK, nprocs=nprocs)
    assert np.array_equal(final_params(run_dir), final_params(serial))
    assert untimed(run_dir) == untimed(serial)


@pytest.mark.slow
def test_lowrank_q8_ef_run_resumes_exactly(serial, tmp_path):
    run_dir = train_tiny(tmp_path / "resumed", *LOWRANK, "--set", "federation.rounds=1")
    out = run_cli(["resume", str(run_dir), *DETERMINISTIC, "--set", "federation.rounds=2"])
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    assert np.array_equal(final_params(run_dir), final_params(serial))
    assert untimed(run_dir) == untimed(serial)
