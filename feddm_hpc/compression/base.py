"""The Compressor interface: error feedback, per-client state, the lossless stage, decoding.

A codec subclass implements three small hooks on plain arrays:

    _encode(x, rng) -> payload        header + raw body for one finite float32 vector
    body_size(header) -> int          bytes the raw body must have (classmethod)
    decode_body(header, body, out) -> x   float32 vector, into out if given (classmethod)

and this class adds what every codec shares. Payloads describe themselves, so `decode_payload`
decodes any payload by its codec id, whatever compressor made it.

Error-feedback state is one float32 residual per client, keyed by client id and held by whichever
rank hosts the client. `state_dict()` names residuals "residual/<client_id>" so a root rank can
merge the dicts of all ranks into one HDF5 group; `load_state_dict(state, client_ids=...)` takes
back just the clients a rank hosts, whatever the number of ranks that wrote the checkpoint.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar, Iterable

import numpy as np

from feddm_hpc.compression import lossless
from feddm_hpc.compression.header import (
    CODEC_NAMES,
    HEADER_SIZE,
    Header,
    as_payload,
    new_payload,
    parse_header,
)
from feddm_hpc.privacy.dp import clip_update

_DECODERS: dict[int, type["Compressor"]] = {}
_RESIDUAL_KEY = re.compile(r"^residual/(\d+)$")


def payload_bytes_float32(n: int) -> int:
    """Bytes of an uncompressed float32 vector of n values: the baseline for byte accounting."""
    return 4 * int(n)


def register_decoder(cls: type["Compressor"]) -> type["Compressor"]:
    """Class decorator: payloads with any of cls.codec_ids are decoded by cls."""
    for cid in cls.codec_ids:
        _DECODERS[cid] = cls
    return cls


def decode_payload(payload, num_params: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode any payload made by this package into a float32 vector of num_params values:
    a new array, or `out` (float32, num_params values) so a caller can reuse one buffer."""
    if out is not None and (out.dtype != np.float32 or out.shape != (num_params,)
                            or not out.flags.c_contiguous):
        raise ValueError(f"decode: out must be a contiguous float32 array of shape "
                         f"({num_params},)")
    payload = as_payload(payload)
    header = parse_header(payload, num_params)
    cls = _DECODERS.get(header.codec)
    if cls is None:  # pragma: no cover - every codec id has a registered class
        raise ValueError(f"no decoder for codec {CODEC_NAMES[header.codec]!r}")
    expected = cls.body_size(header)
    body = payload[HEADER_SIZE:]
    if header.lossless == 0 and body.size != expected:
        raise ValueError(f"{CODEC_NAMES[header.codec]} payload body has {body.size} bytes, "
                         f"its header implies {expected} (truncated or corrupt)")
    body = lossless.decompress(body, header.lossless, expected)
    return cls.decode_body(header, body, out)


def finite_range(x: np.ndarray) -> tuple[float, float]:
    """(min, max) of x; raises ValueError if x holds NaN or Inf (a diverged client)."""
    if x.size == 0:
        return 0.0, 0.0
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("update contains NaN or Inf values; a lossy codec cannot encode it")
    return lo, hi


