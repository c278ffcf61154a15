"""A cache of decoded image arrays, so a run does not decode every image file on every rank each time.

One entry is an uncompressed .npz (`images` uint8 [N,H,W,C], optional `labels` int64 [N], `classes`)
under `$FEDDM_HPC_CACHE/image_folder/` (default `~/.cache/feddm_hpc/image_folder/`, the folder of
the cached LeNet extractors), named by a SHA-256 key over the folder's absolute path, the decoding
options and every selected file's relative path, size and modification time: editing, adding or
removing a file, or changing an option, gives a new key (old entries are never reused; delete the
folder to reclaim the space).

One process decodes: the others (the other ranks of the job, or other jobs) wait on an exclusive
lock file beside the entry and then read what it wrote. The entry is written to a temporary file
and renamed into place, so a reader never sees half a file. Where the cache folder cannot be used
(read-only home, a file system without locks) the images are decoded without it, with one note.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

CACHE_VERSION = 1  # bump when decoding changes, so old entries are not reused

Arrays = Tuple[np.ndarray, Optional[np.ndarray], list]  # images, labels, class names


def cache_root() -> Path:
    return Path(os.environ.get("FEDDM_HPC_CACHE") or Path.home() / ".cache" / "feddm_hpc") / "image_folder"


def cache_key(folder: str, options: dict, files) -> str:
    """files: (relative path, size, mtime_ns) of every selected file, in dataset order."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "folder": os.path.abspath(folder),
                                   "options": options}, sort_keys=True).encode())
    for rel, size, mtime_ns in files:
        h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def _read(path: Path) -> Optional[Arrays]:
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
            classes = [str(c) for c in z["classes"]]
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged entry (disk full while renaming, manual edits): re-decode
        print(f"[feddm_hpc] note: ignoring unreadable image cache {path} ({exc})", file=sys.stderr)
        return None
    if images.dtype != np.uint8 or images.ndim != 4:
        return None
    return images, labels, classes


def _write(path: Path, arrays: Arrays) -> None:
    images, labels, classes = arrays
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            extra = {} if labels is None else {"labels": labels}
            np.savez(f, images=images, classes=np.array(classes, dtype=str), **extra)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the entry from a shared cache's readers
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_decode(name: str, key: str, decode: Callable[[], Arrays],
                  root: Optional[Path] = None) -> Tuple[Arrays, bool]:
    """The arrays of entry `key` (named `name`-`key[:16]`.npz), decoding and storing them on a miss.
    Returns (arrays, hit)."""
    import fcntl  # POSIX only, like MPI clusters; imported here so the module imports anywhere

    root = root or cache_root()
    path = root / f"{name}-{key[:16]}.npz"
    found = _read(path)
    if found is not None:
        return found, True
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        print(f"[feddm_hpc] note: image cache {root} not usable ({exc.strerror}); decoding without it",
              file=sys.stderr)
        return decode(), False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the other ranks wait here while one decodes
        except OSError:
            pass  # no locks on this file system: each process decodes, the rename keeps it whole
        found = _read(path)  # written by the process that held the lock before us
        if found is not None:
            return found, True
        arrays = decode()
        try:
            _write(path, arrays)
        except OSError as exc:
            print(f"[feddm_hpc] note: could not write the image cache {path} ({exc})", file=sys.stderr)
        return arrays, False
