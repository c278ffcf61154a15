"""The uplink's stages: each takes one client's `Outgoing` and changes its vector, learns
something of it (the pre-clip norm) or, as the last stage, encodes it into the payload.

A stage is built once per run from its entry of the plan (config/uplink_plan.py: its name,
what it needs and what it guarantees, which the plan checks before any stage is built) and
the run's config; it holds no per-client state of its own (the codec's error-feedback
residuals are the compressor's, keyed by client id). Every draw is seeded from (seed, purpose,
round, client id): the codec's rounding and secure aggregation's grid rounding (ENCODE: only one
of them runs), the Gaussian attack (attacks.attack_rng), the masks (secagg's own purpose).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Type

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.config.uplink_plan import StageSpec
from feddm_hpc.federation import attacks
from feddm_hpc.privacy import dp, secagg, secagg_inputs
from feddm_hpc.strategies.aggregate import is_finite


@dataclass
class Outgoing:
    """One client's upload as it passes the stages. `vector` is what the next stage takes (at
    first `local` itself); `payload` is the last stage's uint8 bytes, None when the client could
    not encode (a non-finite vector that a lossy codec or the grid refuses). loss, num_samples
    and update_norm are what the client's report states in the clear: the mask stage hides them."""
    client_id: int
    round_index: int
    cohort: Sequence[int]
    start: np.ndarray                 # the shared vector the client started from
    local: np.ndarray                 # its trained shared vector (what the strategy's uploads read)
    loss: float = math.nan
    num_samples: int = 0
    vector: Optional[np.ndarray] = None
    update_norm: float = math.nan     # L2 norm of the update before DP clipping (the clip stage)
    clipped: bool = False
    payload: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        if self.vector is None:
            self.vector = self.local


class Stage:
    """One step of the uplink. `needs` / `gives` / `ends` are its plan entry's (facts about the
    vector, config/uplink_plan.py), so a stage states what it assumes and guarantees."""

    def __init__(self, spec: StageSpec, cfg, compressor=None, num_params: Optional[int] = None):
        self.spec = spec
        # The next stage's input_slot (set by the Uplink): where this stage may write its
        # result so that the next one copies nothing.
        self.output_slot: Optional[Callable[[int], Optional[np.ndarray]]] = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs(self):
        return frozenset(fact for fact, _ in self.spec.needs)

    @property
    def gives(self):
        return self.spec.gives

    def apply(self, out: Outgoing) -> None:
        raise NotImplementedError

    def input_slot(self, n: int) -> Optional[np.ndarray]:
        """Where the previous stage may write this stage's input of n values, or None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class InjectNonFinite(Stage):
    """Testing aid (federation.inject_nan_clients): one NaN and one Inf in a listed client's
    weights, in place, as a diverged client would send (its strategy uploads see them too)."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        self.clients = frozenset(cfg.federation.inject_nan_clients)

    def apply(self, out):
        if out.client_id in self.clients:
            local = out.local
            local[local.size // 2], local[-1] = np.nan, np.inf


class Delta(Stage):
    """The update local - start: where the next stage takes it (an identity encode into the
    send buffer), else in a buffer reused client by client."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        self._buffer: Optional[np.ndarray] = None

    def apply(self, out):
        dest = self.output_slot(out.local.size) if self.output_slot else None
        if dest is None or dest.dtype != out.local.dtype or out.local.ndim != 1:
            if self._buffer is None or self._buffer.shape != out.local.shape:
                self._buffer = np.empty_like(out.local)
            dest = self._buffer
        out.vector = np.subtract(out.local, out.start, out=dest)


class Attack(Stage):
    """An attacked client's update replaced (sign_flip, scaled, gaussian); who is attacked is
    drawn once per run from the seed (attacks.attacked_clients)."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        a = cfg.attack
        self.kind, self.scale, self.seed = a.kind, a.scale, cfg.seed
        self.attacked = frozenset(attacks.attacked_clients(
            a.clients or None, a.fraction or None, cfg.federation.num_clients, cfg.seed))

    def apply(self, out):
        if out.client_id in self.attacked:
            rng = attacks.attack_rng(self.seed, out.round_index, out.client_id)
            out.vector = attacks.apply_update_attack(self.kind, out.vector, self.scale, rng)


class Clip(Stage):
    """DP's client-level clipping to privacy.clip_norm; records the norm before it."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        self.clip_norm = cfg.privacy.clip_norm

    def apply(self, out):
        out.vector, out.update_norm = dp.clip_update(out.vector, self.clip_norm)
        out.clipped = out.update_norm > self.clip_norm


class AddStart(Stage):
    """Back to weights (compression.target weights): start + the (attacked) update."""

    def apply(self, out):
        out.vector = out.start + out.vector


def _encoding(out: Outgoing, encode) -> None:
    """out.payload = encode(out.vector), or None for a non-finite vector the encoder refuses."""
    try:
        out.payload = encode(out.vector)
    except ValueError:
        if is_finite(out.vector):
            raise
        out.payload = None


class Encode(Stage):
    """The configured codec (with error feedback); under DP the vector actually encoded,
    residual included, is clipped to C again (Compressor.encode's norm_bound)."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        self.compressor, self.seed = compressor, cfg.seed
        self.norm_bound = cfg.privacy.clip_norm

    def apply(self, out):
        rng = seeding.numpy_rng(self.seed, seeding.ENCODE, out.round_index, out.client_id)
        _encoding(out, lambda v: self.compressor.encode(v, out.client_id, rng,
                                                        norm_bound=self.norm_bound))

    def input_slot(self, n):
        return self.compressor.input_slot(n)


class Mask(Stage):
    """Secure aggregation instead of the codec: the update on the public grid of
    compression.bits bits over [-secagg_range, secagg_range] (conditioned to decode within C
    under DP, privacy/secagg_inputs.py), then the client's loss, sample count and clipped flag
    as statistics words, all under the pairwise masks (privacy/secagg.py). The report then
    states none of those scalars in the clear: the root learns only their sums."""

    def __init__(self, spec, cfg, compressor=None, num_params=None):
        super().__init__(spec, cfg)
        p = cfg.privacy
        self.bits, self.range, self.clip_norm, self.seed = (cfg.compression.bits, p.secagg_range,
                                                            p.clip_norm, cfg.seed)
        if self.clip_norm is not None and num_params is not None:   # exit 2 before training
            secagg_inputs.check_grid_fits_clip(num_params, self.bits, self.range, self.clip_norm)

    def _masked(self, vec, out: Outgoing, rng) -> np.ndarray:
        if self.clip_norm is None:
            codes = secagg.encode_grid(vec, self.bits, self.range, rng)
        else:
            codes = secagg_inputs.encode_grid_bounded(vec, self.bits, self.range, rng, self.clip_norm)
        words = secagg_inputs.stats_words(out.loss, out.num_samples, out.clipped, len(out.cohort))
        masked = secagg.mask_codes(np.concatenate([codes, words]), out.client_id, out.cohort,
                                   self.seed, out.round_index)
        return masked.view(np.uint8)

    def apply(self, out):
        rng = seeding.numpy_rng(self.seed, seeding.ENCODE, out.round_index, out.client_id)
        _encoding(out, lambda v: self._masked(v, out, rng))
        out.loss, out.num_samples, out.update_norm = math.nan, 0, math.nan


STAGES: Dict[str, Type[Stage]] = {
    "inject_nonfinite": InjectNonFinite, "delta": Delta, "attack": Attack, "clip": Clip,
    "add_start": AddStart, "encode": Encode, "mask": Mask,
}
