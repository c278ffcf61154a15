"""Server side of a round: renormalised weights, NaN rejection, extra uploads, records."""
import numpy as np
import pytest

from feddm_hpc.compression import make_compressor
from feddm_hpc.config import CompressionConfig
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation import server
from feddm_hpc.federation.participation import RoundPlan

N = 6
RAW = make_compressor(CompressionConfig(uplink="none"))


def enc(x):
    return RAW.encode(np.asarray(x, dtype=np.float32), 0, None)


def received(entries, num_extras=0):
    """entries: (cid, samples, update or None, extra or None) -> reports as the root gets them
    (through the wire format, one rank)."""
    reps = [wire.make_report(cid, samples, 1.0, 0.1, enc(upd) if upd is not None else None,
                             [enc(extra)] if extra is not None else [], num_extras)
            for cid, samples, upd, extra in entries]
    scalars, blob = wire.pack(reps, num_extras)
    return wire.unpack([scalars], [blob], num_extras)


def test_weights_renormalise_over_accepted_clients_and_nan_is_rejected():
    u0, u1, u2 = np.full(N, 1.0), np.full(N, 5.0), np.full(N, -3.0)
    bad = u1.copy()
    bad[3] = np.nan
    reps = received([(0, 100, u0, None), (1, 300, bad, None), (2, 300, u2, None), (4, 50, None, None)])
    assert reps[4].status == wire.STATUS_UNENCODABLE and reps[4].uplink_bytes == 0
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 0)
    assert agg.accepted == [0, 2] and agg.rejected == [1, 4]
    # weights 100 and 300 over the two accepted clients: (100 * 1 - 300 * 3) / 400 = -2
    np.testing.assert_allclose(agg.mean_update, np.full(N, -2.0))


def test_target_weights_subtracts_the_start_model():
    start = np.arange(N, dtype=np.float32)
    reps = received([(3, 1, start + 2.0, None), (4, 1, start + 4.0, None)])
    agg = server.aggregate(reps, N, start, "weights", 0)
    np.testing.assert_allclose(agg.mean_update, np.full(N, 3.0))


def test_extra_uploads_sum_unweighted_and_a_bad_extra_rejects_the_client():
    inf_extra = np.zeros(N)
    inf_extra[0] = np.inf
    reps = received([(0, 1, np.ones(N), np.full(N, 2.0)), (1, 9, np.ones(N), np.full(N, -0.5)),
                     (2, 1, np.ones(N), inf_extra)], num_extras=1)
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 1)
    assert agg.accepted == [0, 1] and agg.rejected == [2]
    assert len(agg.extra_sums) == 1
    np.testing.assert_allclose(agg.extra_sums[0], np.full(N, 1.5))


def test_nothing_accepted_gives_no_update_and_a_null_loss():
    reps = received([(0, 1, np.full(N, np.nan), None)])
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 0)
    assert agg.mean_update is None and agg.rejected == [0]
    plan = RoundPlan((0, 1), (0,), (1,), (), {0: 1.0}, 1.0)
    rec = server.round_record(0, plan, reps, agg, N, 4 * N, 0, 0, None)
    assert rec["train_loss"] is None and rec["rejected_updates"] == 1
    assert rec["uplink_bytes"] == reps[0].update.size == rec["client_uplink_bytes"]["0"]
    assert rec["downlink_bytes"] == 2 * 4 * N and rec["dropped"] == [1]


def test_record_counts_the_strategys_vectors_both_ways():
    """One extra upload and one broadcast vector (SCAFFOLD): the float32 baselines double and the
    downlink carries the extra vector for every cohort client, dropped or not."""
    reps = received([(0, 1, np.ones(N), np.ones(N)), (1, 3, np.ones(N), np.ones(N))], num_extras=1)
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 1)
    plan = RoundPlan((0, 1, 2), (0, 1), (2,), (), {0: 1.0, 1: 1.0}, 1.0)
    rec = server.round_record(0, plan, reps, agg, N, 4 * N, 1, 1, None)
    assert rec["uplink_bytes"] == sum(r.update.size + r.extras[0].size for r in reps.values())
    assert rec["uplink_float32_bytes"] == 2 * 2 * 4 * N
    assert rec["downlink_bytes"] == 3 * (4 * N + 4 * N)
    assert rec["downlink_float32_bytes"] == 3 * 2 * 4 * N
    assert rec["train_loss"] == pytest.approx(1.0)


def test_is_finite():
    assert server.is_finite(np.full(10, 3e38, dtype=np.float32))   # the float64 sum cannot overflow
    assert not server.is_finite(np.array([0, np.inf], dtype=np.float32))
    assert not server.is_finite(np.array([np.nan, 1], dtype=np.float32))
