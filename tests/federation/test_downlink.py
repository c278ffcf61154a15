"""Compressed downlink: server and client references stay bit-identical, the error of one round
is carried into the next (it does not accumulate), and the bytes are the payload's."""
from types import SimpleNamespace

import numpy as np
import pytest

from feddm_hpc.compression import HEADER_SIZE
from feddm_hpc.compression.quantize import num_chunks, packed_size
from feddm_hpc.config import CompressionConfig
from feddm_hpc.federation.downlink import Downlink


class Wire:
    """Two parties of one Bcast: the root's arrays are recorded, the client's filled from them."""

    def __init__(self):
        self.sent = []

    def party(self, rank):
        wire = self

        class Comm:
            def bcast_array(self, array, root=0):
                if rank == 0:
                    wire.sent.append(array.copy())
                else:
                    array[...] = wire.sent.pop(0)
        c = Comm()
        c.rank = rank
        return c


@pytest.mark.parametrize("bits", [8, 4, 16])
def test_reference_tracks_global_bit_identically(bits):
    n, chunk = 5000, 512
    cfg = CompressionConfig(downlink="quant", downlink_bits=bits, chunk_size=chunk)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n).astype(np.float32)
    server, client = Downlink(cfg, w), Downlink(cfg, w)
    wire = Wire()
    root, other = wire.party(0), wire.party(1)
    for _ in range(20):
        w = (w + rng.standard_normal(n).astype(np.float32) * 1e-2).astype(np.float32)
        diff = (w - server.reference).astype(np.float64)
        ref_s, size = server.send(root, w)
        ref_c, size_c = client.send(other, np.empty(0, np.float32))  # a client has no global
        assert np.array_equal(ref_s, ref_c) and size == size_c
        # Only this round's quantization error of (global - reference) remains: half a step of
        # the chunk's range (fp16: relative rounding of the largest value), not a drifting sum.
        err = np.abs(ref_s.astype(np.float64) - w)
        if bits == 16:
            assert err.max() <= np.abs(diff).max() * 2.0 ** -10 + 1e-6
        else:
            for s in range(0, n, chunk):
                d = diff[s:s + chunk]
                half_step = (d.max() - d.min()) / (2 ** bits - 1) / 2
                assert err[s:s + chunk].max() <= half_step * 1.01 + 1e-6
    if bits != 16:
        assert size == HEADER_SIZE + 8 * num_chunks(n, chunk) + packed_size(n, bits)
    restored = Downlink(cfg, np.zeros(n, np.float32))
    restored.load_state_dict(server.state_dict())
    assert np.array_equal(restored.reference, server.reference)


def test_no_downlink_sends_the_global_vector():
    w = np.arange(4, dtype=np.float32)
    d = Downlink(CompressionConfig(), w)
    comm = SimpleNamespace(rank=0, bcast_array=lambda a, root=0: None)
    start, size = d.send(comm, w)
    assert start is w and size == 16 and d.state_dict() == {}
