"""Root side of a round: payload splitting, renormalised weights, NaN rejection, records."""
import numpy as np
import pytest

from feddm_hpc import server
from feddm_hpc.compression import make_compressor
from feddm_hpc.participation import RoundPlan

N = 6
RAW = make_compressor({"uplink": "none"})


def enc(x):
    return RAW.encode(np.asarray(x, dtype=np.float32), 0, None)


def row(cid, samples, loss=1.0, nu=0, nc=0, status=server.STATUS_OK):
    return np.array([cid, samples, loss, nu, nc, 0.1, 0.01, status], dtype=np.float64)


def reports_from(entries):
    """entries: (cid, samples, update, control or None, status) -> Report dict via the splitter."""
    blobs, rows = [], []
    for cid, samples, upd, ctrl, status in entries:
        u = enc(upd) if upd is not None else np.empty(0, np.uint8)
        c = enc(ctrl) if ctrl is not None else np.empty(0, np.uint8)
        blobs.append(np.concatenate([u, c]))
        rows.append(row(cid, samples, nu=u.size, nc=c.size, status=status))
    return blobs, np.array(rows)


def test_split_handles_zero_byte_reports_anywhere():
    a, b, d = [1.0] * N, [2.0] * N, [4.0] * N
    blobs, meta = reports_from([(0, 1, a, None, 0), (1, 1, None, None, 1), (2, 1, b, None, 0),
                                (5, 1, None, None, 1), (7, 1, d, None, 0)])
    # Three "ranks": [0, 1], [2, 5], [7] -- a zero-byte report at the end of rank 1's blob.
    parts = [np.concatenate(blobs[:2]), np.concatenate(blobs[2:4]), blobs[4]]
    reps = server.split_reports(parts, meta)
    assert sorted(reps) == [0, 1, 2, 5, 7]
    assert reps[1].update.size == 0 and reps[5].update.size == 0
    np.testing.assert_array_equal(RAW.decode(reps[7].update, N), d)
    with pytest.raises(RuntimeError):
        server.split_reports(parts[:2], meta)


def test_weights_renormalise_over_accepted_clients_and_nan_is_rejected():
    u0, u1, u2 = np.full(N, 1.0), np.full(N, 5.0), np.full(N, -3.0)
    bad = u1.copy()
    bad[3] = np.nan
    blobs, meta = reports_from([(0, 100, u0, None, 0), (1, 300, bad, None, 0),
                                (2, 300, u2, None, 0), (4, 50, None, None, 1)])
    agg = server.aggregate(server.split_reports([np.concatenate(blobs)], meta), N,
                           np.zeros(N, np.float32), "update", False)
    assert agg.accepted == [0, 2] and agg.rejected == [1, 4]
    # weights 100 and 300 over the two accepted clients: (100 * 1 - 300 * 3) / 400 = -2
    np.testing.assert_allclose(agg.mean_update, np.full(N, -2.0))


def test_target_weights_subtracts_the_start_model():
    start = np.arange(N, dtype=np.float32)
    blobs, meta = reports_from([(3, 1, start + 2.0, None, 0), (4, 1, start + 4.0, None, 0)])
    agg = server.aggregate(server.split_reports([np.concatenate(blobs)], meta), N, start,
                           "weights", False)
    np.testing.assert_allclose(agg.mean_update, np.full(N, 3.0))


def test_control_deltas_sum_unweighted_and_a_bad_control_rejects_the_client():
    inf_ctrl = np.zeros(N)
    inf_ctrl[0] = np.inf
    blobs, meta = reports_from([(0, 1, np.ones(N), np.full(N, 2.0), 0),
                                (1, 9, np.ones(N), np.full(N, -0.5), 0),
                                (2, 1, np.ones(N), inf_ctrl, 0)])
    agg = server.aggregate(server.split_reports([np.concatenate(blobs)], meta), N,
                           np.zeros(N, np.float32), "update", True)
    assert agg.accepted == [0, 1] and agg.rejected == [2]
    np.testing.assert_allclose(agg.control_sum, np.full(N, 1.5))


def test_nothing_accepted_gives_no_update_and_a_null_loss():
    blobs, meta = reports_from([(0, 1, np.full(N, np.nan), None, 0)])
    reps = server.split_reports([np.concatenate(blobs)], meta)
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", False)
    assert agg.mean_update is None and agg.rejected == [0]
    plan = RoundPlan((0, 1), (0,), (1,), (), {0: 1.0}, 1.0)
    rec = server.round_record(0, plan, reps, agg, N, 4 * N, False, None)
    assert rec["train_loss"] is None and rec["rejected_updates"] == 1
    assert rec["uplink_bytes"] == reps[0].update.size == rec["client_uplink_bytes"]["0"]
    assert rec["downlink_bytes"] == 2 * 4 * N and rec["dropped"] == [1]


def test_is_finite():
    assert server.is_finite(np.full(10, 3e38, dtype=np.float32))   # the float64 sum cannot overflow
    assert not server.is_finite(np.array([0, np.inf], dtype=np.float32))
    assert not server.is_finite(np.array([np.nan, 1], dtype=np.float32))
