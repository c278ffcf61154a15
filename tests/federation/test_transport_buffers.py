"""Wire-speed transport (issue 23): buffers sized once and reused across rounds, payloads encoded
straight into the send buffer, the root's own payloads gathered in place, updates decoded and
summed one client at a time in id order into reused sums, checkpoints hashed without copies.
Every test compares against the plain path (fresh arrays, np.concatenate, decode_payload),
bit for bit."""
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from feddm_hpc.comm import MPICommunicator, SerialCommunicator, WireBuffer
from feddm_hpc.compression import decode_payload, make_compressor
from feddm_hpc.config import CompressionConfig
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation import server
from feddm_hpc.federation.aggregation import DPMean, Robust, UniformMean, WeightedMean
from feddm_hpc.federation.transports import AllreduceTransport, GatherTransport
from feddm_hpc.rundir import checkpoint as ckpt

from conftest import ROOT, TINY, mpiexec_path

N = 1000
CODECS = {"none": dict(uplink="none"), "q8": dict(uplink="quant", bits=8),
          "q4-zlib": dict(uplink="quant", bits=4, lossless="zlib"),
          "topk": dict(uplink="topk", topk_fraction=0.05), "bf16": dict(uplink="quant", bits=16,
                                                                        fp16_format="bf16")}


def codec(name, **extra):
    return make_compressor(CompressionConfig(**CODECS[name], **extra))


def update(seed, n=N):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


# --------------------------------------------------------------------------- WireBuffer

def test_wire_buffer_grows_keeping_its_head_and_never_shrinks():
    buf = WireBuffer()
    moves = []
    buf.on_move.append(moves.append)
    head = buf.ensure(100)
    head[:] = np.arange(100, dtype=np.uint8)
    assert buf.capacity == 100 and len(moves) == 1
    grown = buf.ensure(150, keep=60)
    assert buf.capacity == 200 and len(moves) == 2   # at least doubles: few growths
    assert np.array_equal(grown[:60], np.arange(60, dtype=np.uint8))
    assert buf.ensure(10).base is not None and buf.capacity == 200   # smaller: same memory
    assert len(moves) == 2
    assert buf.holds(buf.array[5:9], 5) and not buf.holds(buf.array[5:9], 4)
    assert not buf.holds(np.ones(4, np.uint8), 0)


