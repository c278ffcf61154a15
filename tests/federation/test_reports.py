"""The client report's wire format and the two transports (serial communicator)."""
import numpy as np
import pytest

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.compression import make_compressor
from feddm_hpc.config import CompressionConfig
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation.transports import AllreduceTransport, GatherTransport, make_transport

N = 5
RAW = make_compressor(CompressionConfig(uplink="none"))


def enc(x):
    return RAW.encode(np.asarray(x, dtype=np.float32), 0, None)


def report(cid, samples, update, extras=(), num_extras=0, loss=0.5):
    return wire.make_report(cid, samples, loss, 0.25, None if update is None else enc(update),
                            [enc(e) for e in extras], num_extras)


def test_scalars_and_payloads_round_trip_by_name_across_ranks_with_empty_reports_anywhere():
    a, b, d = np.full(N, 1.0), np.full(N, 2.0), np.full(N, 4.0)
    # Three ranks: [0, 1], [2, 5], [7]; clients 1 and 5 could not encode (no bytes).
    ranks = [[report(0, 10, a, [b], 1), report(1, 11, None, num_extras=1)],
             [report(2, 12, b, [d], 1), report(5, 13, None, num_extras=1)],
             [report(7, 14, d, [a], 1, loss=float("nan"))]]
    packed = [wire.pack(r, 1) for r in ranks]
    got = wire.unpack([s for s, _ in packed], [blob for _, blob in packed], 1)
    assert sorted(got) == [0, 1, 2, 5, 7]
    assert got[1].status == wire.STATUS_UNENCODABLE and got[1].update.size == 0
    assert got[5].extras[0].size == 0 and got[5].uplink_bytes == 0
    assert got[2].num_samples == 12 and got[2].train_s == 0.25 and np.isnan(got[7].loss)
    np.testing.assert_array_equal(RAW.decode(got[7].update, N), d)
    np.testing.assert_array_equal(RAW.decode(got[2].extras[0], N), d)
    assert got[0].extra_bytes == (got[0].extras[0].size,)
    assert np.isnan(got[2].update_norm)   # measured only under DP clipping
    scalars_only = wire.unpack_scalars([s for s, _ in packed], 1)
    assert scalars_only[2].uplink_bytes == got[2].uplink_bytes and scalars_only[2].update is None


def test_a_report_claiming_more_bytes_than_arrived_is_an_error():
    scalars, blob = wire.pack([report(0, 1, np.ones(N))], 0)
    with pytest.raises(RuntimeError, match="client 0"):
        wire.unpack([scalars], [blob[:-1]], 0)
    with pytest.raises(RuntimeError, match="no report accounts for"):
        wire.unpack([scalars], [np.concatenate([blob, blob[:1]])], 0)


def test_the_wire_dtype_names_every_field():
    assert set(wire.wire_dtype(2).names) == {"client_id", "num_samples", "loss", "train_s", "status",
                                             "update_bytes", "update_norm", "extra_bytes"}
    assert wire.wire_dtype(2)["extra_bytes"].shape == (2,)
    assert "extra_bytes" not in wire.wire_dtype(0).names


@pytest.mark.parametrize("cls", [GatherTransport, AllreduceTransport])
def test_both_transports_agree_on_one_rank(cls):
    rng = np.random.default_rng(0)
    ups = [rng.standard_normal(N) for _ in range(3)]
    bad = ups[1].copy()
    bad[0] = np.inf
    reps = [report(0, 1, ups[0], [ups[2]], 1), report(1, 2, bad, [ups[0]], 1),
            report(2, 3, ups[2], [ups[1]], 1)]
    phases = {}
    out = cls(N, 1, "update").reduce(SerialCommunicator(), reps, np.zeros(N, np.float32), phases)
    assert out.aggregate.accepted == [0, 2] and out.aggregate.rejected == [1]
    expected = (1 * ups[0] + 3 * ups[2]) / 4
    np.testing.assert_allclose(out.aggregate.mean_update, expected, rtol=1e-6)
    np.testing.assert_allclose(out.aggregate.extra_sums[0], ups[2] + ups[1], rtol=1e-6)
    assert {"gather", "decode"} <= set(phases)
    # The root sees every client's bytes either way (byte accounting does not depend on it).
    assert {c: r.uplink_bytes for c, r in out.reports.items()} == {r.client_id: r.uplink_bytes for r in reps}
    if cls is AllreduceTransport:
        assert out.reports[1].status == wire.STATUS_REJECTED and out.reports[0].update is None


def test_unknown_transport_names_the_field():
    with pytest.raises(ConfigError, match="system.transport"):
        make_transport("carrier-pigeon", N, 0, "update")
