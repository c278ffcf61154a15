"""Client attacks for robustness experiments: three model-poisoning attacks, applied by an
attacked client to its update before encoding, and one data-poisoning attack on its images.

Who is attacked is drawn once per run from the seed (attacked_clients), identically on every
rank with no communication, like every other draw of the simulator (see seeding.py).
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.config.uplink_plan import UPDATE_ATTACKS

ATTACK_PURPOSE = seeding.ATTACK

ATTACK_KINDS = (*UPDATE_ATTACKS, "label_flip")


def sign_flip(update: np.ndarray) -> np.ndarray:
    """-update, float32; the input is not modified."""
    return np.negative(np.asarray(update, dtype=np.float32))


def scaled(update: np.ndarray, scale: float) -> np.ndarray:
    """scale * update, float32 (scale is rounded to float32 first, so no float64 detour)."""
    return np.float32(scale) * np.asarray(update, dtype=np.float32)


def gaussian(update: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Pure Gaussian noise N(0, scale^2) of the update's shape, float32, REPLACING the update:
    the classic "Gaussian attack" sends noise and ignores what the client learned.

    The result depends only on the shape and on `rng`'s state (see attack_rng).
    """
    if not scale >= 0:
        raise ValueError(f"gaussian attack: scale (the noise std) must be >= 0, got {scale}")
    noise = rng.standard_normal(np.shape(update), dtype=np.float32)
    return np.float32(scale) * noise


def label_flip_images(images: np.ndarray) -> np.ndarray:
    """Intensity-inverted images, x -> -x, for images scaled to [-1, 1]; the dtype is kept.

    This is the UNCONDITIONAL analogue of label flipping: the model is an unconditional
    diffusion model with no labels to flip, so the poisoned client trains on the wrong target
    (negatives of its images) instead. The range [-1, 1] maps onto itself.
    """
    return np.negative(images)


def attack_rng(seed: int, round_index: int, client_id: int) -> np.random.Generator:
    """The generator of an attacked client's noise in one round (for the gaussian attack).

    The client slot is 1 + client_id because (seed, ATTACK_PURPOSE, 0, 0) is the draw of who is
    attacked (attacked_clients); the offset keeps the two streams apart, as evaluation.py does.
    """
    return seeding.numpy_rng(seed, ATTACK_PURPOSE, round_index, 1 + int(client_id))


def attack_count(fraction: float, num_clients: int) -> int:
    """round(fraction * num_clients), halves rounded up (not Python's half-to-even), so that
    e.g. 25% of 10 clients is 3, not 2."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attack fraction must be in [0, 1], got {fraction}")
    return min(num_clients, math.floor(fraction * num_clients + 0.5))


def _explicit_clients(clients: Sequence[int], num_clients: int) -> Tuple[int, ...]:
    ids = []
    for c in clients:
        try:
            cid = operator.index(c)     # rejects 1.5 and "3" instead of truncating them
        except TypeError:
            raise ValueError(f"attacked client id {c!r} is not an integer") from None
        if not 0 <= cid < num_clients:
            raise ValueError(f"attacked client id {cid} is out of range [0, {num_clients})")
        ids.append(int(cid))
    if len(set(ids)) != len(ids):
        raise ValueError(f"attacked client ids {list(ids)} contain duplicates")
    return tuple(sorted(ids))


def attacked_clients(clients: Optional[Sequence[int]], fraction: Optional[float],
                     num_clients: int, seed: int) -> Tuple[int, ...]:
    """The attacked client ids, a sorted tuple, the same on every rank.

    Either `clients`, an explicit list of ids (each in [0, num_clients), no duplicates), or
    `fraction`: attack_count(fraction, num_clients) ids drawn without replacement, once per
    run, from seeding.numpy_rng(seed, ATTACK_PURPOSE, 0, 0). Neither means no attack; both is
    ambiguous and an error.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if clients is not None and fraction is not None:
        raise ValueError("give either the attacked clients or the attack fraction, not both")
    if clients is not None:
        return _explicit_clients(clients, num_clients)
    if fraction is None:
        return ()
    count = attack_count(fraction, num_clients)
    rng = seeding.numpy_rng(seed, ATTACK_PURPOSE, 0, 0)
    return tuple(sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False)))


def apply_update_attack(kind: str, update: np.ndarray, scale: float,
                        rng: Optional[np.random.Generator]) -> np.ndarray:
    """The attacked update (float32) for kind in UPDATE_ATTACKS; sign_flip ignores scale and
    rng, scaled ignores rng, gaussian needs rng (attack_rng(seed, round, client))."""
    if kind == "sign_flip":
        return sign_flip(update)
    if kind == "scaled":
        return scaled(update, scale)
    if kind == "gaussian":
        if rng is None:
            raise ValueError("the gaussian attack needs an rng (attack_rng(seed, round, client))")
        return gaussian(update, scale, rng)
    if kind == "label_flip":
        raise ValueError("label_flip poisons the data, not the update: apply label_flip_images "
                         "to the attacked client's images")
    raise ValueError(f"attack kind {kind!r} is not one of {', '.join(ATTACK_KINDS)}")


class DataPoison:
    """The label-flip attack as the local training sees it: `of(client_id)` is the transform of
    an attacked client's batches (label_flip_images), None for every other client and run.
    (The attacks on the update are a stage of the uplink: federation/uplink_stages.py.)"""

    def __init__(self, cfg):
        a = cfg.attack
        self.attacked = frozenset(attacked_clients(a.clients or None, a.fraction or None,
                                                   cfg.federation.num_clients, cfg.seed)
                                  if a.kind == "label_flip" else ())

    def of(self, client_id: int) -> Optional[Callable]:
        return label_flip_images if client_id in self.attacked else None
