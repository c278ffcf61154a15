"""What a client shares: the shared vector, and the parts each client keeps to itself.

Under `federation.shared_parts` covering the whole U-Net (the default) the shared vector is the
flat model vector itself and every method here returns its argument: today's runs do not copy
anything more. Under partial sharing the shared vector is the concatenation of the shared
parameters' slices of the flat vector (in parameter order), and everything that acts on updates
(codecs, error feedback, DP, secure aggregation, robust rules, server optimizers, byte counts)
works on it without knowing. The other slices are each client's own: `PrivateParts` keeps them
on the rank that hosts the client (like error-feedback residuals), in checkpoints under
`private/<client id>`, restored on resume on any rank count. A client starts from its own
private values (at first the initial model's) with the global shared values in between.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from feddm_hpc.diffusion import parts as unet_parts
from feddm_hpc.params import ParamSpec


def _runs(mask: List[bool], spec: ParamSpec, want: bool) -> List[Tuple[int, int]]:
    """Contiguous (start, stop) ranges of the flat vector whose parameters have mask == want,
    adjacent parameters merged."""
    runs: List[Tuple[int, int]] = []
    for entry, m in zip(spec.entries, mask):
        if m != want:
            continue
        stop = entry.offset + entry.numel
        if runs and runs[-1][1] == entry.offset:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((entry.offset, stop))
    return runs


class SharedSpace:
    """The map between the flat model vector (length `total`) and the shared vector (`size`)."""

    def __init__(self, spec: ParamSpec, shared_parts=("all",)):
        self.total = spec.total
        self.parts = unet_parts.resolve(shared_parts)
        self.identity = set(self.parts) == set(unet_parts.PARTS)
        if self.identity:
            mask = [True] * len(spec.entries)
            self.shared_runs = [(0, spec.total)]
            self.private_runs: List[Tuple[int, int]] = []
        else:
            mask = unet_parts.shared_mask([e.name for e in spec.entries], self.parts)
            self.shared_runs = _runs(mask, spec, True)
            self.private_runs = _runs(mask, spec, False)
        # Which parameters (in model order) are shared and private: a start in pieces is copied
        # into them directly (StartPieces.write_into).
        self.shared_index = [i for i, m in enumerate(mask) if m]
        self.private_index = [i for i, m in enumerate(mask) if not m]
        self.size = sum(b - a for a, b in self.shared_runs)
        self.private_size = self.total - self.size

    def take(self, full: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The shared slices of `full`, concatenated (`full` itself when everything is shared)."""
        if self.identity:
            return full
        if out is None:
            out = np.empty(self.size, dtype=full.dtype)
        _gather(full, self.shared_runs, out)
        return out

    def put(self, shared: np.ndarray, full: np.ndarray) -> None:
        """Write the shared vector into its slices of `full` (in place)."""
        if self.identity:
            if shared is not full:
                full[:] = shared
            return
        _scatter(shared, self.shared_runs, full)

    def take_private(self, full: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        if out is None:
            out = np.empty(self.private_size, dtype=full.dtype)
        _gather(full, self.private_runs, out)
        return out

    def put_private(self, private: np.ndarray, full: np.ndarray) -> None:
        _scatter(private, self.private_runs, full)


def _gather(full, runs, out) -> None:
    pos = 0
    for a, b in runs:
        out[pos:pos + b - a] = full[a:b]
        pos += b - a


def _scatter(values, runs, full) -> None:
    pos = 0
    for a, b in runs:
        full[a:b] = values[pos:pos + b - a]
        pos += b - a


class StartPieces:
    """A client's full starting vector given as its pieces (the global shared values, its own
    private ones), never composed on the host: the trainer copies each piece straight into its
    parameters (LocalTrainer.load with params.ParamViews), so partial sharing loads the model
    with one full-model copy, as full sharing does."""

    def __init__(self, space: SharedSpace, shared: np.ndarray, private: np.ndarray):
        self.space, self.shared, self.private = space, shared, private

    def write_into(self, views) -> None:
        """The pieces into the model's parameters (a params.ParamViews)."""
        views.load_subset(self.space.shared_index, self.shared)
        views.load_subset(self.space.private_index, self.private)

    def compose(self) -> np.ndarray:
        """The full vector on the host (for a model ParamViews cannot serve)."""
        full = np.empty(self.space.total, dtype=np.float32)
        self.space.put(self.shared, full)
        self.space.put_private(self.private, full)
        return full


class PrivateParts:
    """Each hosted client's private slices (float32), created from the initial model on first
    use. state_dict/load_state_dict follow the error-feedback residuals' contract
    (compression/base.py): {"private/<client id>": array}, merged over ranks in checkpoints."""

    prefix = "private"

    def __init__(self, space: SharedSpace, initial_full: np.ndarray):
        self.space = space
        self._initial = space.take_private(initial_full) if not space.identity else None
        self._values: Dict[int, np.ndarray] = {}
        self._shared: Optional[np.ndarray] = None  # the reported shared slices, reused likewise

    def start(self, client_id: int, shared_start: np.ndarray):
        """The client's starting vector: `shared_start` itself under full sharing, else its
        pieces (StartPieces), which the trainer writes into the model without composing them."""
        if self.space.identity:
            return shared_start
        return StartPieces(self.space, shared_start, self._values.get(client_id, self._initial))

    def keep(self, client_id: int, local_full: np.ndarray) -> None:
        """Store the client's private slices after its local training."""
        if self.space.identity:
            return
        out = self._values.get(client_id)
        self._values[client_id] = self.space.take_private(local_full, out)

    def split(self, client_id: int, local_full: np.ndarray) -> np.ndarray:
        """Keep the client's private slices; return the shared ones, which it reports (under
        full sharing `local_full` itself; else a buffer reused client by client)."""
        self.keep(client_id, local_full)
        self._shared = self.space.take(local_full, out=self._shared)
        return self._shared

    def of(self, client_id: int) -> np.ndarray:
        return self._values.get(client_id, self._initial)

    # checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {f"{self.prefix}/{cid}": v.copy() for cid, v in sorted(self._values.items())}

    def load_state_dict(self, state: Dict[str, np.ndarray],
                        client_ids: Optional[Iterable[int]] = None) -> None:
        wanted = None if client_ids is None else {int(c) for c in client_ids}
        values = {}
        for key, value in state.items():
            cid = int(key.split("/", 1)[1])
            if wanted is not None and cid not in wanted:
                continue
            if value.shape != (self.space.private_size,):
                raise ValueError(f"checkpoint: {key} holds {value.size} values, the config's "
                                 f"private parts {self.space.private_size}")
            values[cid] = np.asarray(value, dtype=np.float32).copy()
        self._values = values


def client_full_params(space: SharedSpace, shared_full: np.ndarray,
                       private: Optional[np.ndarray]) -> np.ndarray:
    """A client's model as a flat vector: `shared_full`'s shared slices (for example the EMA of
    a checkpoint), the client's private slices (None, a client that never trained: those of
    `shared_full`, which are the initial model's)."""
    out = np.array(shared_full, dtype=np.float32)
    if private is not None and not space.identity:
        space.put_private(private, out)
    return out


def client_models(space: SharedSpace, shared_full: np.ndarray, clients_state: Dict[str, np.ndarray],
                  num_clients: int) -> Optional[List[np.ndarray]]:
    """Every client's model vector (client id order) from `shared_full` (the EMA) and the
    per-client state of a checkpoint or a gather (keys private/<id>); None when every part is
    shared (the run has one model)."""
    if space.identity:
        return None
    return [client_full_params(space, shared_full, clients_state.get(f"{PrivateParts.prefix}/{c}"))
            for c in range(num_clients)]
