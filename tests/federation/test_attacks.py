"""Client attacks: hand-computed values, reproducible noise, and who is attacked."""
from __future__ import annotations

import numpy as np
import pytest

from feddm_hpc import seeding
from feddm_hpc.federation.attacks import (
    ATTACK_KINDS,
    ATTACK_PURPOSE,
    UPDATE_ATTACKS,
    apply_update_attack,
    attack_count,
    attack_rng,
    attacked_clients,
    gaussian,
    label_flip_images,
    scaled,
    sign_flip,
)


def f32(values):
    return np.array(values, dtype=np.float32)


def test_attack_purpose_is_seedings_and_keeps_its_number():
    # Its own stream (uniqueness: tests/test_seeding_purposes.py); 15 as before, so runs with
    # attacks draw the same attacked clients and noise as before the purposes moved to seeding.
    assert ATTACK_PURPOSE == seeding.ATTACK == 15
    assert set(UPDATE_ATTACKS) < set(ATTACK_KINDS) and "label_flip" in ATTACK_KINDS


def test_sign_flip_and_scaled_hand_computed():
    u = f32([1.5, -2.0, 0.0, 0.25])
    out = sign_flip(u)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-1.5, 2.0, 0.0, -0.25])
    np.testing.assert_array_equal(u, [1.5, -2.0, 0.0, 0.25])          # input untouched
    out = scaled(u, 3.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [4.5, -6.0, 0.0, 0.75])
    np.testing.assert_array_equal(scaled(u, -0.5), [-0.75, 1.0, 0.0, -0.125])


def test_gaussian_replaces_the_update_with_reproducible_noise_of_std_scale():
    shape = (200_000,)
    a = gaussian(np.zeros(shape, np.float32), 0.5, np.random.default_rng(3))
    b = gaussian(np.full(shape, 1e9, np.float32), 0.5, np.random.default_rng(3))
    assert a.dtype == np.float32 and a.shape == shape
    np.testing.assert_array_equal(a, b)             # the update's values play no part
    assert abs(a.std() - 0.5) < 0.005 and abs(a.mean()) < 0.005
    assert not np.array_equal(a, gaussian(np.zeros(shape, np.float32), 0.5, np.random.default_rng(4)))
    np.testing.assert_array_equal(gaussian(f32([[1, 2], [3, 4]]), 0.0, np.random.default_rng(0)),
                                  np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scale"):
        gaussian(f32([1]), -1.0, np.random.default_rng(0))


def test_label_flip_inverts_intensities_in_range():
    images = f32([[[-1.0, 0.25], [1.0, 0.0]]])
    out = label_flip_images(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, [[[1.0, -0.25], [-1.0, 0.0]]])
    np.testing.assert_array_equal(label_flip_images(out), images)


def test_attacked_clients_explicit_ids_are_validated_and_sorted():
    assert attacked_clients([4, 1, 2], None, 10, seed=0) == (1, 2, 4)
    assert attacked_clients([np.int64(9)], None, 10, seed=0) == (9,)
    assert attacked_clients(None, None, 10, seed=0) == ()
    for bad, message in (([0, 10], r"10 is out of range \[0, 10\)"), ([-1], "out of range"),
                         ([1, 1], "duplicates"), ([1.5], "not an integer")):
        with pytest.raises(ValueError, match=message):
            attacked_clients(bad, None, 10, seed=0)
    with pytest.raises(ValueError, match="not both"):
        attacked_clients([1], 0.5, 10, seed=0)


def test_attacked_clients_by_fraction_draw_once_from_the_attack_stream():
    got = attacked_clients(None, 0.3, 10, seed=7)
    want = sorted(seeding.numpy_rng(7, 15, 0, 0).choice(10, size=3, replace=False).tolist())
    assert got == tuple(want) and len(set(got)) == 3
    assert all(isinstance(c, int) for c in got)
    # Same inputs, same ids (each rank computes them alone); another seed, another draw.
    assert attacked_clients(None, 0.3, 10, seed=7) == got
    assert attacked_clients(None, 0.5, 40, seed=1) != attacked_clients(None, 0.5, 40, seed=2)
    assert attacked_clients(None, 0.0, 10, seed=7) == ()
    assert attacked_clients(None, 1.0, 10, seed=7) == tuple(range(10))
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        attacked_clients(None, 1.5, 10, seed=7)


def test_attack_count_rounds_halves_up():
    assert attack_count(0.25, 10) == 3        # 2.5 -> 3 (Python's round would give 2)
    assert attack_count(0.3, 10) == 3         # 0.3 * 10 = 3.0000000000000004
    assert attack_count(0.04, 10) == 0 and attack_count(0.05, 10) == 1


def test_attack_rng_is_per_round_and_client_and_apart_from_the_selection():
    first = attack_rng(7, 0, 0).random()
    assert first == seeding.numpy_rng(7, 15, 0, 1).random()
    assert first != seeding.numpy_rng(7, 15, 0, 0).random()      # the attacked_clients draw
    assert first != attack_rng(7, 1, 0).random() and first != attack_rng(7, 0, 1).random()


def test_apply_update_attack_dispatches():
    u = f32([1.0, -2.0])
    np.testing.assert_array_equal(apply_update_attack("sign_flip", u, 5.0, None), [-1.0, 2.0])
    np.testing.assert_array_equal(apply_update_attack("scaled", u, 5.0, None), [5.0, -10.0])
    np.testing.assert_array_equal(apply_update_attack("gaussian", u, 2.0, attack_rng(1, 3, 4)),
                                  gaussian(u, 2.0, attack_rng(1, 3, 4)))
    with pytest.raises(ValueError, match="needs an rng"):
        apply_update_attack("gaussian", u, 2.0, None)
    with pytest.raises(ValueError, match="label_flip_images"):
        apply_update_attack("label_flip", u, 1.0, None)
    with pytest.raises(ValueError, match="'noise' is not one of sign_flip, scaled, gaussian"):
        apply_update_attack("noise", u, 1.0, None)
