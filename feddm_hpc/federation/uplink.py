"""What a client does to its update before it leaves the client, in this order: an attack (for
robustness experiments, `attack`), client-level DP clipping (`privacy.clip_norm`), then encoding:
the configured codec, or, under `privacy.secure_aggregation`, the public integer grid plus the
pairwise masks of secure aggregation (privacy/secagg.py).

The attack comes first: an attacked client still follows the protocol (its update is clipped and
encoded like any other), which is the setting robust aggregation is meant for. With none of these
enabled, `prepare` returns its input untouched and `encode` is the codec's, so such runs are
bit-identical to runs before this module existed.

Every draw is seeded from (seed, purpose, round, client id): the codec's rounding (ENCODE), the
Gaussian attack (attacks.attack_rng), secure aggregation's grid rounding (ENCODE as well: the codec
does not run then) and masks (secagg's own purpose).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.federation import attacks
from feddm_hpc.privacy import dp, secagg
from feddm_hpc.strategies.aggregate import is_finite


class ClientUplink:
    def __init__(self, cfg, compressor):
        self.cfg, self.compressor = cfg, compressor
        a = cfg.attack
        self.attacked = frozenset(attacks.attacked_clients(a.clients or None, a.fraction or None,
                                                           cfg.federation.num_clients, cfg.seed)
                                  if a.kind != "none" else ())
        self.update_attack = a.kind if a.kind in attacks.UPDATE_ATTACKS else None
        self.clip_norm = cfg.privacy.clip_norm
        self.secure = cfg.privacy.secure_aggregation
        self.last_norm: Optional[float] = None   # the pre-clip norm of the last prepared update

    def data_poison(self, client_id: int) -> Optional[Callable]:
        """The label-flip attack's transform of a training batch, for an attacked client."""
        if self.cfg.attack.kind == "label_flip" and client_id in self.attacked:
            return attacks.label_flip_images
        return None

    @property
    def transforms_update(self) -> bool:
        return self.clip_norm is not None or (self.update_attack is not None and bool(self.attacked))

    def prepare(self, update: np.ndarray, client_id: int, round_index: int) -> np.ndarray:
        """The update as it will be encoded: attacked (if this client is), then clipped."""
        self.last_norm = None
        if self.update_attack is not None and client_id in self.attacked:
            update = attacks.apply_update_attack(self.update_attack, update, self.cfg.attack.scale,
                                                 attacks.attack_rng(self.cfg.seed, round_index, client_id))
        if self.clip_norm is not None:
            update, self.last_norm = dp.clip_update(update, self.clip_norm)
        return update

    def encode(self, vec: np.ndarray, client_id: int, round_index: int,
               cohort: Sequence[int]) -> Optional[np.ndarray]:
        """The payload (uint8), or None for a non-finite vector that a lossy codec refuses."""
        rng = seeding.numpy_rng(self.cfg.seed, seeding.ENCODE, round_index, client_id)
        try:
            if self.secure:
                return self._masked(vec, client_id, round_index, cohort, rng)
            return self.compressor.encode(vec, client_id, rng)
        except ValueError:
            if is_finite(vec):
                raise
            return None

    def _masked(self, vec, client_id, round_index, cohort, rng) -> np.ndarray:
        codes = secagg.encode_grid(vec, self.cfg.compression.bits, self.cfg.privacy.secagg_range, rng)
        masked = secagg.mask_codes(codes, client_id, cohort, self.cfg.seed, round_index)
        return masked.view(np.uint8)
