"""Simulated secure aggregation: exact recovery under dropout, masked payloads that look uniform,
masks that cancel only for the whole cohort, the public grid's error and unbiasedness, the ring
capacity check, the threshold check and the protocol's byte count worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from feddm_hpc.privacy import secagg as sa

SEED, ROUND = 1234, 7
N = 4099  # odd length: nothing may rely on blocks or pairs of words


def random_codes(num, bits, n=N, seed=0):
    """num clients' codes, uniform in [0, 2**bits - 1], as uint32."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1 << bits, n, dtype=np.uint32) for _ in range(num)]


def plain_sum(codes):
    """The codes' sum in int64 (no wrap), to compare with the ring result."""
    return np.sum([c.astype(np.int64) for c in codes], axis=0)


@pytest.mark.parametrize("size, num_dropped",
                         [(s, d) for s in (2, 3, 7) for d in (0, 1, 2) if d < s])
def test_recovered_sum_is_exact_under_dropout(size, num_dropped):
    cohort = [3 * k + 5 for k in range(size)]  # ids need not be 0..n-1
    codes = dict(zip(cohort, random_codes(size, 16, seed=size)))
    masked = {c: sa.mask_codes(codes[c], c, cohort, SEED, ROUND) for c in cohort}
    # Drop the middle client, or both ends: survivors lie on both sides of a dropped id, so the
    # leftover pair masks of both signs occur.
    dropped = [cohort[k] for k in {0: [], 1: [size // 2], 2: [0, size - 1]}[num_dropped]]
    survivors = [c for c in cohort if c not in dropped]
    total = sa.ring_sum([masked[c] for c in survivors])
    got = sa.unmask_sum(total, survivors, dropped, cohort, SEED, ROUND, threshold=1)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, plain_sum([codes[c] for c in survivors]).astype(np.uint32))
    np.testing.assert_array_equal(got, sa.ring_sum([codes[c] for c in survivors]))


def test_masking_leaves_the_codes_and_is_deterministic():
    cohort = [0, 1, 2]
    codes = random_codes(1, 8)[0]
    before = codes.copy()
    a = sa.mask_codes(codes, 1, cohort, SEED, ROUND)
    np.testing.assert_array_equal(codes, before)
    np.testing.assert_array_equal(a, sa.mask_codes(codes, 1, [2, 0, 1], SEED, ROUND))
    assert not np.array_equal(a, sa.mask_codes(codes, 1, cohort, SEED, ROUND + 1))
    assert not np.array_equal(a, sa.mask_codes(codes, 1, cohort, SEED + 1, ROUND))
    # uint8 codes are accepted (a lossless cast); signed or wider ones are not.
    np.testing.assert_array_equal(a, sa.mask_codes(codes.astype(np.uint8), 1, cohort, SEED, ROUND))
    for bad in (codes.astype(np.int32), codes.astype(np.uint64), codes.astype(np.float32)):
        with pytest.raises(ValueError, match="unsigned"):
            sa.mask_codes(bad, 1, cohort, SEED, ROUND)
    with pytest.raises(ValueError, match="not in the cohort"):
        sa.mask_codes(codes, 3, cohort, SEED, ROUND)
    with pytest.raises(ValueError, match="twice"):
        sa.mask_codes(codes, 1, [0, 1, 1], SEED, ROUND)


def test_masked_payload_looks_uniform_and_uncorrelated():
    n = 200_000
    cohort = [0, 1, 2, 3]
    rng = np.random.default_rng(5)
    codes = [np.zeros(n, np.uint32), rng.integers(0, 256, n, dtype=np.uint32)]
    for cid, c in zip((0, 3), codes):
        m = sa.mask_codes(c, cid, cohort, SEED, ROUND)
        assert np.mean(m == c) < 1e-3  # not the codes
        # Uniform on [0, 2**32): mean 2**31 with standard error 2**32 / sqrt(12 n) ~ 2.8e6.
        assert abs(m.astype(np.float64).mean() - 2.0 ** 31) < 6 * 2.0 ** 32 / np.sqrt(12 * n)
        counts = np.bincount(m >> 28, minlength=16)  # top 4 bits: 16 equal bins
        assert np.all(np.abs(counts - n / 16) < 6 * np.sqrt(n / 16))
        if c.any():
            r = np.corrcoef(m.astype(np.float64), c.astype(np.float64))[0, 1]
            assert abs(r) < 5 / np.sqrt(n)
    # Two clients' payloads are uncorrelated with each other, too.
    m0, m3 = (sa.mask_codes(c, cid, cohort, SEED, ROUND) for cid, c in zip((0, 3), codes))
    assert abs(np.corrcoef(m0.astype(np.float64), m3.astype(np.float64))[0, 1]) < 5 / np.sqrt(n)


def test_pair_masks_cancel_only_for_the_whole_cohort():
    cohort = [0, 1, 2, 4]
    codes = dict(zip(cohort, random_codes(4, 8, seed=2)))
    masked = {c: sa.mask_codes(codes[c], c, cohort, SEED, ROUND) for c in cohort}

    def without_self_masks(members):
        """Ring sum of the members' payloads minus their self-masks: what the pair masks leave."""
        out = sa.ring_sum([masked[c] for c in members])
        for c in members:
            out -= sa.self_mask(SEED, ROUND, c, N)
        return out

    np.testing.assert_array_equal(without_self_masks(cohort), sa.ring_sum(list(codes.values())))
    for members in ([0], [0, 1], [1, 2, 4], [0, 2, 4]):
        got = without_self_masks(members)
        assert np.mean(got == sa.ring_sum([codes[c] for c in members])) < 1e-2
    # Nor does the plain sum of every payload give the codes: the self-masks remain.
    assert np.mean(sa.ring_sum(list(masked.values())) == sa.ring_sum(list(codes.values()))) < 1e-2


def test_seeds_are_symmetric_and_distinct():
    def state(ss):
        return tuple(ss.generate_state(4))

    assert state(sa.pair_seed(SEED, ROUND, 2, 5)) == state(sa.pair_seed(SEED, ROUND, 5, 2))
    states = {state(sa.self_seed(SEED, ROUND, i)) for i in range(6)}
    states |= {state(sa.pair_seed(SEED, ROUND, i, j)) for i in range(6) for j in range(i + 1, 6)}
    assert len(states) == 6 + 15
    with pytest.raises(ValueError, match="two clients"):
        sa.pair_seed(SEED, ROUND, 3, 3)


def test_unmask_checks_the_split_and_the_threshold():
    cohort = [0, 1, 2, 3, 4]
    masked = [sa.mask_codes(c, i, cohort, SEED, ROUND) for i, c in enumerate(random_codes(5, 4))]
    total = sa.ring_sum(masked[:2])
    with pytest.raises(ValueError, match="fewer than the threshold"):
        sa.unmask_sum(total, [0, 1], [2, 3, 4], cohort, SEED, ROUND)  # default 3 of 5
    with pytest.raises(ValueError, match="fewer than the threshold"):
        sa.unmask_sum(total, [0, 1], [2, 3, 4], cohort, SEED, ROUND, threshold=3)
    sa.unmask_sum(total, [0, 1], [2, 3, 4], cohort, SEED, ROUND, threshold=2)
    with pytest.raises(ValueError, match="threshold must be"):
        sa.unmask_sum(total, [0, 1], [2, 3, 4], cohort, SEED, ROUND, threshold=6)
    for survivors, dropped in (([0, 1], [2, 3]), ([0, 1], [1, 2, 3, 4]), ([0, 1, 5], [2, 3, 4])):
        with pytest.raises(ValueError, match="split the cohort"):
            sa.unmask_sum(total, survivors, dropped, cohort, SEED, ROUND, threshold=1)
    with pytest.raises(ValueError, match="uint32"):
        sa.unmask_sum(total.astype(np.int64), [0, 1], [2, 3, 4], cohort, SEED, ROUND, threshold=1)
    with pytest.raises(ValueError, match="uint32 vectors"):
        sa.ring_sum([masked[0], masked[1][:-1]])
    assert sa.default_threshold(5) == 3 and sa.default_threshold(2) == 2


# ---------------------------------------------------------------------------------------------
# Public grid

@pytest.mark.parametrize("bits", sa.VALID_BITS)
def test_grid_decode_is_within_one_scale_of_the_clipped_value(bits):
    r = 0.05
    x = np.random.default_rng(3).normal(0, 0.04, N).astype(np.float32)
    x[:3] = [-1.0, 1.0, r]  # clipped, and the top of the grid exactly
    q = sa.encode_grid(x, bits, r, np.random.default_rng(4))
    assert q.dtype == np.uint32 and q.max() <= (1 << bits) - 1
    err = sa.decode_grid_sum(q, bits, r, 1) - np.clip(x.astype(np.float64), -r, r)
    assert np.abs(err).max() < sa.grid_scale(bits, r) * (1 + 1e-12)
    assert list(q[:3]) == [0, (1 << bits) - 1, (1 << bits) - 1]


@pytest.mark.parametrize("bits", [2, 8])
def test_stochastic_rounding_is_unbiased(bits):
    r, draws = 1.0, 100_000
    values = np.array([-0.77, -0.1, 0.0, 0.123, 0.5, 0.999])
    x = np.repeat(values, draws)
    mean = sa.decode_grid_sum(sa.encode_grid(x, bits, r, np.random.default_rng(6)), bits, r, 1
                              ).reshape(values.size, draws).mean(axis=1)
    # Each draw errs by less than one scale, so its standard deviation is at most scale / 2.
    assert np.all(np.abs(mean - values) < 6 * sa.grid_scale(bits, r) / 2 / np.sqrt(draws))


def test_decode_of_a_sum_matches_the_sum_of_decodes():
    bits, r, m = 16, 0.3, 9
    rng = np.random.default_rng(8)
    codes = [sa.encode_grid(rng.uniform(-0.5, 0.5, N), bits, r, rng) for _ in range(m)]
    individual = np.sum([sa.decode_grid_sum(q, bits, r, 1) for q in codes], axis=0)
    together = sa.decode_grid_sum(sa.ring_sum(codes), bits, r, m)
    np.testing.assert_allclose(together, individual, rtol=0, atol=m * r * 1e-14)


def test_grid_and_ring_checks():
    assert sa.max_clients(16) == 65537 and sa.max_clients(8) == 16843009
    sa.check_ring_capacity(65537, 16)
    with pytest.raises(ValueError, match="sum past"):
        sa.check_ring_capacity(65538, 16)
    with pytest.raises(ValueError, match="sum past"):
        sa.decode_grid_sum(np.zeros(3, np.uint32), 16, 1.0, 65538)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="bits"):
        sa.encode_grid(np.zeros(3), 3, 1.0, rng)
    with pytest.raises(ValueError, match="clip_range"):
        sa.encode_grid(np.zeros(3), 8, 0.0, rng)
    with pytest.raises(ValueError, match="NaN or Inf"):
        sa.encode_grid(np.array([0.0, np.nan]), 8, 1.0, rng)


# ---------------------------------------------------------------------------------------------
# Bytes

def test_protocol_bytes_by_hand_for_three_clients_one_drop():
    got = sa.protocol_bytes(3, 1, threshold=2)
    # advertise: 3 clients x 2 keys x 32 up; each of 3 receives 3 x (4-byte id + 2 keys).
    assert got["advertise_keys"] == {"up": 192, "down": 612}
    # share keys: 3 x 2 ciphertexts of 2 ids (8) + 2 shares (64) + tag (16) = 88 bytes, forwarded.
    assert got["share_keys"] == {"up": 528, "down": 528}
    assert got["masked_input"] == {"up": 0, "down": 0}
    # unmasking: 2 survivors get the 2-id list; each sends 1 s_sk share + 2 b shares of 32 bytes.
    assert got["unmasking"] == {"up": 192, "down": 16}
    assert got["total"] == {"up": 912, "down": 1156}
    assert sa.masked_payload_size(1000) == 4000
    with pytest.raises(ValueError, match="fewer than the threshold"):
        sa.protocol_bytes(3, 2, threshold=2)
    with pytest.raises(ValueError, match="num_dropped"):
        sa.protocol_bytes(3, 4, threshold=1)