class Compressor(ABC):
    """Encodes client updates to self-describing uint8 payloads and decodes them."""

    name: ClassVar[str]
    codec_ids: ClassVar[tuple[int, ...]]
    lossy: ClassVar[bool] = True
    # Where _encode puts a payload (nbytes -> uint8 array): a transport's send buffer
    # (reports.Outbox.attach), so the codec writes the wire bytes once; None: a fresh array.
    payload_allocator = None

    def __init__(self, *, error_feedback: bool = False, lossless_method: str = "none") -> None:
        lossless.check_method(lossless_method)
        # Error feedback on an exact codec would only ever store zeros.
        self.error_feedback = bool(error_feedback) and self.lossy
        self.lossless = lossless_method
        self._residuals: dict[int, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    def _buffer(self, name: str, n: int, dtype=np.float32) -> np.ndarray:
        """A scratch array reused across encodes (fresh large arrays cost page faults)."""
        buf = self._scratch.get(name)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(n, dtype=dtype)
        return buf[:n]

    def input_slot(self, n: int) -> np.ndarray | None:
        """Where the next encode's input of n float32 values may be written so that encoding it
        copies nothing, or None. Only a codec whose payload body is the input itself offers one
        (IdentityCompressor encoding into a send buffer)."""
        return None

    def _new_payload(self, header: Header, body_size: int) -> np.ndarray:
        """A payload for _encode to fill: header written, body uninitialised."""
        return new_payload(header, body_size, self.payload_allocator)

    # -- the codec hooks -------------------------------------------------------------------
    @abstractmethod
    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Header + raw body (lossless byte 0) for a 1-D float32 vector."""

    @classmethod
    @abstractmethod
    def body_size(cls, header: Header) -> int:
        """Size in bytes of the uncompressed body the header describes."""

    @classmethod
    @abstractmethod
    def decode_body(cls, header: Header, body: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Decode a body of exactly body_size(header) bytes to float32 (into out if given)."""

    # -- the interface the simulation uses -------------------------------------------------
    def encode(self, update: np.ndarray, client_id: int, rng: np.random.Generator,
               norm_bound: float | None = None) -> np.ndarray:
        """Compress one client's update (plus its residual, with error feedback).

        norm_bound (DP's clip norm C): the vector actually encoded, residual included, is clipped
        to L2 norm C; the residual keeps what the payload does not carry of that clipped vector.
        Without this, error feedback would add the residual after DP's clip and send up to a few
        times C (a client sending the same clipped update each round reached 3.16 C by round 10
        under top-k 10%). Rounding can still take the decoded vector slightly past C: the root
        bounds every decoded contribution again (federation/aggregation.py, DPMean.bound)."""
        x = np.ascontiguousarray(update, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"encode expects a 1-D update vector, got shape {x.shape}")
        cid = int(client_id)
        res = self._residuals.get(cid) if self.error_feedback else None
        if res is not None:
            if res.size != x.size:
                raise ValueError(f"client {cid}: residual has {res.size} values, "
                                 f"update has {x.size}")
            x = np.add(x, res, out=self._buffer("ef_sum", x.size))
        if norm_bound is not None:
            x, _ = clip_update(x, norm_bound)
        payload = self._encode(x, rng)
        if self.error_feedback:
            header = parse_header(payload, x.size)
            decoded = self.decode_body(header, payload[HEADER_SIZE:],
                                       self._buffer("ef_decoded", x.size))
            if res is None:
                res = self._residuals[cid] = np.empty_like(x)
            np.subtract(x, decoded, out=res)  # what the server did not receive
        return lossless.compress(payload, self.lossless)

    def decode(self, payload: np.ndarray, num_params: int,
               out: np.ndarray | None = None) -> np.ndarray:
        return decode_payload(payload, num_params, out)

    # -- per-client state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the residuals of the clients this instance holds, as
        {"residual/<client_id>": float32 array}; merge the dicts of all ranks to checkpoint."""
        return {f"residual/{cid}": r.copy() for cid, r in sorted(self._residuals.items())}

    def load_state_dict(self, state: dict[str, np.ndarray],
                        client_ids: Iterable[int] | None = None) -> None:
        """Replace all state by `state`; keep only `client_ids` if given (a rank's own clients)."""
        wanted = None if client_ids is None else {int(c) for c in client_ids}
        residuals = {}
        for key, value in state.items():
            cid = _client_of(key)
            if wanted is None or cid in wanted:
                residuals[cid] = _as_residual(key, value)
        self._residuals = residuals

    def client_state(self, client_id: int) -> dict[str, np.ndarray]:
        """One client's state ({} if it has none yet): for moving a client between ranks."""
        cid = int(client_id)
        res = self._residuals.get(cid)
        return {} if res is None else {f"residual/{cid}": res.copy()}

    def set_client_state(self, client_id: int, state: dict[str, np.ndarray]) -> None:
        cid = int(client_id)
        self._residuals.pop(cid, None)
        for key, value in state.items():
            if _client_of(key) != cid:
                raise ValueError(f"state key {key!r} does not belong to client {cid}")
            self._residuals[cid] = _as_residual(key, value)

    def drop_client(self, client_id: int) -> None:
        self._residuals.pop(int(client_id), None)

    @property
    def clients_with_state(self) -> list[int]:
        return sorted(self._residuals)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(error_feedback={self.error_feedback}, "
                f"lossless={self.lossless!r})")


def _client_of(key: str) -> int:
    m = _RESIDUAL_KEY.match(key)
    if m is None:
        raise ValueError(f"unknown compressor state key {key!r} (expected 'residual/<client_id>')")
    return int(m.group(1))


def _as_residual(key: str, value) -> np.ndarray:
    arr = np.array(value, dtype=np.float32, copy=True)
    if arr.ndim != 1:
        raise ValueError(f"compressor state {key!r} must be 1-D, got shape {arr.shape}")
    return arr
