"""Optional lossless stage over a payload's body (zlib from the stdlib, zstd if installed).

It runs after the codec and is kept only when it makes the payload smaller; the header's
lossless byte says which stage was applied, so decode needs no configuration.
"""

from __future__ import annotations

import zlib

import numpy as np

from feddm_hpc.compression.header import HEADER_SIZE, LOSSLESS_IDS, LOSSLESS_OFFSET
from feddm_hpc.errors import ConfigError

# Fast levels: the payload is already dense (quantized codes, fp16 bits), so higher levels buy
# little and the stage runs once per client per round.
ZLIB_LEVEL = 1
ZSTD_LEVEL = 3

try:  # optional dependency
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None


def zstd_available() -> bool:
    return _zstd is not None


def check_method(method: str) -> None:
    """Raise ConfigError naming compression.lossless for an unknown or unavailable method."""
    if method not in LOSSLESS_IDS:
        raise ConfigError(f"compression.lossless: unknown value {method!r}; valid values: "
                          + ", ".join(LOSSLESS_IDS))
    if method == "zstd" and _zstd is None:
        raise ConfigError("compression.lossless: 'zstd' needs the 'zstandard' package, which is "
                          "not installed (pip install zstandard), or use 'zlib'")


def compress(payload: np.ndarray, method: str) -> np.ndarray:
    """Return payload with its body compressed by `method`, or payload itself if not smaller."""
    if method == "none" or payload.size <= HEADER_SIZE:
        return payload
    body = payload[HEADER_SIZE:]
    if method == "zlib":
        packed = zlib.compress(body, ZLIB_LEVEL)
    else:
        check_method(method)
        packed = _zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if len(packed) >= body.size:
        return payload
    out = np.empty(HEADER_SIZE + len(packed), dtype=np.uint8)
    out[:HEADER_SIZE] = payload[:HEADER_SIZE]
    out[LOSSLESS_OFFSET] = LOSSLESS_IDS[method]
    out[HEADER_SIZE:] = np.frombuffer(packed, dtype=np.uint8)
    return out


def decompress(body: np.ndarray, lossless_id: int, expected: int) -> np.ndarray:
    """Undo the lossless stage; the result must be exactly `expected` bytes."""
    if lossless_id == 0:
        return body
    try:
        if lossless_id == LOSSLESS_IDS["zlib"]:
            d = zlib.decompressobj()
            raw = d.decompress(body, expected + 1)
            ok = d.eof and not d.unused_data
        else:
            if _zstd is None:
                raise ValueError("compression payload is zstd-compressed but the 'zstandard' "
                                 "package is not installed")
            raw = _zstd.ZstdDecompressor().decompress(body, max_output_size=expected + 1)
            ok = True
    except (zlib.error, getattr(_zstd, "ZstdError", zlib.error)) as exc:
        raise ValueError(f"compression payload body does not decompress: {exc}") from None
    if not ok or len(raw) != expected:
        raise ValueError(f"compression payload body decompresses to {len(raw)} bytes, "
                         f"header implies {expected} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8)