def test_a_large_wire_buffer_reserves_address_space_once_and_never_moves():
    from feddm_hpc.comm import _reservation

    def status_kb(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

    buf = WireBuffer()
    moves = []
    buf.on_move.append(moves.append)
    big = 12 << 20
    rss = status_kb("VmRSS")
    view = buf.ensure(big, touch=True)
    assert view.size == big and buf._region is not None   # its own mapping (huge pages)
    assert buf.capacity >= min(_reservation(), 1 << 30) or buf.capacity == big
    view[-1] = 7
    buf.ensure(4 * big, keep=big, touch=True)   # a later, larger round: no copy, no move
    assert buf.array[big - 1] == 7 and len(moves) == 1
    # Reserved is not resident: what was touched (4 * big) is, the rest of the reservation not.
    assert status_kb("VmRSS") - rss < (4 * big + (64 << 20)) // 1024


# --------------------------------------------------------------------------- Outbox

@pytest.mark.parametrize("name", sorted(CODECS))
def test_an_attached_codec_encodes_into_the_outbox_and_make_report_copies_nothing(name):
    plain, attached = codec(name), codec(name)
    box = wire.Outbox()
    box.attach(attached)
    reps, expected = [], []
    for c in (4, 1, 7):
        x = update(c)
        expected.append(plain.encode(x, c, np.random.default_rng(c)))
        payload = attached.encode(x, c, np.random.default_rng(c))
        in_place = box.buffer.holds(payload, box.used)
        reps.append(wire.make_report(c, 1, 0.1, 0.0, payload, (), 0, outbox=box))
        # The codec wrote the payload where it stays (a lossless stage's smaller copy moves)
        assert in_place == (name != "q4-zlib")
    for rep, exp in zip(reps, expected):
        assert same_bits(rep.update, exp) and rep.update_bytes == exp.size
    assert same_bits(box.contents(), wire.pack(reps, 0)[1])   # the wire's blob, already staged
    assert box.stage(reps) == sum(e.size for e in expected)


@pytest.mark.parametrize("sets", [["compression.uplink=none"],
                                  ["compression.uplink=none", "privacy.clip_norm=0.5"],
                                  ["compression.uplink=quant", "compression.bits=8"]])
def test_the_update_is_written_once_into_the_outbox_when_the_identity_codec_follows(sets):
    """delta -> encode with float32 updates: local - start goes straight into the send buffer's
    next payload and the encode writes only the header; the bytes equal the plain path's.
    With a stage between them (DP's clip) or a codec that transforms it, the update is
    computed in the delta stage's own buffer and encoded as before."""
    from feddm_hpc.config import load_config
    from feddm_hpc.federation.uplink import build_uplink

    cfg = load_config(TINY, sets)
    plain_codec, boxed_codec = (make_compressor(cfg.compression) for _ in range(2))
    plain, boxed = build_uplink(cfg, plain_codec), build_uplink(cfg, boxed_codec)
    box = wire.Outbox()
    box.attach(boxed_codec)
    direct = sets == ["compression.uplink=none"]
    for round_index in range(2):   # the second round reuses the buffer from its start
        box.clear()
        for c in (3, 0, 5):
            start, local = update(100 + round_index), update(c + 10 * round_index)
            expected = plain.send(c, round_index, [0, 3, 5], start, local).payload
            out = boxed.send(c, round_index, [0, 3, 5], start, local)
            assert box.buffer.holds(out.payload, box.used)
            assert np.shares_memory(out.vector, box.buffer.array) == direct
            rep = wire.make_report(c, 1, 0.1, 0.0, out.payload, (), 0, outbox=box)
            assert same_bits(rep.update, expected)
    if direct:   # the delta stage never needed a buffer of its own
        assert boxed.stages[0]._buffer is None


def test_growth_rebinds_every_report_and_extras_follow_their_update():
    box = wire.Outbox()
    raw = codec("none")
    box.attach(raw)
    reps = []
    for c in range(6):   # sizes double, so the buffer grows several times mid-round
        n = 100 * 2 ** c
        extra = np.full(3 + c, c, dtype=np.uint8)
        reps.append(wire.make_report(c, 1, 0.1, 0.0, raw.encode(update(c, n), c, None), [extra], 1,
                                     outbox=box))
    offset = 0
    for c, rep in enumerate(reps):
        assert box.buffer.holds(rep.update, offset)   # views of the current buffer, not stale
        offset += rep.update_bytes
        assert box.buffer.holds(rep.extras[0], offset) and (rep.extras[0] == c).all()
        offset += rep.extra_bytes[0]
        np.testing.assert_array_equal(decode_payload(rep.update, 100 * 2 ** c), update(c, 100 * 2 ** c))
    assert offset == box.used


def test_staging_reports_built_elsewhere_or_reordered_copies_them_in_wire_order():
    box = wire.Outbox()
    raw = codec("none")
    box.attach(raw)
    placed = [wire.make_report(c, 1, 0.1, 0.0, raw.encode(update(c), c, None), (), 0, outbox=box)
              for c in range(3)]
    blobs = [r.update.copy() for r in placed]
    reordered = [placed[2], placed[0], placed[1]]
    n = box.stage(reordered)
    assert same_bits(box.contents(), np.concatenate([blobs[2], blobs[0], blobs[1]]))
    assert n == 3 * blobs[0].size
    for rep, blob in zip(placed, blobs):   # rebound to their new places
        assert same_bits(rep.update, blob)
    foreign = [wire.make_report(9, 1, 0.1, 0.0, codec("q8").encode(update(9), 9, None), (), 0)]
    own = foreign[0].update
    box.stage(foreign)
    assert same_bits(box.contents(), own) and foreign[0].update is own   # copied, not rebound


# --------------------------------------------------------------------------- server.aggregate

def received(payloads, samples=None, extras=None):
    """{cid: report} as the root unpacks them (plain pack/unpack, no outbox)."""
    reps = [wire.make_report(c, (samples or {}).get(c, 10 + c), 0.1, 0.0, p,
                             (extras or {}).get(c, ()), len(next(iter((extras or {0: ()}).values()))))
            for c, p in payloads.items()]
    k = len(reps[0].extras) if reps else 0
    scalars, blob = wire.pack(reps, k)
    return wire.unpack([scalars], [blob], k)


def reference_aggregate(reports, start, target, rule, k=0):
    """The aggregation before issue 23: decode into a fresh buffer, WeightedSum.add, finish."""
    from feddm_hpc.strategies.aggregate import WeightedSum, is_finite

    acc, rows, accepted = WeightedSum(N), [], []
    sums = [np.zeros(N) for _ in range(k)]
    for cid in sorted(reports):
        rep = reports[cid]
        if not rep.ok:
            continue
        u = decode_payload(rep.update, N)
        if target == "weights":
            u = u - start
        ex = [decode_payload(e, N) for e in rep.extras]
        if not is_finite(u) or not all(is_finite(e) for e in ex):
            continue
        accepted.append(cid)
        u = rule.bound(u)
        acc.add(u, rule.weight(rep.num_samples))
        if rule.keeps_rows:
            rows.append(u.copy())
        for s, e in zip(sums, ex):
            s += e
    mean = (acc.total / acc.weight).astype(np.float32) if not rule.keeps_rows else \
        rule.finish(acc.total, acc.weight, np.stack(rows), accepted)
    return accepted, mean, sums


@pytest.mark.parametrize("target", ["update", "weights"])
@pytest.mark.parametrize("name", ["none", "q8", "topk"])
@pytest.mark.parametrize("rule_kind", ["weighted", "uniform"])
def test_aggregate_in_place_equals_the_fresh_decode_path_bit_for_bit(name, target, rule_kind):
    start = update(500)
    comp = codec(name)
    payloads = {c: comp.encode(update(c) + (start if target == "weights" else 0), c, None)
                for c in (3, 0, 2, 5)}
    bad = update(1)
    bad[7] = np.nan
    payloads[1] = codec("none").encode(bad + (start if target == "weights" else 0), 1, None)
    reps = received(payloads)
    rule = WeightedMean(0, sorted(reps)) if rule_kind == "weighted" else UniformMean(0, sorted(reps))
    buffers = server.AggregateBuffers(N, 0)
    got = server.aggregate(reps, N, start, target, 0, rule, buffers=buffers)
    accepted, mean, _ = reference_aggregate(reps, start, target, rule)
    assert got.accepted == accepted == [0, 2, 3, 5] and got.rejected == [1]
    assert same_bits(got.mean_update, mean)
    assert got.weighted_sum.total is buffers.total or np.shares_memory(got.weighted_sum.total, buffers.flat)


@pytest.mark.parametrize("target", ["update", "weights"])
def test_in_place_and_decoded_updates_interleaved_still_sum_in_id_order(target):
    """Updates read in place wait and are summed in blocks; one decoded into the buffer comes
    between them: the sum is still the id-ordered one, bit for bit."""
    start = update(501)
    shift = start if target == "weights" else 0
    makers = {0: codec("none"), 1: codec("q8"), 2: codec("none"), 3: codec("none", lossless="zlib"),
              4: codec("none"), 5: codec("topk"), 6: codec("none")}
    payloads = {c: comp.encode(update(c) * (1 + c) + shift, c, None) for c, comp in makers.items()}
    reps = received(payloads)
    rule = WeightedMean(0, sorted(reps))
    got = server.aggregate(reps, N, start, target, 0, rule, buffers=server.AggregateBuffers(N, 0))
    accepted, mean, _ = reference_aggregate(reps, start, target, rule)
    assert got.accepted == accepted == list(range(7))
    assert same_bits(got.mean_update, mean)


def test_reused_sums_give_each_round_what_fresh_ones_give_as_payloads_grow_and_shrink():
    buffers = server.AggregateBuffers(N, 1)
    start = np.zeros(N, np.float32)
    for r, name in enumerate(["none", "q8", "none", "topk", "q4-zlib", "none"]):
        comp = codec(name)
        payloads = {c: comp.encode(update(10 * r + c), c, None) for c in range(4)}
        extras = {c: [codec("none").encode(update(99 + c), c, None)] for c in range(4)}
        reps = received(payloads, extras=extras)
        rule = WeightedMean(r, range(4))
        kept = server.aggregate(reps, N, start, "update", 1, rule, buffers=buffers)
        fresh = server.aggregate(reps, N, start, "update", 1, WeightedMean(r, range(4)))
        assert same_bits(kept.mean_update, fresh.mean_update)
        assert same_bits(kept.extra_sums[0], fresh.extra_sums[0])
        _, mean, sums = reference_aggregate(reps, start, "update", rule, k=1)
        assert same_bits(kept.mean_update, mean) and same_bits(kept.extra_sums[0], sums[0])


@pytest.mark.parametrize("rule", ["dp", "median"])
def test_rules_that_bound_or_keep_rows_still_see_each_update_once(rule):
    from types import SimpleNamespace

    comp = codec("none")
    reps = received({c: comp.encode(update(c), c, None) for c in range(4)})
    if rule == "dp":
        p = SimpleNamespace(clip_norm=5.0, noise_multiplier=0.0, delta=1e-5)
        class NoAccounting(DPMean):
            def record_fields(self):   # the epsilon accountant (scipy) is not what is tested
                return {}
        make = lambda: NoAccounting(0, range(4), 0, p, 4)   # noqa: E731
    else:
        s = SimpleNamespace(aggregation="median", num_selected=None, num_byzantine=0, trim_fraction=0.1)
        make = lambda: Robust(0, range(4), s)   # noqa: E731
    got = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 0, make(),
                           buffers=server.AggregateBuffers(N, 0))
    fresh = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 0, make())
    assert same_bits(got.mean_update, fresh.mean_update)


