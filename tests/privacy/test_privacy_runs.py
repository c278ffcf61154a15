"""Privacy and robustness in real training runs of configs/tiny.yaml: what clipping and noise do
to the global model, epsilon in every metrics line, and rank-count invariance of DP with secure
aggregation and an attacker."""
import json

import h5py
import numpy as np
import pytest

from feddm_hpc.privacy import accounting

from conftest import final_params, train_tiny

pytestmark = pytest.mark.slow  # each test trains tiny runs


def _params_by_round(run_dir):
    out = {}
    for path in sorted((run_dir / "checkpoints").glob("round-*.h5")):
        with h5py.File(path, "r") as f:
            out[int(path.stem.split("-")[1])] = f["global/params"][()]
    return out


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


CLIP = 1e-3


@pytest.fixture(scope="module")
def clipped_run(tmp_path_factory):
    """Clipping at CLIP, no noise, client metrics withheld (the default): 3 rounds, every checkpoint kept."""
    return train_tiny(tmp_path_factory.mktemp("clip") / "clip", "--set", f"privacy.clip_norm={CLIP}",
                      "--set", "federation.rounds=3", "--set", "checkpoint.keep_last=5")


def test_clipped_noiseless_rounds_move_the_model_by_at_most_c(clipped_run, tmp_path):
    """FedAvg with server lr 1: each round adds the mean of k clipped updates over the cohort m,
    whose norm is at most k/m * C <= C. Unclipped, the same rounds move it much further."""
    c = CLIP
    clipped = _params_by_round(clipped_run)
    plain = _params_by_round(train_tiny(tmp_path / "plain", "--set", "federation.rounds=3",
                                        "--set", "checkpoint.keep_last=5"))
    for r in (1, 2):
        assert np.linalg.norm((clipped[r] - clipped[r - 1]).astype(np.float64)) <= c * (1 + 1e-5)
        assert np.linalg.norm((plain[r] - plain[r - 1]).astype(np.float64)) > 10 * c


def test_server_noise_has_std_z_c_over_m_and_epsilon_is_the_accountants(tmp_path):
    """With C tiny the clipped updates add at most C in norm, so a round's change is the noise:
    per coordinate std z*C/m (m = 4 clients of tiny.yaml, all taking part)."""
    z, c = 2.0, 1e-6
    run = train_tiny(tmp_path / "dp", "--set", f"privacy.clip_norm={c}", "--set",
                     f"privacy.noise_multiplier={z}", "--set", "federation.rounds=2")
    params = _params_by_round(run)
    step = (params[1] - params[0]).astype(np.float64)
    assert np.std(step) == pytest.approx(z * c / 4, rel=0.03)
    for line in _lines(run):
        assert line["epsilon"] == pytest.approx(accounting.epsilon(4, None, z, line["round"] + 1, 1e-5))
        assert line["noise_multiplier"] == z and line["clip_norm"] == c


SECURE_DP_ATTACK = ["--set", "privacy.clip_norm=0.5", "--set", "privacy.noise_multiplier=0.5",
                    "--set", "privacy.secure_aggregation=true", "--set", "privacy.secagg_range=0.05",
                    "--set", "compression.uplink=quant", "--set", "compression.bits=8",
                    "--set", "attack.kind=sign_flip", "--set", "attack.clients=[1]",
                    "--set", "federation.dropout_prob=0.2", "--set", "privacy.release_client_metrics=true"]


@pytest.mark.mpi
def test_dp_with_secure_aggregation_and_an_attacker_is_rank_count_invariant(tmp_path):
    one = train_tiny(tmp_path / "np1", *SECURE_DP_ATTACK)
    two = train_tiny(tmp_path / "np2", *SECURE_DP_ATTACK, nprocs=2)
    np.testing.assert_array_equal(final_params(one), final_params(two))
    a, b = _lines(one), _lines(two)
    for x, y in zip(a, b):
        for key in ("train_loss", "epsilon", "uplink_bytes", "protocol_uplink_bytes", "arrived"):
            assert x[key] == y[key]
    assert all(line["protocol_uplink_bytes"] > 0 for line in a)


def test_dp_metrics_carry_the_update_norms_only_when_released(clipped_run, tmp_path):
    """The pre-clip norms guide the choice of C but depend on single clients' data: written only
    with privacy.release_client_metrics; otherwise no per-client value, cohort id or loss."""
    released = train_tiny(tmp_path / "norms", "--set", f"privacy.clip_norm={CLIP}", "--set",
                          "federation.rounds=1", "--set", "privacy.release_client_metrics=true")
    line = _lines(released)[0]
    assert line["update_norm_median"] > 1e-3 and line["clipped_fraction"] == 1.0
    assert line["client_loss"] is not None and line["clients"] == [0, 1, 2, 3]
    withheld = clipped_run   # the same clipping without release_client_metrics (3 rounds: round 0 read)
    line = _lines(withheld)[0]
    for key in ("update_norm_median", "clipped_fraction"):
        assert key not in line
    assert line["client_loss"] is None and line["client_uplink_bytes"] is None
    assert line["train_loss"] is None and line["clients"] == 4 and line["arrived"] == 4
    assert line["client_metrics"].startswith("withheld") and line["epsilon"] is None  # z = 0


def test_a_round_without_an_accepted_update_still_releases_noise(tmp_path):
    """Whether an update is accepted depends on the client's data (a non-finite one is refused),
    so a DP round must release noise even when none is: every client of tiny.yaml sends NaNs."""
    z, c = 1.0, 1e-3
    run = train_tiny(tmp_path / "nan", "--set", f"privacy.clip_norm={c}", "--set",
                     f"privacy.noise_multiplier={z}", "--set", "federation.rounds=2",
                     "--set", "federation.inject_nan_clients=[0,1,2,3]", "--set", "checkpoint.keep_last=5")
    params = _params_by_round(run)
    step = (params[1] - params[0]).astype(np.float64)
    assert all(line["aggregated_clients"] == 0 and line["rejected_updates"] == 4 for line in _lines(run))
    assert np.std(step) == pytest.approx(z * c / 4, rel=0.03)   # the noise alone, over m = 4


SECURE = ["--set", "privacy.secure_aggregation=true", "--set", "privacy.secagg_range=0.05",
          "--set", "compression.uplink=quant", "--set", "compression.bits=8"]


def test_secure_aggregation_below_its_threshold_aggregates_nothing_and_says_why(tmp_path):
    """4 clients, 2 of them unable to encode (NaN): 2 survivors are below the threshold 3 (a
    majority), so nothing is unmasked and the model stays; the loss arrives summed otherwise."""
    run = train_tiny(tmp_path / "few", *SECURE, "--set", "federation.rounds=1",
                     "--set", "federation.inject_nan_clients=[0,1]")
    line = _lines(run)[0]
    assert "fewer than the threshold 3" in line["secure_aggregation_failed"]
    assert line["aggregated_clients"] == 0 and line["train_loss"] is None
    ok = train_tiny(tmp_path / "ok", *SECURE, "--set", "federation.rounds=1")
    line = _lines(ok)[0]
    assert "secure_aggregation_failed" not in line and line["aggregated_clients"] == 4
    assert 0 < line["train_loss"] < 2 and line["client_loss"] is None   # summed, never per client
