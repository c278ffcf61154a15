"""The dense codecs: identity float32, fp16/bf16 casts, and chunked uniform quantization."""

from __future__ import annotations

import numpy as np

from feddm_hpc.compression import floatcast
from feddm_hpc.compression.base import Compressor, finite_range, register_decoder
from feddm_hpc.compression.header import (
    CODEC_BF16,
    CODEC_FP16,
    CODEC_NONE,
    CODEC_QUANT,
    HEADER_SIZE,
    Header,
)
from feddm_hpc.compression.quantize import (
    VALID_BITS,
    dequantize,
    num_chunks,
    pack_bits,
    packed_size,
    quant_body_size,
    quantize,
    unpack_bits,
)

FLAG_STOCHASTIC = 1


@register_decoder
class IdentityCompressor(Compressor):
    """Raw little-endian float32: exact, 4 bytes per value."""

    name = "none"
    codec_ids = (CODEC_NONE,)
    lossy = False

    def input_slot(self, n):
        # The body is the vector itself: the stage before the encode (the update, local - start)
        # may write it straight into the send buffer's next payload, and the encode then writes
        # only the header (at 40M parameters one pass over 161 MB a client less).
        if self.payload_allocator is None:
            return None
        return self.payload_allocator(HEADER_SIZE + 4 * n)[HEADER_SIZE:].view("<f4")

    def _encode(self, x, rng):
        payload = self._new_payload(Header(CODEC_NONE, 32, n=x.size), 4 * x.size)
        body = payload[HEADER_SIZE:].view("<f4")
        if not (x.dtype == body.dtype and x.size == body.size
                and x.ctypes.data == body.ctypes.data):   # not written there already
            body[:] = x
        return payload

    @classmethod
    def body_size(cls, header):
        return 4 * header.n

    @classmethod
    def decode_body(cls, header, body, out=None):
        if out is None:
            return body.view("<f4").astype(np.float32)
        out[:] = body.view("<f4")
        return out


@register_decoder
class Float16Compressor(Compressor):
    """16-bit floats: IEEE fp16 with a power-of-two pre-scale, or bf16 rounded to nearest."""

    name = "quant"
    codec_ids = (CODEC_FP16, CODEC_BF16)

    def __init__(self, fmt: str = "fp16", **kwargs) -> None:
        super().__init__(**kwargs)
        if fmt not in ("fp16", "bf16"):
            raise ValueError(f"Float16Compressor: format must be 'fp16' or 'bf16', got {fmt!r}")
        self.fmt = fmt

    def _encode(self, x, rng):
        lo, hi = finite_range(x)
        if self.fmt == "bf16":
            payload = self._new_payload(Header(CODEC_BF16, 16, n=x.size), 2 * x.size)
            floatcast.to_bf16(x, payload[32:])
        else:
            exp = floatcast.fp16_exponent(max(-lo, hi))
            payload = self._new_payload(Header(CODEC_FP16, 16, n=x.size, exp=exp), 2 * x.size)
            floatcast.to_fp16(x, exp, payload[32:])
        return payload

    @classmethod
    def body_size(cls, header):
        return 2 * header.n

    @classmethod
    def decode_body(cls, header, body, out=None):
        if header.codec == CODEC_BF16:
            return floatcast.from_bf16(body, out)
        return floatcast.from_fp16(body, header.exp, out)

    def __repr__(self) -> str:
        return f"Float16Compressor(fmt={self.fmt!r}, error_feedback={self.error_feedback})"


def _check_quant_header(header: Header) -> None:
    if header.bits not in VALID_BITS:
        raise ValueError(f"quant payload has bits={header.bits}; valid: {VALID_BITS}")
    if header.chunk <= 0:
        raise ValueError(f"quant payload has chunk size {header.chunk}; must be positive")


@register_decoder
class QuantCompressor(Compressor):
    """Uniform 8/4/2-bit quantization with a float32 (min, scale) per chunk of values.

    Body: float32 mins[C], float32 scales[C], then the codes bit-packed (C = ceil(n / chunk))."""

    name = "quant"
    codec_ids = (CODEC_QUANT,)

    def __init__(self, bits: int = 8, chunk_size: int = 1024, stochastic: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if bits not in VALID_BITS:
            raise ValueError(f"QuantCompressor: bits must be one of {VALID_BITS}, got {bits}")
        if int(chunk_size) <= 0:
            raise ValueError(f"QuantCompressor: chunk_size must be positive, got {chunk_size}")
        self.bits, self.chunk, self.stochastic = int(bits), int(chunk_size), bool(stochastic)

    def _encode(self, x, rng):  # quantize() rejects NaN/Inf from its per-chunk min/max
        if self.stochastic and rng is None:
            raise ValueError("stochastic rounding needs a numpy Generator (rng is None)")
        n, bits, chunk = x.size, self.bits, self.chunk
        header = Header(CODEC_QUANT, bits, FLAG_STOCHASTIC * self.stochastic, n=n, chunk=chunk)
        payload = self._new_payload(header, quant_body_size(n, bits, chunk))
        c = num_chunks(n, chunk)
        body = payload[32:]
        # 8-bit codes go straight into the payload; narrower ones via a reused buffer.
        codes_out = body[8 * c:] if bits == 8 else self._buffer("codes", n, np.uint8)
        mins, scales, codes = quantize(x, bits, chunk, rng if self.stochastic else None,
                                       out=codes_out)
        body[: 4 * c].view("<f4")[:] = mins
        body[4 * c: 8 * c].view("<f4")[:] = scales
        if bits != 8:
            pack_bits(codes, bits, out=body[8 * c:])
        return payload

    @classmethod
    def body_size(cls, header):
        _check_quant_header(header)
        return quant_body_size(header.n, header.bits, header.chunk)

    @classmethod
    def decode_body(cls, header, body, out=None):
        n, bits, chunk = header.n, header.bits, header.chunk
        c = num_chunks(n, chunk)
        mins = body[: 4 * c].view("<f4").astype(np.float32)
        scales = body[4 * c: 8 * c].view("<f4").astype(np.float32)
        packed = body[8 * c: 8 * c + packed_size(n, bits)]
        codes = packed if bits == 8 else unpack_bits(packed, bits, n)
        return dequantize(codes, mins, scales, chunk, out)

    def __repr__(self) -> str:
        return (f"QuantCompressor(bits={self.bits}, chunk_size={self.chunk}, "
                f"stochastic={self.stochastic}, error_feedback={self.error_feedback}, "
                f"lossless={self.lossless!r})")
