"""Reader (and a small writer, for tests) of the IDX format used by MNIST and Fashion-MNIST.

IDX layout: 2 zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32, then the data in big-endian order. Files come gzip-compressed (`.gz`) or raw;
we sniff the gzip magic instead of trusting the suffix, since users rename files.

Every check fails with a DataError that names the file: a half-downloaded file must not turn
into a silently shorter dataset.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from feddm_hpc.errors import DataError

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _fail(path: str, problem: str, hint: str) -> DataError:
    msg = f"{path}: {problem}"
    return DataError(f"{msg}; {hint}" if hint else msg)


def read_raw_bytes(path: str, hint: str = "") -> bytes:
    """The file's decompressed bytes (gzip or raw), with missing/corrupt files as DataError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _fail(path, "file not found", hint) from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror})", hint) from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            # EOFError is what a truncated .gz raises: say so plainly.
            raise _fail(path, f"corrupt or truncated gzip file ({e})", hint) from None
    return data


def parse_idx(data: bytes, path: str = "<bytes>", hint: str = "") -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array, validating header and exact length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _fail(path, "not an IDX file (bad magic number)", hint)
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise _fail(path, f"not an IDX file (unknown type code 0x{code:02x})", hint)
    if ndim == 0:
        raise _fail(path, "not an IDX file (zero dimensions)", hint)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fail(path, "truncated IDX header", hint)
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise _fail(path, f"IDX file {what}: header {dims} needs {expected} data bytes, "
                          f"found {got}", hint)
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # Native byte order and a private writable copy (frombuffer views the immutable bytes).
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str, hint: str = "") -> np.ndarray:
    """Read one IDX file (gzip or raw). `hint` (how to get the file) is appended to errors."""
    return parse_idx(read_raw_bytes(path, hint), path, hint)


def read_idx_images(path: str, hint: str = "") -> np.ndarray:
    """uint8 images [N, H, W, 1] from a 3-D unsigned-byte IDX file."""
    arr = read_idx(path, hint)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise _fail(path, f"expected 3-D uint8 IDX images, got {arr.ndim}-D {arr.dtype}", hint)
    return arr[..., None]


def read_idx_labels(path: str, hint: str = "") -> np.ndarray:
    """int64 labels [N] from a 1-D integer IDX file."""
    arr = read_idx(path, hint)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise _fail(path, f"expected 1-D integer IDX labels, got {arr.ndim}-D {arr.dtype}", hint)
    return arr.astype(np.int64)


def write_idx(path: str, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` as IDX (gzip when `compress`, default: when path ends in .gz)."""
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write {array.dtype} array of {array.ndim} dims as IDX")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(native.newbyteorder(">"), copy=False).tobytes()
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    payload = header + body
    with open(path, "wb") as f:
        # mtime=0 keeps the output byte-identical across runs (stable MD5s in tests).
        f.write(gzip.compress(payload, mtime=0) if compress else payload)