def test_finish_rounds_the_float64_mean_once_as_before():
    total = np.random.default_rng(0).standard_normal(N) * 1e3
    assert same_bits(WeightedMean(0, ()).finish(total, 7.25), (total / 7.25).astype(np.float32))


# --------------------------------------------------------------------------- transports, in process

class TwoRanks(SerialCommunicator):
    """The root of 2 ranks: rank 1's payload bytes and scalars (packed the plain way) arrive
    with the gathers. Records what the root itself put on the wire."""
    size = 2

    def __init__(self, other_reports, k=0):
        self.other = wire.pack(other_reports, k)
        self.sent = []

    def gather_bytes_into(self, buffer, nbytes, root=0):
        own = buffer.array[:nbytes]
        self.sent.append(own.copy())
        recv = buffer.ensure(nbytes + self.other[1].size, keep=nbytes, touch=True)
        recv[nbytes:] = self.other[1]
        return [recv[:nbytes], recv[nbytes:]]

    def gather_bytes(self, payload, root=0):
        return [np.ascontiguousarray(payload, dtype=np.uint8), self.other[0]]


@pytest.mark.parametrize("order", [(0, 2, 4, 6), (6, 2, 4, 0)])
def test_gather_keeps_buffers_across_rounds_and_aggregates_in_id_order(order):
    """Rank 0 hosts `order` (trained in that order), rank 1 the odd ids; the kept transport's
    result equals a fresh transport's and the id-ordered plain aggregate's, every round, while
    the payloads grow and shrink."""
    kept = GatherTransport(N, 0, "update")
    start = np.zeros(N, np.float32)
    for r, name in enumerate(["q8", "none", "topk", "none", "q4-zlib", "q8"]):
        results = []
        for transport in (kept, GatherTransport(N, 0, "update")):
            comp = codec(name)
            transport.outbox.attach(comp)
            mine = [wire.make_report(c, 10 + c, 0.1, 0.0, comp.encode(update(10 * r + c), c, None),
                                     (), 0, outbox=transport.outbox) for c in order]
            other = [wire.make_report(c, 10 + c, 0.1, 0.0, codec(name).encode(update(10 * r + c), c, None),
                                      (), 0) for c in (5, 1, 3, 7)]
            comm = TwoRanks(other)
            reduced = transport.reduce(comm, mine, start, {}, WeightedMean(r, range(8)))
            assert transport.outbox.used == 0   # cleared for the next round
            results.append(reduced)
        plain = codec(name)
        every = {c: wire.make_report(c, 10 + c, 0.1, 0.0, plain.encode(update(10 * r + c), c, None), (), 0)
                 for c in range(8)}
        ref = server.aggregate(every, N, start, "update", 0, WeightedMean(r, range(8)))
        for got in results:
            assert got.aggregate.accepted == list(range(8))
            assert same_bits(got.aggregate.mean_update, ref.mean_update)
            for c in range(8):
                assert same_bits(got.reports[c].update, every[c].update)
                assert got.reports[c].uplink_bytes == every[c].uplink_bytes


