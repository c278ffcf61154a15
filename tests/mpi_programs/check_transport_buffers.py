"""The transports' reused buffers under MPI (issue 23): for rounds whose payloads grow and shrink
(float32, 8-bit, top-k, a NaN and an unencodable client), with clients hosted out of id order
on every rank, one GatherTransport (and one hierarchical one) kept across the rounds gives the
root bit for bit what a fresh transport gives and what aggregating every client's payload
locally in id order gives. argv[1]: system.collective_timeout_s (0: blocking waits), or several
separated by commas: the whole check once for each, in one launch, "ok rank R timeout T" after each.

The streamed gather (system.stream_uplink: each payload sent as its client is done, the root
receiving while the others still train) is checked the same way: kept across the rounds and
fresh, with ranks pausing between clients for different times so payloads arrive at the root
interleaved across ranks and out of client-id order; the root must still get exactly the
Gatherv's reports and aggregate bit for bit."""
import sys
import time

import numpy as np

from feddm_hpc.comm import MPICommunicator
from feddm_hpc.compression import make_compressor
from feddm_hpc.config import CompressionConfig
from feddm_hpc.federation import server
from feddm_hpc.federation.aggregation import WeightedMean
from feddm_hpc.federation.reports import make_report
from feddm_hpc.federation.transports import AllreduceTransport, GatherTransport

TIMEOUTS = [float(t) for t in (sys.argv[1] if len(sys.argv) > 1 else "0").split(",")]
comm = MPICommunicator(timeout_s=TIMEOUTS[0])
N = 700_003                   # 2.8 MB float32 payloads: the root's buffer passes 8 MiB (mapped)
CLIENTS = 7
CODECS = [dict(uplink="none"), dict(uplink="quant", bits=8), dict(uplink="none"),
          dict(uplink="topk", topk_fraction=0.01), dict(uplink="quant", bits=4),
          dict(uplink="none")]
# Client c lives on rank HOST(c); each rank trains its clients in descending id order.
HOST = [(5 - c) % comm.size for c in range(CLIENTS)]
mine = sorted((c for c in range(CLIENTS) if HOST[c] == comm.rank), reverse=True)
start = np.random.default_rng(99).standard_normal(N).astype(np.float32)


def update_of(r, c):
    x = np.random.default_rng(1000 * r + c).standard_normal(N).astype(np.float32)
    if r == 2 and c == 3:
        x[N // 2] = np.nan      # rejected by the root after decoding (float32 sends it)
    return x


def payload_of(compressor, r, c):
    if r == 1 and c == 5:
        return None             # could not encode: no bytes
    try:
        return compressor.encode(update_of(r, c), c, np.random.default_rng(c))
    except ValueError:          # a lossy codec refuses a non-finite update
        return None


def check():
    """Every round with transports kept from the start of this call (and fresh ones)."""
    kept = GatherTransport(N, 0, "update")
    kept_hier = AllreduceTransport(N, 0, "update")
    kept_streamed = GatherTransport(N, 0, "update", stream=True)
    kept_streamed.connect(comm)
    for r, codec in enumerate(CODECS):
        comp_cfg = CompressionConfig(**codec)
        cohort = list(range(CLIENTS))
        results = {}
        fresh_streamed = GatherTransport(N, 0, "update", stream=True)
        fresh_streamed.connect(comm)   # collective, on every rank
        for name, transport in (("kept", kept), ("fresh", GatherTransport(N, 0, "update")),
                                ("kept_streamed", kept_streamed), ("fresh_streamed", fresh_streamed),
                                ("kept_hier", kept_hier),
                                ("fresh_hier", AllreduceTransport(N, 0, "update"))):
            assert (getattr(transport, "stream", None) is not None) == (name.endswith("streamed") and comm.size > 1)
            compressor = make_compressor(comp_cfg)
            transport.outbox.attach(compressor)
            reports = []
            for i, c in enumerate(mine):
                reports.append(make_report(c, 10 + c, 0.5, 0.0, payload_of(compressor, r, c), (), 0,
                                           outbox=transport.outbox))
                transport.client_done(comm, reports[-1])
                time.sleep(0.002 * ((comm.rank + i + r) % 3))   # "training" the next client
            transport.wait_for_ranks(comm)
            reduced = transport.reduce(comm, reports, start, {}, WeightedMean(r, cohort))
            results[name] = reduced
            if comm.rank != 0:
                assert reduced is None
        if comm.rank == 0:
            plain = make_compressor(comp_cfg)
            expected = {}
            for c in range(CLIENTS):
                rep = make_report(c, 10 + c, 0.5, 0.0, payload_of(plain, r, c), (), 0)
                expected[c] = rep
            ref = server.aggregate(expected, N, start, "update", 0, WeightedMean(r, cohort))
            for name in ("kept", "fresh", "kept_streamed", "fresh_streamed"):
                got = results[name]
                assert got.aggregate.accepted == ref.accepted, (r, name, got.aggregate.accepted)
                assert got.aggregate.rejected == ref.rejected, (r, name)
                assert np.array_equal(got.aggregate.mean_update.view(np.uint32),
                                      ref.mean_update.view(np.uint32)), (r, name)
                for c in range(CLIENTS):
                    assert got.reports[c].uplink_bytes == expected[c].uplink_bytes, (r, name, c)
                    assert np.array_equal(got.reports[c].update, expected[c].update), (r, name, c)
            a, b = results["kept_hier"].aggregate, results["fresh_hier"].aggregate
            assert a.accepted == ref.accepted and a.rejected == ref.rejected, (r, a.accepted)
            assert np.array_equal(a.mean_update.view(np.uint32), b.mean_update.view(np.uint32)), r
            np.testing.assert_allclose(a.mean_update, ref.mean_update, rtol=1e-5, atol=1e-6)
        del results


for i, timeout_s in enumerate(TIMEOUTS):
    if i:
        comm = MPICommunicator(timeout_s=timeout_s)
    check()
    print(f"ok rank {comm.rank} timeout {timeout_s:g}", flush=True)
