"""The fixed 32-byte header that starts every compression payload.

Layout (little-endian), so a payload describes itself and decode can validate it:

    offset  size  field
    0       2     magic  b"FD"
    2       1     version (1)
    3       1     codec id (see CODEC_NAMES)
    4       1     bits   (32 none, 16 fp16/bf16, 8/4/2 quant; value bits for topk)
    5       1     flags  (codec-specific)
    6       1     lossless stage applied to the body: 0 none, 1 zlib, 2 zstd
    7       1     reserved (0)
    8       8     n      vector length
    16      8     k      entries kept (topk), else 0
    24      4     chunk  quantization chunk size, else 0
    28      4     exp    power-of-two pre-scale exponent (fp16), else 0

The body follows at offset 32. The header itself is never compressed, so a corrupt or foreign
payload is rejected before any decompression runs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

MAGIC = b"FD"
VERSION = 1
HEADER_SIZE = 32
LOSSLESS_OFFSET = 6
_STRUCT = struct.Struct("<2sBBBBBBQQIi")
assert _STRUCT.size == HEADER_SIZE

CODEC_NONE, CODEC_FP16, CODEC_BF16, CODEC_QUANT, CODEC_TOPK = 0, 1, 2, 3, 4
CODEC_NAMES = {CODEC_NONE: "none", CODEC_FP16: "fp16", CODEC_BF16: "bf16",
               CODEC_QUANT: "quant", CODEC_TOPK: "topk"}
LOSSLESS_IDS = {"none": 0, "zlib": 1, "zstd": 2}


class Header(NamedTuple):
    codec: int
    bits: int
    flags: int = 0
    lossless: int = 0
    n: int = 0
    k: int = 0
    chunk: int = 0
    exp: int = 0


def new_payload(header: Header, body_size: int, allocate=None) -> np.ndarray:
    """A payload of header + body_size bytes: header written, body uninitialised. `allocate`
    (nbytes -> uint8 array): where the payload goes, e.g. straight into a send buffer."""
    out = np.empty(HEADER_SIZE + body_size, dtype=np.uint8) if allocate is None \
        else allocate(HEADER_SIZE + body_size)
    _STRUCT.pack_into(out, 0, MAGIC, VERSION, header.codec, header.bits, header.flags,
                      header.lossless, 0, header.n, header.k, header.chunk, header.exp)
    return out


def as_payload(payload) -> np.ndarray:
    """View bytes-like or uint8 arrays as a 1-D uint8 array without copying."""
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8 or payload.ndim != 1:
            raise ValueError(f"payload must be a 1-D uint8 array, got {payload.dtype} "
                             f"with shape {payload.shape}")
        return payload
    return np.frombuffer(payload, dtype=np.uint8)


def parse_header(payload: np.ndarray, num_params: int) -> Header:
    """Read and validate the header; raises ValueError naming what is wrong."""
    if payload.size < HEADER_SIZE:
        raise ValueError(f"compression payload has {payload.size} bytes, shorter than the "
                         f"{HEADER_SIZE}-byte header (truncated or not a payload)")
    magic, version, codec, bits, flags, lossless, _, n, k, chunk, exp = _STRUCT.unpack_from(
        payload[:HEADER_SIZE].tobytes())
    if magic != MAGIC:
        raise ValueError(f"not a feddm_hpc compression payload (magic {magic!r}, "
                         f"expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"compression payload version {version} is not supported "
                         f"(this build reads version {VERSION})")
    if codec not in CODEC_NAMES:
        raise ValueError(f"unknown codec id {codec} in compression payload; known ids: "
                         + ", ".join(f"{i}={s}" for i, s in CODEC_NAMES.items()))
    if lossless not in LOSSLESS_IDS.values():
        raise ValueError(f"unknown lossless stage id {lossless} in compression payload")
    if n != num_params:
        raise ValueError(f"compression payload holds {n} values, expected {num_params}")
    return Header(codec, bits, flags, lossless, n, k, chunk, exp)
