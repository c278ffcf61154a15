"""16-bit float casts: IEEE fp16 with a power-of-two pre-scale, and bf16 by rounding.

fp16 has a narrow exponent range: model updates of ~1e-3 put many entries in its subnormal range
(< 6.1e-5), where relative precision is lost. Multiplying by 2**exp first (exact in binary) moves
the largest magnitude into [2**14, 2**15), so the whole vector uses fp16's normal range and cannot
overflow; decode divides again. bf16 keeps float32's exponent range and needs no scale.
"""

from __future__ import annotations

import math

import numpy as np

FP16_TOP_EXP = 14  # largest |x| * 2**exp lies in [2**14, 2**15): far from the 65504 limit


def fp16_exponent(maxabs: float) -> int:
    """The exponent e with maxabs * 2**e in [2**14, 2**15); 0 for an all-zero vector."""
    if maxabs == 0.0:
        return 0
    _, e = math.frexp(maxabs)  # maxabs = m * 2**e, m in [0.5, 1)
    # Keep 2**exp a normal float32 in both directions (|exp| <= 126).
    return int(max(-126, min(126, FP16_TOP_EXP + 1 - e)))


def to_fp16(x: np.ndarray, exp: int, out: np.ndarray) -> None:
    """Write fp16 bit patterns (little-endian uint16) of x * 2**exp into out."""
    scaled = x * np.float32(2.0 ** exp) if exp else x
    out.view("<f2")[:] = scaled


def from_fp16(bits: np.ndarray, exp: int) -> np.ndarray:
    res = bits.view("<f2").astype(np.float32)
    if exp:
        res *= np.float32(2.0 ** -exp)
    return res


def to_bf16(x: np.ndarray, out: np.ndarray) -> None:
    """Write bf16 bit patterns of finite float32 x, rounded to nearest, ties to even.

    bf16 is the top half of the float32 bit pattern; adding 0x7FFF plus the lowest kept bit
    before the shift implements round-half-even on the dropped 16 bits."""
    u = x.view(np.uint32)
    t = u >> 16
    t &= 1
    t += 0x7FFF
    t += u
    t >>= 16
    np.copyto(out.view("<u2"), t, casting="unsafe")


def from_bf16(bits: np.ndarray) -> np.ndarray:
    res = bits.view("<u2").astype(np.uint32)
    res <<= 16
    return res.view(np.float32)
