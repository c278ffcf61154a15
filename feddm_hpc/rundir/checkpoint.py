"""HDF5 round checkpoints: atomic save, checksum-verified load, latest-complete lookup.

Layout (format feddm_hpc.checkpoint/1):
  attrs    format, version, round, config_yaml, param_fingerprint, rng_scheme, image_shape,
           checksum_scheme, checksum
  global/params, global/ema        1-D float32, the flattened global model and its EMA
  spec                             parameter names and shapes (text), for humans and validation
  strategy/<name>                  server strategy state
  clients/<name>                   per-client state (codec residuals, SCAFFOLD controls), keyed
                                   by client id ("residual/<id>", "control/<id>")
  server/<name>                    other server state (the clients' reference model of a
                                   compressed downlink)
  metrics                          metrics.jsonl lines so far (text)
The checksum is a SHA-256 over every dataset and attribute, so a truncated or bit-flipped file is
detected at load. It hashes a canonical byte form of each value (strings as UTF-8, numpy values as
dtype.str, shape and raw bytes), so it does not depend on numpy's version or print options. Files
written with this digest carry the attribute checksum_scheme = "sha256-canonical/2"; a file without
it was written by earlier code, whose digest hashed repr() of the attributes, and is verified with
that legacy digest (as numpy 2 and as numpy 1.x print them, whatever the current print options).
Files are written under a temporary name, flushed, fsynced, then renamed: a crash mid-write never
leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import h5py
import numpy as np

from feddm_hpc import __version__
from feddm_hpc.errors import CheckpointError

FORMAT = "feddm_hpc.checkpoint/1"
# Every random draw is derived from (seed, round, client_id): no generator state needs saving.
CHECKSUM_SCHEME = "sha256-canonical/2"
RNG_SCHEME = "counter-based: numpy PCG64 / torch generators seeded from (seed, round, client_id)"
_NAME = re.compile(r"^round-(\d{6})\.h5$")


@dataclass
class CheckpointData:
    round: int
    config_yaml: str
    params: np.ndarray
    ema: np.ndarray
    spec_text: str = ""
    param_fingerprint: str = ""
    strategy: Dict[str, np.ndarray] = field(default_factory=dict)
    clients: Dict[str, np.ndarray] = field(default_factory=dict)
    metrics_lines: List[str] = field(default_factory=list)
    image_shape: tuple = ()         # (C, H, W) of the data the model was trained on
    server: Dict[str, np.ndarray] = field(default_factory=dict)


def checkpoint_name(round_index: int) -> str:
    return f"round-{round_index:06d}.h5"


def _canonical(value) -> bytes:
    """A byte form of an attribute or dataset value that is fixed by its type and contents alone."""
    if isinstance(value, str):
        body = b"str:" + value.encode("utf-8")
    elif isinstance(value, bytes):
        body = b"bytes:" + value
    else:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # variable-length strings: each element in turn
            body = b"object" + str(arr.shape).encode() + b"".join(_canonical(v) for v in arr.ravel())
        else:
            arr = np.ascontiguousarray(arr)
            body = arr.dtype.str.encode() + str(arr.shape).encode() + b":" + arr.tobytes()
    return len(body).to_bytes(8, "little") + body


def _hash_canonical(h, value) -> None:
    """h.update(_canonical(value)), without building the bytes: a large array is hashed where
    it lies (_canonical copies it three times)."""
    if isinstance(value, (str, bytes)):
        h.update(_canonical(value))
        return
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        h.update(_canonical(value))
        return
    arr = np.ascontiguousarray(arr)
    head = arr.dtype.str.encode() + str(arr.shape).encode() + b":"
    h.update((len(head) + arr.nbytes).to_bytes(8, "little"))
    h.update(head)
    h.update(arr.reshape(-1).view(np.uint8))


# Datasets at least this large are hashed from the array they were written from (same dtype and
# shape as the file's), not read back: at 40M parameters the read-back doubled the save's time.
_HASH_FROM_MEMORY_BYTES = 1 << 20


def _digest(f: h5py.File, written: Optional[Dict[str, np.ndarray]] = None) -> str:
    """SHA-256 over the canonical bytes of the attributes (sorted) and datasets (in HDF5's visit
    order). `written`: dataset name -> the array just written there; used instead of reading
    the dataset back where its dtype and shape are the file's."""
    h = hashlib.sha256()
    for key in sorted(k for k in f.attrs if k != "checksum"):
        h.update(_canonical(key))
        h.update(_canonical(f.attrs[key]))
    written = written or {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            h.update(_canonical(name))
            source = written.get(name)
            if source is None or source.dtype != obj.dtype or source.shape != obj.shape:
                source = obj[()]
            _hash_canonical(h, source)
    f.visititems(visit)
    return h.hexdigest()


def _legacy_digest(f: h5py.File, legacy) -> str:
    """The digest of files written before checksum_scheme: repr() of each attribute, printed
    with numpy's print option `legacy` (False: numpy 2's reprs, "1.25": numpy 1.x's)."""
    h = hashlib.sha256()
    with np.printoptions(legacy=legacy):
        for key in sorted(k for k in f.attrs if k != "checksum"):
            h.update(key.encode())
            h.update(repr(f.attrs[key]).encode())

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            h.update(name.encode())
            if isinstance(data, bytes):
                h.update(data)
            else:
                arr = np.ascontiguousarray(data)
                h.update(str(arr.dtype).encode() + str(arr.shape).encode())
                h.update(arr.tobytes())
    f.visititems(visit)
    return h.hexdigest()


def _verified(f: h5py.File) -> bool:
    stored = f.attrs.get("checksum")
    if "checksum_scheme" in f.attrs:
        return f.attrs["checksum_scheme"] == CHECKSUM_SCHEME and stored == _digest(f)
    return any(stored == _legacy_digest(f, legacy) for legacy in (False, "1.25"))


def _reason(exc: OSError) -> str:
    """One line: HDF5 wraps the system error in a multi-line message; dig out its errno."""
    found = re.search(r"errno = (\d+)", str(exc))
    if found:
        return os.strerror(int(found.group(1)))
    return (exc.strerror or str(exc)).splitlines()[0]


class _DigestAhead:
    """The digest of a file being written, computed from the values while h5py writes them.

    SHA-256 runs at about the speed of the write itself (0.5-1 GB/s on one core), so a thread
    hashes the attributes and then every dataset, in the order HDF5 will visit them (names
    sorted component by component), from the values in memory (hashlib releases the GIL) while
    the writer thread writes. `result` then checks the prediction against the file: the visit
    order, each small dataset's canonical bytes as read back, each large array's dtype and
    shape; on any difference it falls back to hashing the file (_digest), so the stored digest
    is always the one load verifies."""

    def __init__(self, f: h5py.File, datasets: List[tuple]):
        import threading

        self.attrs = [(k, f.attrs[k]) for k in sorted(f.attrs) if k != "checksum"]
        self.order = sorted(datasets, key=lambda item: item[0].split("/"))
        self.small: Dict[str, bytes] = {}
        self.error: Optional[BaseException] = None
        self.digest: Optional[str] = None
        self.thread = threading.Thread(target=self._run, name="checkpoint-digest", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            h = hashlib.sha256()
            for key, value in self.attrs:
                h.update(_canonical(key))
                h.update(_canonical(value))
            for name, value in self.order:
                h.update(_canonical(name))
                if _large_array(value):
                    _hash_canonical(h, value)
                else:
                    self.small[name] = _canonical(value)
                    h.update(self.small[name])
            self.digest = h.hexdigest()
        except BaseException as exc:   # noqa: BLE001 - reported by result(): fall back
            self.error = exc

    def result(self, f: h5py.File, written: Dict[str, np.ndarray]) -> str:
        self.thread.join()
        names: List[str] = []
        same = self.error is None

        def check(name, obj):
            nonlocal same
            if not isinstance(obj, h5py.Dataset) or not same:
                return
            names.append(name)
            if name in self.small:
                same = _canonical(obj[()]) == self.small[name]
            else:
                source = written.get(name)
                same = source is not None and source.dtype == obj.dtype and source.shape == obj.shape
        f.visititems(check)
        if same and names == [name for name, _ in self.order]:
            return self.digest
        return _digest(f, written)


# From this many bytes of large arrays on, the digest is computed alongside the write (below,
# a thread's start and hand-over cost more than they save on a busy machine).
_DIGEST_AHEAD_BYTES = 32 << 20


def _large_array(value) -> bool:
    """A plain numeric array big enough to hash from memory (h5py stores and reads it back
    with its dtype and shape)."""
    return (isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.dtype.isnative
            and value.nbytes >= _HASH_FROM_MEMORY_BYTES)


def _sync_data(f: h5py.File) -> None:
    """fsync what is written so far (h5py's sec2 driver: the file's descriptor)."""
    f.flush()
    try:
        fd = f.id.get_vfd_handle()
    except (AttributeError, TypeError, ValueError, RuntimeError):   # pragma: no cover - other drivers
        return
    if isinstance(fd, int):
        os.fsync(fd)


def _write(tmp: Path, data: CheckpointData) -> None:
    """Attributes, then every dataset contiguous and uncompressed (h5py writes each straight
    from its array), while _DigestAhead hashes them; the checksum attribute last."""
    datasets = [("global/params", np.ascontiguousarray(data.params, dtype=np.float32)),
                ("global/ema", np.ascontiguousarray(data.ema, dtype=np.float32)),
                ("spec", data.spec_text.encode())]
    for group in ("strategy", "clients", "server"):
        datasets += [(f"{group}/{key}", value) for key, value in sorted(getattr(data, group).items())]
    datasets.append(("metrics", "\n".join(data.metrics_lines).encode()))
    written = {name: value for name, value in datasets if _large_array(value)}
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = __version__
        f.attrs["round"] = int(data.round)
        f.attrs["config_yaml"] = data.config_yaml
        f.attrs["param_fingerprint"] = data.param_fingerprint
        f.attrs["rng_scheme"] = RNG_SCHEME
        f.attrs["image_shape"] = np.asarray(data.image_shape, dtype=np.int64)
        f.attrs["checksum_scheme"] = CHECKSUM_SCHEME
        big = sum(value.nbytes for value in written.values()) >= _DIGEST_AHEAD_BYTES
        ahead = _DigestAhead(f, datasets) if big else None
        for name, value in datasets:
            f.create_dataset(name, data=value)
        if ahead:   # the data go to disk while the digest finishes; the last fsync is short
            _sync_data(f)
        f.attrs["checksum"] = ahead.result(f, written) if ahead else _digest(f, written)
        f.flush()


def save_checkpoint(path: str | Path, data: CheckpointData) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write(tmp, data)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        # A full disk or a failing device: drop the partial file, keep every earlier checkpoint.
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write checkpoint ({_reason(exc)}); "
                              f"the previous checkpoints are intact") from None
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _group(f: h5py.File, name: str) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    if name in f:
        def visit(key, obj):
            if isinstance(obj, h5py.Dataset):
                out[key] = obj[()]
        f[name].visititems(visit)
    return out


def load_checkpoint(path: str | Path, verify: bool = True) -> CheckpointData:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a feddm_hpc checkpoint (format {f.attrs.get('format')!r})")
            if verify and not _verified(f):
                raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
            metrics = f["metrics"][()].decode()
            return CheckpointData(
                round=int(f.attrs["round"]),
                config_yaml=str(f.attrs["config_yaml"]),
                params=f["global/params"][()],
                ema=f["global/ema"][()],
                spec_text=f["spec"][()].decode(),
                param_fingerprint=str(f.attrs["param_fingerprint"]),
                strategy=_group(f, "strategy"),
                clients=_group(f, "clients"),
                metrics_lines=[line for line in metrics.split("\n") if line],
                image_shape=tuple(int(v) for v in f.attrs["image_shape"]),
                server=_group(f, "server"),
            )
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc})") from None


