"""What a client sends back after local training: one named report, one wire format.

A `ClientReport` is built by the rank that trained the client and read by the transports, the
root's aggregation and the metrics record; nothing indexes report fields by position. On the
wire the scalar fields travel as one numpy structured array per rank (`wire_dtype`), and the
payloads as one uint8 blob per rank holding each client's update, then its extra uploads (the
strategy's, e.g. SCAFFOLD's control delta), in report order. The byte counts travel with the
scalars, so a transport that does not carry the payloads (the allreduce one) still accounts for
every byte a client would have sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

STATUS_OK = 0
STATUS_UNENCODABLE = 1   # the client could not encode a non-finite vector and sent no payload
STATUS_REJECTED = 2      # decoded by its own rank (allreduce transport) and found non-finite

_EMPTY = np.empty(0, dtype=np.uint8)
_EMPTY.setflags(write=False)


@dataclass
class ClientReport:
    client_id: int
    num_samples: int                 # aggregation weight
    loss: float                      # mean local diffusion loss (NaN for a diverged client)
    train_s: float                   # wall seconds of local training
    status: int = STATUS_OK
    update_bytes: int = 0
    extra_bytes: Tuple[int, ...] = ()
    # Payloads; None where the transport did not carry them to this rank.
    update: Optional[np.ndarray] = None
    extras: Optional[Tuple[np.ndarray, ...]] = None
    update_norm: float = float("nan")   # L2 norm of the update before DP clipping (privacy.clip_norm only)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def uplink_bytes(self) -> int:
        return self.update_bytes + sum(self.extra_bytes)


def make_report(client_id: int, num_samples: int, loss: float, train_s: float,
                update: Optional[np.ndarray], extras: Sequence[np.ndarray], num_extras: int,
                outbox: Optional["Outbox"] = None) -> ClientReport:
    """A report from the payloads; `update` None: the client could not encode (no bytes sent).
    `outbox`: the transport's send buffer, which takes the payloads now (a codec attached to it
    wrote the update there already: nothing is copied then)."""
    if update is None:
        report = ClientReport(client_id, num_samples, loss, train_s, STATUS_UNENCODABLE,
                              0, (0,) * num_extras, _EMPTY, (_EMPTY,) * num_extras)
    else:
        extras = tuple(extras)
        if len(extras) != num_extras:
            raise ValueError(f"client {client_id}: {len(extras)} extra uploads, expected {num_extras}")
        report = ClientReport(client_id, num_samples, loss, train_s, STATUS_OK, int(update.size),
                              tuple(int(e.size) for e in extras), update, extras)
    if outbox is not None:
        outbox.put(report)
    return report


class Outbox:
    """One rank's payloads of a round in wire order (each report's update, then its extra
    uploads, in report order) in one comm.WireBuffer that lives across rounds: the bytes the
    payload Gatherv sends, and on the root the head of the buffer it receives into.

    A codec attached to it (`attach`) encodes straight into the buffer: its payload is
    `allocate`d at the end, and `put` (make_report) takes it without a copy; anything else
    (a lossless stage's smaller copy, masked secure-aggregation words, SCAFFOLD's control delta)
    is copied in once. The reports put here hold views of the buffer, rebound if it grows. The
    transport `clear`s it after each round's gather: the views are then valid until the next
    round's payloads overwrite them.
    """

    def __init__(self):
        from feddm_hpc.comm import WireBuffer

        self.buffer = WireBuffer()
        self.buffer.on_move.append(self._rebind)
        self.used = 0
        self._placed: List[Tuple[ClientReport, int]] = []   # (report, offset of its update)

    def attach(self, compressor) -> None:
        """Make `compressor` encode its payloads into this outbox."""
        compressor.payload_allocator = self.allocate

    def allocate(self, nbytes: int) -> np.ndarray:
        """Room for the next payload at the end of the buffer (becomes a report's with `put`)."""
        return self.buffer.ensure(self.used + nbytes, keep=self.used, touch=True)[self.used:]

    def put(self, report: ClientReport) -> None:
        """Append the report's payloads; the report then holds views of the buffer."""
        self._put(report, _pieces(report))

    def _put(self, report: ClientReport, pieces: Sequence[np.ndarray]) -> None:
        offset = self.used
        views = self._place(pieces)
        report.update, report.extras = views[0], tuple(views[1:])
        self._placed.append((report, offset))

    def _place(self, pieces: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Append the pieces (copying those not written in place); their views, taken after
        any growth."""
        spans = []
        for piece in pieces:
            dest = self.buffer.ensure(self.used + piece.size, keep=self.used, touch=True)[self.used:]
            if not self.buffer.holds(piece, self.used):
                np.copyto(dest, piece)
            spans.append((self.used, piece.size))
            self.used += piece.size
        return [self.buffer.array[o:o + n] for o, n in spans]

    def stage(self, reports: Sequence[ClientReport]) -> int:
        """Make the buffer hold exactly these reports' payloads in wire order; returns its
        byte count. Reports put here in this order are in place already. Others are copied in:
        those whose payloads were in this buffer are rebound to their new place; those built
        without this outbox keep their own arrays."""
        placed = [rep for rep, _ in self._placed]
        if len(reports) == len(placed) and all(a is b for a, b in zip(reports, placed)):
            return self.used
        entries = []
        for rep in reports:
            pieces = _pieces(rep)
            ours = any(np.may_share_memory(p, self.buffer.array) for p in pieces)
            entries.append((rep, [p.copy() for p in pieces] if ours else pieces, ours))
        self.clear()
        for rep, pieces, ours in entries:
            if ours:
                self._put(rep, pieces)
            else:
                self._place(pieces)
        return self.used

    def contents(self) -> np.ndarray:
        return self.buffer.array[:self.used]

    def placed(self, reports: Sequence[ClientReport]) -> bool:
        """Whether the buffer holds exactly these reports' payloads, in this order."""
        return len(reports) == len(self._placed) and all(
            a is b for a, (b, _) in zip(reports, self._placed))

    def region(self, report: ClientReport) -> np.ndarray:
        """The bytes of one report put here (its update, then its extra uploads): what a
        streamed uplink sends for it (federation/payload_stream.py)."""
        for rep, offset in self._placed:
            if rep is report:
                size = rep.update_bytes + sum(rep.extra_bytes)
                return self.buffer.array[offset:offset + size]
        raise ValueError(f"client {report.client_id}: its report is not in this outbox")

    def clear(self) -> None:
        """Start the next round's payloads at the beginning of the buffer."""
        self.used = 0
        self._placed = []

    def _rebind(self, new: np.ndarray) -> None:
        for rep, offset in self._placed:
            views = []
            for size in (rep.update_bytes, *rep.extra_bytes):
                views.append(new[offset:offset + size])
                offset += size
            rep.update, rep.extras = views[0], tuple(views[1:])


def _pieces(report: ClientReport) -> List[np.ndarray]:
    """A report's payloads in wire order (the update, then its extra uploads)."""
    update = report.update if report.update is not None else _EMPTY
    return [np.ascontiguousarray(update, dtype=np.uint8).reshape(-1),
            *(np.ascontiguousarray(e, dtype=np.uint8).reshape(-1) for e in report.extras or ())]


def wire_dtype(num_extras: int) -> np.dtype:
    """The structured dtype of one report's scalars (packed, little-endian, fixed per run)."""
    fields = [("client_id", "<i8"), ("num_samples", "<i8"), ("loss", "<f8"), ("train_s", "<f8"),
              ("status", "<i8"), ("update_bytes", "<i8"), ("update_norm", "<f8")]
    if num_extras:
        fields.append(("extra_bytes", "<i8", (num_extras,)))
    return np.dtype(fields)


def pack(reports: Sequence[ClientReport], num_extras: int) -> Tuple[np.ndarray, np.ndarray]:
    """(the scalars as uint8 bytes of a structured array, the payload blob) of one rank. The
    transports stage the blob in their Outbox instead (the same bytes, no fresh array)."""
    pieces = [p for rep in reports for p in _pieces(rep)]
    blob = np.concatenate(pieces) if pieces else _EMPTY.copy()
    return pack_scalars(reports, num_extras), blob


def pack_scalars(reports: Sequence[ClientReport], num_extras: int) -> np.ndarray:
    """The reports' scalars as the uint8 bytes of a structured array (wire_dtype)."""
    records = np.zeros(len(reports), dtype=wire_dtype(num_extras))
    for i, rep in enumerate(reports):
        records[i]["client_id"] = rep.client_id
        records[i]["num_samples"] = rep.num_samples
        records[i]["loss"] = rep.loss
        records[i]["train_s"] = rep.train_s
        records[i]["status"] = rep.status
        records[i]["update_bytes"] = rep.update_bytes
        records[i]["update_norm"] = rep.update_norm
        if num_extras:
            records[i]["extra_bytes"] = rep.extra_bytes
    return records.view(np.uint8).reshape(-1)


def _records(raw: np.ndarray, num_extras: int) -> np.ndarray:
    dtype = wire_dtype(num_extras)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.size % dtype.itemsize:
        raise RuntimeError(f"client reports: {raw.size} bytes is not a whole number of reports")
    return raw.view(dtype)


def _scalars(rec, num_extras: int) -> ClientReport:
    return ClientReport(int(rec["client_id"]), int(rec["num_samples"]), float(rec["loss"]),
                        float(rec["train_s"]), int(rec["status"]), int(rec["update_bytes"]),
                        tuple(int(b) for b in rec["extra_bytes"]) if num_extras else (),
                        update_norm=float(rec["update_norm"]))


def unpack_scalars(raw_parts: Sequence[np.ndarray], num_extras: int) -> Dict[int, ClientReport]:
    """Reports without payloads, from every rank's scalar bytes (rank order)."""
    out: Dict[int, ClientReport] = {}
    for raw in raw_parts:
        for rec in _records(raw, num_extras):
            rep = _scalars(rec, num_extras)
            out[rep.client_id] = rep
    return out


def report_count(raw: np.ndarray, num_extras: int) -> int:
    """How many reports one rank's scalar bytes hold."""
    return int(_records(raw, num_extras).size)


def unpack(raw_parts: Sequence[np.ndarray], blobs: Sequence, num_extras: int) -> Dict[int, ClientReport]:
    """Reports with payloads: rank k's blob holds its reports' payloads in report order, either
    as one array or as a list of one array per report (a streamed uplink's messages)."""
    if len(raw_parts) != len(blobs):
        raise RuntimeError("client reports: scalars and payloads came from different rank counts")
    out: Dict[int, ClientReport] = {}
    for raw, blob in zip(raw_parts, blobs):
        reports = [_scalars(rec, num_extras) for rec in _records(raw, num_extras)]
        if isinstance(blob, np.ndarray):
            blob = _split(blob, [rep.update_bytes + sum(rep.extra_bytes) for rep in reports], reports)
        if len(blob) != len(reports):
            raise RuntimeError(f"client reports: {len(blob)} payloads arrived for {len(reports)} reports")
        for rep, message in zip(reports, blob):
            sizes = (rep.update_bytes, *rep.extra_bytes)
            if message.size != sum(sizes):
                raise RuntimeError(f"client {rep.client_id}: its report claims {sum(sizes)} bytes, "
                                   f"{message.size} arrived")
            ends = np.cumsum((0, *sizes))
            pieces = [message[a:b] for a, b in zip(ends[:-1], ends[1:])]
            rep.update, rep.extras = pieces[0], tuple(pieces[1:])
            out[rep.client_id] = rep
    return out


def _split(blob: np.ndarray, sizes: Sequence[int], reports) -> List[np.ndarray]:
    """One rank's blob cut into its reports' payloads."""
    out, offset = [], 0
    for rep, size in zip(reports, sizes):
        if offset + size > blob.size:
            raise RuntimeError(f"client {rep.client_id}: its report claims more bytes than arrived")
        out.append(blob[offset:offset + size])
        offset += size
    if offset != blob.size:
        raise RuntimeError("client reports: bytes arrived that no report accounts for")
    return out


def by_client(reports: Sequence[ClientReport]) -> Dict[int, ClientReport]:
    return {rep.client_id: rep for rep in reports}


__all__ = ["ClientReport", "Outbox", "STATUS_OK", "STATUS_REJECTED", "STATUS_UNENCODABLE", "by_client",
           "make_report", "pack", "pack_scalars", "report_count", "unpack", "unpack_scalars",
           "wire_dtype"]
