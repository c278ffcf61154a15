"""What a client does to its update before it leaves the client, in this order: an attack (for
robustness experiments, `attack`), client-level DP clipping (`privacy.clip_norm`), then encoding:
the configured codec, or, under `privacy.secure_aggregation`, the public integer grid plus the
pairwise masks of secure aggregation (privacy/secagg.py).

The attack comes first: an attacked client still follows the protocol (its update is clipped and
encoded like any other), which is the setting robust aggregation is meant for. With none of these
enabled, `prepare` returns its input untouched and `encode` is the codec's, so such runs are
bit-identical to runs before this module existed.

Under DP the vector actually encoded is bounded: the codec clips it again after adding its
error-feedback residual (Compressor.encode's norm_bound), and secure aggregation's grid rounding
is conditioned to keep the decoded vector within C (privacy/secagg_inputs.py). Under secure
aggregation the client's loss, sample count and clipped flag travel masked with its codes, and
its report's plain scalars carry none of them (`public_scalars`).

Every draw is seeded from (seed, purpose, round, client id): the codec's rounding (ENCODE), the
Gaussian attack (attacks.attack_rng), secure aggregation's grid rounding (ENCODE as well: the codec
does not run then) and masks (secagg's own purpose).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.federation import attacks
from feddm_hpc.privacy import dp, secagg, secagg_inputs
from feddm_hpc.strategies.aggregate import is_finite


class ClientUplink:
    def __init__(self, cfg, compressor, num_params: Optional[int] = None):
        """num_params: the shared vector's length, for the start-up check that secure
        aggregation's grid can keep a DP contribution within C (without it, encode refuses)."""
        self.cfg, self.compressor = cfg, compressor
        a = cfg.attack
        self.attacked = frozenset(attacks.attacked_clients(a.clients or None, a.fraction or None,
                                                           cfg.federation.num_clients, cfg.seed)
                                  if a.kind != "none" else ())
        self.update_attack = a.kind if a.kind in attacks.UPDATE_ATTACKS else None
        self.clip_norm = cfg.privacy.clip_norm
        self.secure = cfg.privacy.secure_aggregation
        if self.secure and self.clip_norm is not None and num_params is not None:   # exit 2
            secagg_inputs.check_grid_fits_clip(num_params, cfg.compression.bits,
                                               cfg.privacy.secagg_range, self.clip_norm)
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
               cohort: Sequence[int], loss: float = float("nan"),
               num_samples: int = 0) -> Optional[np.ndarray]:
        """The payload (uint8), or None for a non-finite vector that a lossy codec refuses.
        loss and num_samples travel inside the masked payload under secure aggregation."""
        rng = seeding.numpy_rng(self.cfg.seed, seeding.ENCODE, round_index, client_id)
        try:
            if self.secure:
                return self._masked(vec, client_id, round_index, cohort, rng, loss, num_samples)
            return self.compressor.encode(vec, client_id, rng, norm_bound=self.clip_norm)
        except ValueError:
            if is_finite(vec):
                raise
            return None

    def public_scalars(self, loss: float, num_samples: int) -> Tuple[float, int, float]:
        """(loss, sample count, pre-clip norm) as the client's report states them in the clear:
        under secure aggregation none of them (they are summed inside the masked payload)."""
        if self.secure:
            return float("nan"), 0, float("nan")
        norm = self.last_norm if self.last_norm is not None else float("nan")
        return loss, num_samples, norm

    def _masked(self, vec, client_id, round_index, cohort, rng, loss, num_samples) -> np.ndarray:
        bits, r = self.cfg.compression.bits, self.cfg.privacy.secagg_range
        if self.clip_norm is None:
            codes = secagg.encode_grid(vec, bits, r, rng)
        else:
            codes = secagg_inputs.encode_grid_bounded(vec, bits, r, rng, self.clip_norm)
        clipped = self.last_norm is not None and self.last_norm > self.clip_norm
        words = secagg_inputs.stats_words(loss, num_samples, clipped, len(cohort))
        masked = secagg.mask_codes(np.concatenate([codes, words]), client_id, cohort,
                                   self.cfg.seed, round_index)
        return masked.view(np.uint8)