def list_checkpoints(ckpt_dir: str | Path) -> List[Path]:
    """Complete-looking checkpoint files (temporary names excluded), newest round first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def latest_valid(ckpt_dir: str | Path, warn=None) -> Optional[Path]:
    """The newest checkpoint that passes validation; broken ones are reported and skipped."""
    for path in list_checkpoints(ckpt_dir):
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as exc:
            if warn is not None:
                warn(f"skipping {exc}")
    return None


def prune(ckpt_dir: str | Path, keep_last: int) -> None:
    for old in list_checkpoints(ckpt_dir)[keep_last:]:
        old.unlink(missing_ok=True)
    for tmp in Path(ckpt_dir).glob("*.h5.tmp"):  # leftovers of a crash mid-write
        tmp.unlink(missing_ok=True)


def describe(path: str | Path) -> str:
    """Human-readable summary for `feddm-hpc inspect`."""
    path = Path(path)
    data = load_checkpoint(path, verify=False)
    try:
        load_checkpoint(path, verify=True)
        status = "ok"
    except CheckpointError:
        status = "MISMATCH (file corrupted)"
    last = json.loads(data.metrics_lines[-1]) if data.metrics_lines else {}
    lines = [
        f"checkpoint: {path}",
        f"format: {FORMAT}",
        f"round: {data.round}",
        f"image shape (C, H, W): {data.image_shape}",
        f"parameters: {data.params.size} ({data.params.nbytes / 1e6:.2f} MB float32), fingerprint {data.param_fingerprint}",
        f"checksum: {status}",
        f"strategy state: {', '.join(f'{k} {v.shape}' for k, v in sorted(data.strategy.items())) or 'none'}",
        f"client state entries: {len(data.clients)}",
        f"server state: {', '.join(f'{k} {v.shape}' for k, v in sorted(data.server.items())) or 'none'}",
        f"metrics rounds: {len(data.metrics_lines)}; last train_loss: {last.get('train_loss', 'n/a')}",
        f"file size: {path.stat().st_size} bytes",
        "config:",
    ]
    lines += ["  " + line for line in data.config_yaml.rstrip().splitlines()]
    return "\n".join(lines)
