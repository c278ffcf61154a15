"""16-bit float casts: IEEE fp16 with a power-of-two pre-scale, and bf16 by rounding.

fp16 has a narrow exponent range: model updates of ~1e-3 put many entries in its subnormal range
(< 6.1e-5), where relative precision is lost. Multiplying by 2**exp first (exact in binary) moves
the largest magnitude into [2**14, 2**15), so the whole vector uses fp16's normal range and cannot
overflow; decode divides again. bf16 keeps float32's exponent range and needs no scale.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 1 << 16
FP16_TOP_EXP = 14  # largest |x| * 2**exp lies in [2**14, 2**15): far from the 65504 limit


def fp16_exponent(maxabs: float) -> int:
    """The exponent e with maxabs * 2**e in [2**14, 2**15); 0 for an all-zero vector."""
    if maxabs == 0.0:
        return 0
    _, e = math.frexp(maxabs)  # maxabs = m * 2**e, m in [0.5, 1)
    # Keep 2**exp a normal float32 in both directions (|exp| <= 126).
    return int(max(-126, min(126, FP16_TOP_EXP + 1 - e)))


def to_fp16(x: np.ndarray, exp: int, out: np.ndarray) -> None:
    """Write fp16 bit patterns (little-endian) of x * 2**exp into the byte buffer out."""
    o = out.view("<f2")
    scale = np.float32(2.0 ** exp)
    tmp = np.empty(min(BLOCK, x.size), dtype=np.float32)
    for i in range(0, x.size, BLOCK):  # cache-sized blocks: no full-size temporary
        t = tmp[: min(BLOCK, x.size - i)]
        np.multiply(x[i: i + BLOCK], scale, out=t)
        o[i: i + BLOCK] = t


def from_fp16(bits: np.ndarray, exp: int, out: np.ndarray | None = None) -> np.ndarray:
    res = np.empty(bits.size // 2, dtype=np.float32) if out is None else out
    res[:] = bits.view("<f2")
    if exp:
        res *= np.float32(2.0 ** -exp)
    return res


def to_bf16(x: np.ndarray, out: np.ndarray) -> None:
    """Write bf16 bit patterns of finite float32 x, rounded to nearest, ties to even.

    bf16 is the top half of the float32 bit pattern; adding 0x7FFF plus the lowest kept bit
    before the shift implements round-half-even on the dropped 16 bits. Finite values above the
    largest finite bf16 (|x| >= 0x7F7F8000, e.g. 3.4e38) would round into the exponent, i.e. to
    inf; they saturate to +-0x7F7F instead (NaN and Inf inputs are left as the rounding gives)."""
    u = x.view(np.uint32)
    o = out.view("<u2")
    tmp = np.empty(min(BLOCK, x.size), dtype=np.uint32)
    mag = np.empty(tmp.size, dtype=np.uint16)
    for i in range(0, x.size, BLOCK):
        a = u[i: i + BLOCK]
        t = tmp[: a.size]
        np.right_shift(a, 16, out=t)
        np.bitwise_and(t, 1, out=t)
        np.add(t, 0x7FFF, out=t)
        np.add(t, a, out=t)
        np.right_shift(t, 16, out=t)
        r = o[i: i + BLOCK]
        np.copyto(r, t, casting="unsafe")
        m = mag[: a.size]
        np.bitwise_and(r, 0x7FFF, out=m)
        if m.max(initial=0) >= 0x7F80:  # an inf or NaN result: rare, so only then look closer
            carried = (m == 0x7F80) & ((a & 0x7F800000) != 0x7F800000)
            r[carried] -= 1  # 0x7F80 -> 0x7F7F, the largest finite bf16, sign kept


def from_bf16(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    res = np.empty(bits.size // 2, dtype=np.float32) if out is None else out
    r = res.view(np.uint32)
    r[:] = bits.view("<u2")
    r <<= 16
    return res
