"""The hierarchical transport (ranks pre-sum, then Allreduce) against the gather transport."""
import json

import numpy as np
import pytest

from conftest import DETERMINISTIC, TINY, final_params, run_cli

pytestmark = pytest.mark.mpi

# SCAFFOLD needs plain SGD clients (config.validate rejects anything else).
FEATURES = ["--set", "federation.algorithm=scaffold", "--set", "client.optimizer=sgd",
            "--set", "client.momentum=0", "--set", "client.grad_clip=null", "--set", "compression.uplink=quant",
            "--set", "compression.bits=8", "--set", "federation.inject_nan_clients=[2]"]


@pytest.fixture(scope="module")
def gather_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gather") / "run"
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *FEATURES], nprocs=2)
    assert out.returncode == 0, out.stderr
    return run_dir


def _metrics(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("nprocs", [2, 3])
def test_hierarchical_matches_gather_up_to_summation_order(gather_run, tmp_path, nprocs):
    run_dir = tmp_path / "h"
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *FEATURES,
                   "--set", "system.transport=hierarchical"], nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    # Same numbers summed in another grouping: equal to float32 rounding, not necessarily bitwise.
    np.testing.assert_allclose(final_params(run_dir), final_params(gather_run), rtol=0, atol=1e-6)
    for h, g in zip(_metrics(run_dir), _metrics(gather_run)):
        # byte accounting counts every client's own payload, as a real network would carry it
        assert h["uplink_bytes"] == g["uplink_bytes"] and h["client_uplink_bytes"] == g["client_uplink_bytes"]
        assert h["rejected"] == g["rejected"] == [2]
        assert h["aggregated_clients"] == g["aggregated_clients"] == 3
        assert h["train_loss"] == pytest.approx(g["train_loss"], rel=1e-12)