def test_hierarchical_transport_reuses_its_allreduce_vector():
    kept = AllreduceTransport(N, 1, "update")
    start = np.zeros(N, np.float32)
    for r, name in enumerate(["none", "q8", "none"]):
        outs = []
        for transport in (kept, AllreduceTransport(N, 1, "update")):
            comp = codec(name)
            transport.outbox.attach(comp)
            reps = [wire.make_report(c, 3 + c, 0.1, 0.0, comp.encode(update(r + c), c, None),
                                     [codec("none").encode(update(50 + c), c, None)], 1,
                                     outbox=transport.outbox) for c in (2, 0, 1)]
            outs.append(transport.reduce(SerialCommunicator(), reps, start, {}, WeightedMean(r, range(3))))
        a, b = (o.aggregate for o in outs)
        assert same_bits(a.mean_update, b.mean_update) and same_bits(a.extra_sums[0], b.extra_sums[0])
        assert a.accepted == [0, 1, 2]


def test_a_communicator_without_gather_bytes_into_gets_the_plain_gather():
    class Plain:
        rank, size = 0, 1

        def __init__(self):
            self.calls = []

        def gather_bytes(self, payload, root=0):
            self.calls.append(payload.size)
            return [np.array(payload)]

    comp = codec("none")
    t = GatherTransport(N, 0, "update")
    t.outbox.attach(comp)
    reps = [wire.make_report(c, 1, 0.1, 0.0, comp.encode(update(c), c, None), (), 0, outbox=t.outbox)
            for c in range(2)]
    comm = Plain()
    out = t.reduce(comm, reps, np.zeros(N, np.float32), {})
    assert comm.calls == [2 * (32 + 4 * N), 2 * wire.wire_dtype(0).itemsize]
    assert out.aggregate.accepted == [0, 1]


