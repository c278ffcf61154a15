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


def _digest(f: h5py.File) -> str:
    h = hashlib.sha256()
    for key in sorted(k for k in f.attrs if k != "checksum"):
        h.update(_canonical(key))
        h.update(_canonical(f.attrs[key]))

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            h.update(_canonical(name))
            h.update(_canonical(obj[()]))
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


def _write(tmp: Path, data: CheckpointData) -> None:
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = __version__
        f.attrs["round"] = int(data.round)
        f.attrs["config_yaml"] = data.config_yaml
        f.attrs["param_fingerprint"] = data.param_fingerprint
        f.attrs["rng_scheme"] = RNG_SCHEME
        f.attrs["image_shape"] = np.asarray(data.image_shape, dtype=np.int64)
        f.attrs["checksum_scheme"] = CHECKSUM_SCHEME
        f.create_dataset("global/params", data=np.asarray(data.params, dtype=np.float32))
        f.create_dataset("global/ema", data=np.asarray(data.ema, dtype=np.float32))
        f.create_dataset("spec", data=data.spec_text.encode())
        for key, value in sorted(data.strategy.items()):
            f.create_dataset(f"strategy/{key}", data=value)
        for key, value in sorted(data.clients.items()):
            f.create_dataset(f"clients/{key}", data=value)
        for key, value in sorted(data.server.items()):
            f.create_dataset(f"server/{key}", data=value)
        f.create_dataset("metrics", data="\n".join(data.metrics_lines).encode())
        f.attrs["checksum"] = _digest(f)
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
