"""Pure uniform quantization and bit packing (numpy only, vectorised).

A vector is cut into chunks of `chunk` values (the last may be shorter). Each chunk keeps its
float32 minimum and scale = (max - min) / (2**bits - 1); values become integer codes
q = round((x - min) / scale) in [0, 2**bits - 1], and decode gives min + q * scale.
Deterministic rounding errs by at most scale/2; stochastic rounding (floor(v + u), u ~ U[0, 1))
is unbiased and errs by less than scale.

A chunk whose range max - min exceeds float32's maximum (e.g. -3e38 and 3e38) would overflow the
float32 arithmetic: its codes are computed from (x - min) / scale in float64, and its decode
min + q * scale in float64 for the values whose float32 result is not finite (clamped to the
float32 range). Every other chunk takes the float32 path unchanged, so ordinary payloads and
decodes are bit-identical to the plain formula.

Work is done in cache-sized blocks with preallocated temporaries: one pass over the input per
block keeps the intermediate arrays in L2 instead of streaming 4-byte temporaries through memory,
which is what makes the encode run at several GB/s on one core.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterator

import numpy as np

VALID_BITS = (8, 4, 2)
BLOCK = 1 << 16  # elements per block; 256 KiB of float32 per temporary stays in L2


def num_chunks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def packed_size(n: int, bits: int) -> int:
    """Bytes of n codes of `bits` bits packed densely (8 // bits codes per byte)."""
    return -(-n * bits // 8)


def quant_body_size(n: int, bits: int, chunk: int) -> int:
    """Bytes of a quantized body: per-chunk float32 min and scale, then the packed codes."""
    return 8 * num_chunks(n, chunk) + packed_size(n, bits)


def _blocks(n: int, chunk: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (row0, row1, elem0, elem1, width): x[elem0:elem1] reshaped to (row1-row0, width)
    covers whole chunks row0..row1-1, or part of one chunk when chunks are bigger than a block."""
    full = n // chunk
    if chunk <= BLOCK:
        rows = BLOCK // chunk
        for r0 in range(0, full, rows):
            r1 = min(full, r0 + rows)
            yield r0, r1, r0 * chunk, r1 * chunk, chunk
    else:
        for r in range(full):
            for e0 in range(r * chunk, (r + 1) * chunk, BLOCK):
                e1 = min((r + 1) * chunk, e0 + BLOCK)
                yield r, r + 1, e0, e1, e1 - e0
    tail0 = full * chunk
    for e0 in range(tail0, n, BLOCK):  # the short last chunk, in blocks too
        e1 = min(n, e0 + BLOCK)
        yield full, full + 1, e0, e1, e1 - e0


def chunk_minmax(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk float32 minimum and maximum (reshape-based reductions, no Python loop)."""
    n = x.size
    full = n // chunk
    body = x[: full * chunk].reshape(full, chunk)
    mins, maxs = body.min(axis=1), body.max(axis=1)
    if n % chunk:
        tail = x[full * chunk:]
        mins = np.append(mins, tail.min())
        maxs = np.append(maxs, tail.max())
    return mins.astype(np.float32, copy=False), maxs.astype(np.float32, copy=False)


def quant_params(mins: np.ndarray, maxs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale per chunk and its reciprocal; constant chunks get scale 0 and inverse 0,
    so every value maps to code 0 and decodes to the (exact) minimum."""
    levels = (1 << bits) - 1
    rng = maxs.astype(np.float64) - mins
    scales = (rng / levels).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        inv = np.where(scales > 0, 1.0 / scales.astype(np.float64), 0.0)
        # A subnormal scale has no finite float32 reciprocal: clip (codes still land in range).
        # A scale near float32's maximum (2-bit codes of a range beyond it) has a subnormal one.
        inv = np.minimum(inv, np.finfo(np.float32).max).astype(np.float32)
    return scales, inv


def quantize(x: np.ndarray, bits: int, chunk: int, rng: np.random.Generator | None = None,
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize a float32 vector (ValueError if not finite) to unpacked uint8 codes.

    rng None gives round-to-nearest; a Generator gives stochastic rounding, drawing x.size
    float32 uniforms in element order (so the result depends only on the generator's state).
    Returns (mins, scales, codes)."""
    if bits not in VALID_BITS:
        raise ValueError(f"quantize: bits must be one of {VALID_BITS}, got {bits}")
    n = x.size
    mins, maxs = chunk_minmax(x, chunk)
    if not (np.isfinite(mins).all() and np.isfinite(maxs).all()):  # NaN propagates to min/max
        raise ValueError("update contains NaN or Inf values; a lossy codec cannot encode it")
    scales, inv = quant_params(mins, maxs, bits)
    with np.errstate(over="ignore"):
        wide = np.isinf(maxs - mins)  # x - min overflows float32 in these chunks
    codes = np.empty(n, dtype=np.uint8) if out is None else out
    tmp = np.empty(BLOCK, dtype=np.float32)
    noise = None if rng is None else np.empty(BLOCK, dtype=np.float32)
    top = np.float32((1 << bits) - 1)
    for r0, r1, e0, e1, w in _blocks(n, chunk):
        shape = (r1 - r0, w)
        t = tmp[: e1 - e0].reshape(shape)
        u = None
        if noise is not None:
            u = noise[: e1 - e0].reshape(shape)
            rng.random(out=u.reshape(-1), dtype=np.float32)
        rows = np.flatnonzero(wide[r0:r1])
        with np.errstate(over="ignore", invalid="ignore") if rows.size else nullcontext():
            np.subtract(x[e0:e1].reshape(shape), mins[r0:r1, None], out=t)
            np.multiply(t, inv[r0:r1, None], out=t)
            if u is None:
                np.add(t, np.float32(0.5), out=t)  # t >= 0, so truncation below is round-half-up
            else:
                np.add(t, u, out=t)
                np.minimum(t, top, out=t)  # float rounding could reach 2**bits exactly
        for j in rows:
            t[j] = _wide_codes(x[e0:e1].reshape(shape)[j], mins[r0 + j], scales[r0 + j],
                               None if u is None else u[j], top)
        np.copyto(codes[e0:e1].reshape(shape), t, casting="unsafe")
    return mins, scales, codes


_F32_MAX = float(np.finfo(np.float32).max)


def _wide_codes(x: np.ndarray, lo: np.float32, scale: np.float32, u: np.ndarray | None,
                top: np.float32) -> np.ndarray:
    """Codes (as whole floats) of one chunk whose range overflows float32, computed in float64."""
    v = (x.astype(np.float64) - np.float64(lo)) / np.float64(scale)
    v += 0.5 if u is None else u
    np.floor(v, out=v)
    return np.clip(v, 0.0, float(top), out=v)


def dequantize(codes: np.ndarray, mins: np.ndarray, scales: np.ndarray, chunk: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """min + code * scale per chunk, as float32."""
    n = codes.size
    res = np.empty(n, dtype=np.float32) if out is None else out
    # Chunks where min + code * scale could leave the float32 range (codes are at most 255).
    # A non-finite min or scale (a corrupt payload) is left to decode to non-finite values.
    with np.errstate(over="ignore", invalid="ignore"):
        wide = (np.abs(mins.astype(np.float64)) + 255.0 * np.abs(scales.astype(np.float64))
                > _F32_MAX) & np.isfinite(mins) & np.isfinite(scales)
    for r0, r1, e0, e1, w in _blocks(n, chunk):
        shape = (r1 - r0, w)
        o = res[e0:e1].reshape(shape)
        rows = np.flatnonzero(wide[r0:r1])
        with np.errstate(over="ignore", invalid="ignore") if rows.size else nullcontext():
            np.multiply(codes[e0:e1].reshape(shape), scales[r0:r1, None], out=o)
            np.add(o, mins[r0:r1, None], out=o)
        for j in rows:  # redo in float64 only what overflowed, so finite results stay as they are
            bad = ~np.isfinite(o[j])
            if bad.any():
                q = codes[e0:e1].reshape(shape)[j][bad].astype(np.float64)
                v = np.float64(mins[r0 + j]) + q * np.float64(scales[r0 + j])
                o[j][bad] = np.clip(v, -_F32_MAX, _F32_MAX)
    return res


_WORD = {4: "<u2", 2: "<u4"}  # one word holds the codes of one packed byte


def pack_bits(codes: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """Pack uint8 codes (< 2**bits) densely, little-end first: with 4 bits byte j holds codes
    2j (low nibble) and 2j+1 (high nibble); with 2 bits codes 4j..4j+3 from the low bits up.

    The codes of byte j are read as one little-endian word (b0 | b1 << 8 | ...); shifts and ors
    gather them into its low byte, which the final cast keeps."""
    n = codes.size
    res = np.empty(packed_size(n, bits), dtype=np.uint8) if out is None else out
    if bits == 8:
        res[:] = codes
        return res
    if bits not in _WORD:
        raise ValueError(f"pack_bits: bits must be one of {VALID_BITS}, got {bits}")
    per = 8 // bits
    whole = n - n % per
    t = np.empty(BLOCK // per, dtype=_WORD[bits])
    t2 = np.empty_like(t)
    for i in range(0, whole, BLOCK):
        w = codes[i: min(whole, i + BLOCK)].view(_WORD[bits])
        _pack_words(w, bits, t[: w.size], t2[: w.size], res[i // per: i // per + w.size])
    if whole < n:  # the last byte, padded with zero codes
        w = np.zeros(per, dtype=np.uint8)
        w[: n - whole] = codes[whole:]
        w = w.view(_WORD[bits])
        _pack_words(w, bits, np.empty_like(w), np.empty_like(w), res[-1:])
    return res


def _pack_words(w, bits, t, t2, dst) -> None:
    if bits == 4:  # w = b0 | b1 << 8  ->  b0 | b1 << 4
        np.right_shift(w, 4, out=t)
        np.bitwise_or(t, w, out=t)
    else:  # w = b0 | b1 << 8 | b2 << 16 | b3 << 24  ->  b0 | b1 << 2 | b2 << 4 | b3 << 6
        np.right_shift(w, 6, out=t)
        np.bitwise_or(t, w, out=t)  # bits 0-7: b0 | b1 << 2; bits 16-23: b2 | b3 << 2
        np.right_shift(t, 12, out=t2)
        np.bitwise_or(t, t2, out=t)  # bits 4-7 gain b2 << 4 | b3 << 6
    np.copyto(dst, t, casting="unsafe")


def unpack_bits(packed: np.ndarray, bits: int, n: int, out: np.ndarray | None = None
                ) -> np.ndarray:
    """Inverse of pack_bits: n uint8 codes (out, if given, must hold whole packed bytes:
    8 // bits * packed.size codes)."""
    if packed.size != packed_size(n, bits):
        raise ValueError(f"unpack_bits: {packed.size} bytes cannot hold {n} {bits}-bit codes")
    if bits == 8:
        if out is None:
            return np.array(packed, dtype=np.uint8)
        out[:n] = packed
        return out[:n]
    if bits not in _WORD:
        raise ValueError(f"unpack_bits: bits must be one of {VALID_BITS}, got {bits}")
    per = 8 // bits
    res = np.empty(packed.size * per, dtype=np.uint8) if out is None else out
    words = res[: packed.size * per].view(_WORD[bits])
    t = np.empty(BLOCK // per, dtype=_WORD[bits])
    for i in range(0, packed.size, BLOCK // per):
        p = packed[i: i + BLOCK // per]
        w = words[i: i + p.size]
        tt = t[: p.size]
        w[:] = p
        if bits == 4:  # byte 0: p & 15, byte 1: p >> 4
            np.left_shift(w, 4, out=tt)
            np.bitwise_or(w, tt, out=w)
            np.bitwise_and(w, 0x0F0F, out=w)
        else:  # byte i: bits 2i..2i+1 of p
            for shift in (6, 12, 18):
                np.left_shift(p, shift, out=tt, dtype=tt.dtype, casting="unsafe")
                np.bitwise_or(w, tt, out=w)
            np.bitwise_and(w, 0x03030303, out=w)
    return res[:n]
