"""Sample grids as PNG files, written with zlib + struct only (no Pillow dependency).

The writer produces 8-bit grayscale (C=1) or RGB (C=3) PNGs with filter type 0 on every row; the
reader is the minimal inverse for those files, used by tests and tooling, not a general decoder.
"""
import math
import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (0 grayscale, 2 truecolour)
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


def to_uint8(images) -> np.ndarray:
    """[-1, 1] floats (numpy or torch) -> uint8 [0, 255]; -1 -> 0, 1 -> 255."""
    if hasattr(images, "detach"):  # a torch tensor, possibly on an accelerator
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images, dtype=np.float64)
    # A diverged model can emit NaN; show it as mid-grey rather than failing the whole run.
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.rint((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def make_grid(images, nrow=None, padding: int = 2) -> np.ndarray:
    """[N,C,H,W] in [-1,1] -> uint8 [H',W',C] grid, `nrow` images a row, black padding around all."""
    pix = to_uint8(images)
    if pix.ndim != 4 or pix.shape[1] not in _COLOR_TYPES or pix.shape[0] < 1:
        raise ValueError(f"images must be [N,C,H,W] with N >= 1 and C in (1, 3), got {pix.shape}")
    n, c, h, w = pix.shape
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    ncol = min(ncol, n)
    nrows = math.ceil(n / ncol)
    grid = np.zeros((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = pix[k].transpose(1, 2, 0)
    return grid


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H,W] or [H,W,1|3] -> PNG bytes."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    if c not in _COLOR_TYPES:
        raise ValueError(f"PNG pixels must have 1 or 3 channels, got {c}")
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    # Each scanline is prefixed with its filter byte, 0 = None.
    raw = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * c)], axis=1)
    return (_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _chunk(b"IEND", b""))


def save_image_grid(images, path, nrow=None) -> None:
    """Write [N,C,H,W] images in [-1,1] as one PNG grid at `path`, atomically."""
    data = encode_png(make_grid(images, nrow))
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    # Write then rename: a reader (or a killed job) never sees a half-written PNG.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_png(path) -> np.ndarray:
    """Read an 8-bit grayscale/RGB, non-interlaced, filter-0 PNG -> uint8 [H,W] or [H,W,3]."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, header, idat = len(_SIGNATURE), None, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: CRC mismatch in {kind!r} chunk")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 8 or ctype not in _CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {ctype}, "
                         f"interlace {interlace})")
    c = _CHANNELS[ctype]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * c)
    if raw[:, 0].any():
        raise ValueError(f"{path}: only filter type 0 is supported")
    pixels = raw[:, 1:].reshape(h, w, c)
    return pixels[:, :, 0].copy() if c == 1 else pixels.copy()