# --------------------------------------------------------------------------- MPI communicator (fake)

class _Done:
    def Wait(self):
        pass

    def Test(self):
        return True


class _Node:
    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Free(self):
        pass


class FakeMPI:
    """Igather hands the root every rank's size; Igatherv fills the receive buffer like MPI
    (IN_PLACE: the root's part is already there) with each other rank's bytes (value rank+1)."""

    def __init__(self, rank, sizes):
        self.rank, self.sizes, self.calls = rank, sizes, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return len(self.sizes)

    def Split_type(self, split_type, key=0):
        return _Node()

    def Igather(self, sendbuf, recvbuf, root=0):
        if recvbuf is not None:
            recvbuf[:] = self.sizes
        return _Done()

    def Igatherv(self, sendbuf, recvbuf, root=0):
        self.calls.append((sendbuf, recvbuf))
        if recvbuf is not None:
            buf, sizes, displs, _ = recvbuf
            for r, (d, s) in enumerate(zip(displs, sizes)):
                if r != root:
                    buf[d:d + s] = r + 1
        return _Done()


@pytest.mark.parametrize("timeout_s", [0.0, 5.0])
def test_gather_bytes_into_receives_in_place_and_sends_bytes(timeout_s):
    from mpi4py import MPI

    sizes = [5, 3, 0, 4]
    root = FakeMPI(0, sizes)
    buf = WireBuffer()
    buf.ensure(5)[:] = 9
    parts = MPICommunicator(comm=root, timeout_s=timeout_s).gather_bytes_into(buf, 5)
    (send, recv), = root.calls
    assert send is MPI.IN_PLACE and recv[-1] == MPI.BYTE
    assert [p.size for p in parts] == sizes
    assert (parts[0] == 9).all() and (parts[1] == 2).all() and (parts[3] == 4).all()
    assert all(buf.holds(p, int(np.sum(sizes[:i]))) for i, p in enumerate(parts))
    other = FakeMPI(1, sizes)
    obuf = WireBuffer()
    obuf.ensure(3)[:] = 1
    assert MPICommunicator(comm=other, timeout_s=timeout_s).gather_bytes_into(obuf, 3) is None
    (send, recv), = other.calls
    assert recv is None and send[1] == MPI.BYTE and send[0].size == 3


def test_polled_wait_spins_while_the_bytes_move_then_backs_off(monkeypatch):
    import time

    comm = MPICommunicator(comm=FakeMPI(0, [1]), timeout_s=5.0)
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)

    class Slow:
        def __init__(self, polls):
            self.polls = polls

        def Test(self):
            self.polls -= 1
            return self.polls < 0

    clock = [0.0]

    def monotonic():   # each test of the request takes 0.1 ms
        clock[0] += 1e-4
        return clock[0]
    monkeypatch.setattr(time, "monotonic", monotonic)
    comm._wait(Slow(50), "gather of payloads", nbytes=10 ** 12)   # a long transfer: no sleeps
    assert sleeps == []
    comm._wait(Slow(3), "barrier")           # done within the minimum spin (SPIN_MIN_S): no sleep
    assert sleeps == []
    comm._wait(Slow(40), "barrier")          # nothing to move, still waiting: backs off
    assert 20 < len(sleeps) < 40 and sleeps == sorted(sleeps) and max(sleeps) <= 1e-3


