"""The safetensors file format (https://huggingface.co/docs/safetensors), written and read with
numpy alone, so exporting a model needs no extra package:

    8 bytes    N, the header's length (unsigned little-endian 64-bit)
    N bytes    a JSON object: name -> {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}
               and "__metadata__": {str: str}; padded with spaces to a multiple of 8 bytes
    the rest   the tensors' bytes (little-endian, C order), one after the other, no gaps

Tensors are written in name order. The reader checks what the format promises (offsets inside
the file, contiguous and matching dtype x shape) and names the file in a CheckpointError.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from feddm_hpc.errors import CheckpointError

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "|u1"}
_CODES = {np.dtype(v).str: k for k, v in DTYPES.items()}


def write_safetensors(path, tensors: Dict[str, np.ndarray],
                      metadata: Optional[Dict[str, str]] = None) -> Path:
    """Writes `tensors` (name -> array) and string `metadata` to `path` (temporary name, then
    renamed). Returns the path."""
    path = Path(path)
    header, arrays, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        code = _CODES.get(a.dtype.str)
        if code is None:
            raise ValueError(f"{name}: dtype {a.dtype} has no safetensors code here")
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for a in arrays:
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_safetensors(path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """(name -> array, metadata) of a safetensors file; CheckpointError naming it when it is
    missing, truncated or inconsistent."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", {}) or {}
        data = memoryview(blob)[8 + n:]
        tensors, end = {}, 0
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, stop = (int(v) for v in info["data_offsets"])
            dtype = np.dtype(DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            if begin != end or stop > len(data) or stop - begin != dtype.itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name!r} has offsets {begin}-{stop} that do not fit")
            tensors[name] = np.frombuffer(data[begin:stop], dtype=dtype).reshape(shape).copy()
            end = stop
        if end != len(data):
            raise ValueError(f"{len(data) - end} bytes after the last tensor")
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    return tensors, dict(metadata)
