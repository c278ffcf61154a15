"""Top-k sparsification: keep the k = ceil(fraction * n) largest-magnitude entries.

Body: the k values (float32, fp16/bf16, or 8-bit chunked quantization), then their indices in
the cheaper of two codings: a bitmap of n bits, or the sorted indices delta-coded as uint16
(when every gap is below 65536) or uint32. Decode scatters the values into zeros.
"""

from __future__ import annotations

import math

import numpy as np

from feddm_hpc.compression import floatcast
from feddm_hpc.compression.base import Compressor, finite_range, register_decoder
from feddm_hpc.compression.header import CODEC_TOPK, Header
from feddm_hpc.compression.quantize import dequantize, num_chunks, quant_body_size, quantize

VALUE_BITS = (32, 16, 8)
IDX_BITMAP, IDX_DELTA16, IDX_DELTA32 = 0, 1, 2
FLAG_IDX_MASK, FLAG_BF16, FLAG_STOCHASTIC = 3, 4, 8
_SAMPLE = 1 << 16  # sample size for the threshold estimate


def topk_count(n: int, fraction: float) -> int:
    return 0 if n == 0 else min(n, max(1, math.ceil(fraction * n)))


def _kth_largest(a: np.ndarray, k: int) -> float:
    """The k-th largest value of a (1 <= k < n), exactly.

    A full partition of n values is slow (~0.3 GB/s). A sorted strided sample brackets the
    answer w.h.p. in [t_low, t_high): fewer than k values reach t_high and at least k reach
    t_low, so the answer is found by partitioning only the values in the band. If the sample
    misjudges (adversarial layouts), the bracket test fails and we fall back to the full
    partition, so the result is always exact."""
    n = a.size
    if n > 4 * _SAMPLE:
        s = np.sort(a[:: n // _SAMPLE])
        m = s.size
        want = m * k / n
        dev = 4.0 * math.sqrt(want) + 16.0
        lo_rank, hi_rank = math.ceil(want + dev), math.floor(want - dev)
        if lo_rank <= m:
            t_low = s[m - lo_rank]
            t_high = s[m - hi_rank] if hi_rank >= 1 else np.inf
            above = int(np.count_nonzero(a >= t_high)) if hi_rank >= 1 else 0
            need = k - above
            if need >= 1:
                band = a[(a >= t_low) & (a < t_high)]
                if need <= band.size <= n // 4:
                    return np.partition(band, band.size - need)[band.size - need]
    return np.partition(a, n - k)[n - k]


def topk_mask(x: np.ndarray, k: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the k largest |x| (1 <= k < n); ties at the threshold go to the lowest
    indices. `scratch` (float32, x.size) avoids allocating |x|."""
    a = np.abs(x, out=scratch)
    thr = _kth_largest(a, k)
    mask = a > thr
    need = k - int(np.count_nonzero(mask))
    if need:
        mask[np.flatnonzero(a == thr)[:need]] = True
    return mask


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k largest |x| (see topk_mask)."""
    if k >= x.size:
        return np.arange(x.size, dtype=np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(topk_mask(x, k))


def _value_size(bits: int, k: int, chunk: int) -> int:
    return quant_body_size(k, 8, chunk) if bits == 8 else bits // 8 * k


def _index_size(coding: int, n: int, k: int) -> int:
    return {IDX_BITMAP: -(-n // 8), IDX_DELTA16: 2 * k, IDX_DELTA32: 4 * k}[coding]


@register_decoder
class TopKCompressor(Compressor):
    name = "topk"
    codec_ids = (CODEC_TOPK,)

    def __init__(self, fraction: float = 0.01, value_bits: int = 32, chunk_size: int = 1024,
                 stochastic: bool = False, fmt: str = "fp16", **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"TopKCompressor: fraction must be in (0, 1], got {fraction}")
        if value_bits not in VALUE_BITS:
            raise ValueError(f"TopKCompressor: value_bits must be one of {VALUE_BITS}")
        self.fraction, self.value_bits = float(fraction), int(value_bits)
        self.chunk = int(chunk_size)
        self.stochastic, self.fmt = bool(stochastic), fmt

    def _encode(self, x, rng):
        lo, hi = finite_range(x)
        n, bits = x.size, self.value_bits
        if bits == 8 and self.stochastic and rng is None:
            raise ValueError("stochastic rounding needs a numpy Generator (rng is None)")
        k = topk_count(n, self.fraction)
        if k == n:  # everything kept: a mask would mark all
            mask, idx = None, np.arange(n, dtype=np.int64)
        else:
            mask, idx = topk_mask(x, k, self._buffer("abs", n)), None
        # A bitmap beats even 16-bit deltas once more than 1 in 16 entries is kept, and 32-bit
        # deltas (needed when a gap reaches 65536) once more than 1 in 32 is.
        coding, deltas = IDX_BITMAP, None
        if _index_size(IDX_BITMAP, n, k) > _index_size(IDX_DELTA16, n, k):
            idx = np.flatnonzero(mask) if idx is None else idx
            deltas = np.diff(idx, prepend=0)
            coding = IDX_DELTA16 if k == 0 or deltas.max() < (1 << 16) else IDX_DELTA32
            if _index_size(IDX_BITMAP, n, k) <= _index_size(coding, n, k):
                coding = IDX_BITMAP
        if coding == IDX_BITMAP:
            vals = x if mask is None else x[mask]
        else:
            vals = x[idx]
        flags = coding | (FLAG_BF16 * (bits == 16 and self.fmt == "bf16")) \
            | (FLAG_STOCHASTIC * (bits == 8 and self.stochastic))
        exp = floatcast.fp16_exponent(max(-lo, hi)) if bits == 16 and self.fmt == "fp16" else 0
        chunk = self.chunk if bits == 8 else 0
        header = Header(CODEC_TOPK, bits, flags, n=n, k=k, chunk=chunk, exp=exp)
        vsize = _value_size(bits, k, chunk)
        payload = self._new_payload(header, vsize + _index_size(coding, n, k))
        vbody, ibody = payload[32: 32 + vsize], payload[32 + vsize:]
        if bits == 32:
            vbody.view("<f4")[:] = vals
        elif bits == 16 and self.fmt == "bf16":
            floatcast.to_bf16(vals, vbody)
        elif bits == 16:
            floatcast.to_fp16(vals, exp, vbody)
        else:
            c = num_chunks(k, chunk)
            mins, scales, _ = quantize(vals, 8, chunk, rng if self.stochastic else None,
                                       out=vbody[8 * c:])
            vbody[: 4 * c].view("<f4")[:] = mins
            vbody[4 * c: 8 * c].view("<f4")[:] = scales
        if coding == IDX_BITMAP:
            if mask is None:
                mask = np.ones(n, dtype=bool)
            ibody[:] = np.packbits(mask, bitorder="little")
        else:
            ibody.view("<u2" if coding == IDX_DELTA16 else "<u4")[:] = deltas
        return payload

    @classmethod
    def _check(cls, h: Header) -> int:
        coding = h.flags & FLAG_IDX_MASK
        if h.bits not in VALUE_BITS or coding > IDX_DELTA32 or h.k > h.n \
                or (h.bits == 8 and h.chunk <= 0):
            raise ValueError(f"malformed topk payload header (bits={h.bits}, flags={h.flags}, "
                             f"k={h.k}, n={h.n}, chunk={h.chunk})")
        return coding

    @classmethod
    def body_size(cls, header):
        coding = cls._check(header)
        return _value_size(header.bits, header.k, header.chunk) \
            + _index_size(coding, header.n, header.k)

    @classmethod
    def decode_body(cls, header, body, out=None):
        n, k, bits, coding = header.n, header.k, header.bits, header.flags & FLAG_IDX_MASK
        vsize = _value_size(bits, k, header.chunk)
        vbody, ibody = body[:vsize], body[vsize:]
        if bits == 32:
            vals = vbody.view("<f4")
        elif bits == 16 and header.flags & FLAG_BF16:
            vals = floatcast.from_bf16(vbody)
        elif bits == 16:
            vals = floatcast.from_fp16(vbody, header.exp)
        else:
            c = num_chunks(k, header.chunk)
            vals = dequantize(vbody[8 * c:], vbody[: 4 * c].view("<f4"),
                              vbody[4 * c: 8 * c].view("<f4"), header.chunk)
        if out is None:
            out = np.zeros(n, dtype=np.float32)
        else:
            out[:] = 0
        if coding == IDX_BITMAP:
            bitsarr = np.unpackbits(ibody, bitorder="little")
            mask = bitsarr[:n].view(bool)
            if bitsarr[n:].any() or np.count_nonzero(mask) != k:
                raise ValueError(f"corrupt topk payload: index bitmap does not mark {k} entries")
            out[mask] = vals
        else:
            deltas = ibody.view("<u2" if coding == IDX_DELTA16 else "<u4")
            idx = np.cumsum(deltas, dtype=np.int64)
            if k and (idx[-1] >= n or (k > 1 and not (deltas[1:] > 0).all())):
                raise ValueError("corrupt topk payload: indices not strictly increasing below n")
            out[idx] = vals
        return out