# --------------------------------------------------------------------------- checkpoint digest

def test_hashing_in_place_equals_the_canonical_bytes():
    import hashlib

    values = ["text", b"bytes", np.bytes_(b"x"), np.arange(7, dtype=np.int64),
              np.float32(2.5), np.zeros((3, 2), np.float64)[:, 0], np.array(["a", "bc"], dtype=object),
              np.zeros(0, np.float32), np.asfortranarray(np.arange(6.0).reshape(2, 3)), 3]
    for v in values:
        a, b = hashlib.sha256(), hashlib.sha256()
        a.update(ckpt._canonical(v))
        ckpt._hash_canonical(b, v)
        assert a.hexdigest() == b.hexdigest(), v


@pytest.mark.parametrize("ahead", ["inline", "thread", "thread-mispredicted"])
def test_checkpoint_digest_from_memory_equals_the_read_back_digest(tmp_path, monkeypatch, ahead):
    """Hashed after the write from the arrays (inline), while h5py writes (thread), or with a
    prediction the file contradicts (the fallback hashes the file): always what load verifies."""
    if ahead != "inline":
        monkeypatch.setattr(ckpt, "_DIGEST_AHEAD_BYTES", 0)
    if ahead == "thread-mispredicted":
        real_run = ckpt._DigestAhead._run

        def wrong(self):
            real_run(self)
            self.small["spec"] = b"not what the file holds"
        monkeypatch.setattr(ckpt._DigestAhead, "_run", wrong)
    hashed_file = []
    real_digest = ckpt._digest
    monkeypatch.setattr(ckpt, "_digest",
                        lambda f, written=None: hashed_file.append(1) or real_digest(f, written))
    big = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)
    data = ckpt.CheckpointData(
        round=3, config_yaml="seed: 0\n", params=big, ema=big * 2, spec_text="w (3,)",
        param_fingerprint="abc", strategy={"m": big * 3, "step": np.array(4)},
        clients={"residual/10": big[:1000].copy(), "residual/2": big * 4,
                 "control/1": big.astype(np.float64)},
        metrics_lines=[], image_shape=(1, 28, 28), server={"reference": big[::-1].copy()})
    path = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(3), data)
    assert len(hashed_file) == (0 if ahead == "thread" else 1)
    with h5py.File(path, "r") as f:
        assert f.attrs["checksum"] == real_digest(f)   # what load verifies
    back = ckpt.load_checkpoint(path)
    assert same_bits(back.params, big) and same_bits(back.clients["control/1"], big.astype(np.float64))


# --------------------------------------------------------------------------- under mpiexec

@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("nprocs,timeouts_s", [(2, "0"), (3, "0,20")])   # 3 ranks: both waits, one launch
def test_reused_buffers_under_mpi_match_fresh_ones_every_round(nprocs, timeouts_s):
    script = ROOT / "tests" / "mpi_programs" / "check_transport_buffers.py"
    out = subprocess.run([mpiexec_path(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", str(script),
                          timeouts_s], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    # The launcher may join two ranks' lines into one: read the words, not the lines.
    said = re.findall(r"ok rank (\d+) timeout ([\d.]+)", out.stdout)
    for t in timeouts_s.split(","):   # blocking (0) and polled (20 s) collectives: every rank ok
        assert sorted(int(r) for r, tt in said if tt == t) == list(range(nprocs)), out.stdout


def test_polled_wait_still_times_out_while_spinning():
    from feddm_hpc.comm import CollectiveTimeout

    comm = MPICommunicator(comm=FakeMPI(0, [1]), timeout_s=0.05)
    comm.context = "round 3, gather"

    class Never:
        def Test(self):
            return False

    with pytest.raises(CollectiveTimeout, match="round 3, gather: gather of payloads"):
        comm._wait(Never(), "gather of payloads", nbytes=10 ** 15)   # spin budget: days
