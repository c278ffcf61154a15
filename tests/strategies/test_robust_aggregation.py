"""Robust aggregation rules against hand-computed values (worked out in the comments)."""
from __future__ import annotations

import numpy as np
import pytest

from feddm_hpc.strategies import robust
from feddm_hpc.strategies.robust import (
    AGGREGATION_RULES,
    RobustResult,
    coordinate_median,
    krum,
    krum_scores,
    mean,
    multi_krum,
    robust_aggregate,
    squared_distances,
    trimmed_mean,
)


def f32(rows):
    return np.array(rows, dtype=np.float32)


def test_weighted_mean_hand_computed():
    # ((2, 0) * 1 + (6, 4) * 3) / 4 = (20, 12) / 4
    res = mean(f32([[2, 0], [6, 4]]), np.array([1.0, 3.0]))
    assert res.vector.dtype == np.float64
    np.testing.assert_array_equal(res.vector, [5.0, 3.0])
    assert res.selected_rows == (0, 1)


def test_weighted_mean_errors():
    u = f32([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="shape"):
        mean(u, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="sum to zero"):
        mean(u, np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="non-negative"):
        mean(u, np.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="no client update"):
        mean(np.zeros((0, 3), np.float32), np.zeros(0))
    with pytest.raises(ValueError, match="2-D"):
        mean(np.zeros(3, np.float32), np.ones(3))


def test_median_of_three_rows():
    # columns sorted: (1, 2, 3) (1, 5, 9) (-2, 0, 4)
    res = coordinate_median(f32([[1, 5, -2], [3, 1, 0], [2, 9, 4]]))
    np.testing.assert_array_equal(res.vector, [2.0, 5.0, 0.0])
    assert res.selected_rows == (0, 1, 2)


def test_median_of_four_rows_averages_the_middle_pair():
    # columns sorted: (1, 2, 3, 10) -> 2.5; (1, 2, 5, 9) -> 3.5; (-2, 0, 1, 4) -> 0.5; (0, 0, 1, 1) -> 0.5
    res = coordinate_median(f32([[1, 5, -2, 0], [3, 1, 0, 0], [2, 9, 4, 1], [10, 2, 1, 1]]))
    np.testing.assert_array_equal(res.vector, [2.5, 3.5, 0.5, 0.5])


def test_median_middle_pair_is_averaged_in_float64():
    # 1 and the next float32 above it, 1 + 2^-23: their mean 1 + 2^-24 exists only in float64.
    up = float(np.nextafter(np.float32(1), np.float32(2)))
    res = coordinate_median(f32([[1.0], [up], [0.0], [5.0]]))
    assert res.vector[0] == 1.0 + 2.0 ** -24


def test_trimmed_mean_drops_the_outlier_each_side():
    # k = 5, trim 0.2 -> t = 1. Column 0 sorted (1, 2, 3, 4, 100) keeps (2, 3, 4) -> 3;
    # column 1 sorted (-50, 0, 1, 2, 3) keeps (0, 1, 2) -> 1.
    u = f32([[1, 0], [100, -50], [3, 1], [2, 2], [4, 3]])
    res = trimmed_mean(u, 0.2)
    np.testing.assert_array_equal(res.vector, [3.0, 1.0])
    assert res.selected_rows == (0, 1, 2, 3, 4)
    # floor(0.39 * 5) = 1 too; floor(0.1 * 5) = 0 is the plain mean: (1+2+3+4+100)/5, (0-50+1+2+3)/5
    np.testing.assert_array_equal(trimmed_mean(u, 0.39).vector, [3.0, 1.0])
    np.testing.assert_allclose(trimmed_mean(u, 0.1).vector, [22.0, -8.8], rtol=1e-15)


def test_trimmed_mean_even_k():
    # k = 4, trim 0.25 -> t = 1: (1, 2, 3, 4) keeps (2, 3) -> 2.5
    np.testing.assert_array_equal(trimmed_mean(f32([[4], [1], [3], [2]]), 0.25).vector, [2.5])


@pytest.mark.parametrize("fraction", [0.5, 0.7, -0.1])
def test_trimmed_mean_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match=r"trim_fraction must be in \[0, 0.5\)"):
        trimmed_mean(f32([[1], [2], [3]]), fraction)


# Five 2-D updates, f = 1, so each score sums the k - f - 2 = 2 smallest squared distances.
# Honest: (1,0), (0,0), (-1,0), (0,1); the centre (0,0) is at distance 1 from the other three.
# (1,0): 1 to the centre, 2 to (0,1), 4 to (-1,0) -> 3; likewise (-1,0) and (0,1) -> 3;
# (0,0): 1 + 1 -> 2; outlier (100,100): 99^2+100^2 = 19801 twice -> 39602.
CLUSTER = f32([[1, 0], [100, 100], [0, 0], [-1, 0], [0, 1]])


def test_krum_scores_and_choice_of_the_honest_centre():
    np.testing.assert_array_equal(krum_scores(CLUSTER, 1), [3, 39602, 2, 3, 3])
    res = krum(CLUSTER, 1)
    assert res.selected_rows == (2,)
    np.testing.assert_array_equal(res.vector, [0.0, 0.0])
    assert res.vector.dtype == np.float64


def test_squared_distances_are_exact_and_symmetric():
    d = squared_distances(CLUSTER)
    assert d[0, 1] == d[1, 0] == 99 ** 2 + 100 ** 2
    assert d[0, 3] == 4 and d[2, 4] == 1 and np.all(np.diag(d) == 0)
    np.testing.assert_array_equal(d, d.T)


# Six updates (x, -x) with x = 0, 1, 4, 6, 100, 2; f = 1 -> 3 nearest. Squared distances of x
# (doubled by the -x column): x=0: 1, 4, 16 -> 21; x=1: 1, 1, 9 -> 11; x=4: 4, 4, 9 -> 17;
# x=6: 4, 16, 25 -> 45; x=100: 8836, 9216, 9604 -> 27656; x=2: 1, 4, 4 -> 9.
SIX = f32([[x, -x] for x in (0, 1, 4, 6, 100, 2)])


def test_multi_krum_averages_the_lowest_scores():
    np.testing.assert_array_equal(krum_scores(SIX, 1), [42, 22, 34, 90, 55312, 18])
    res = multi_krum(SIX, 1, 3)          # rows 5 (2), 1 (1), 2 (4): (1 + 4 + 2) / 3
    assert res.selected_rows == (1, 2, 5)
    np.testing.assert_allclose(res.vector, [7 / 3, -7 / 3], rtol=1e-15)
    res = multi_krum(SIX, 1, 2)          # rows 1 and 5: (1 + 2) / 2
    assert res.selected_rows == (1, 5)
    np.testing.assert_array_equal(res.vector, [1.5, -1.5])


def test_multi_krum_of_one_is_krum():
    for u in (SIX, CLUSTER):
        a, b = krum(u, 1), multi_krum(u, 1, 1)
        assert a.selected_rows == b.selected_rows
        np.testing.assert_array_equal(a.vector, b.vector)


def test_krum_ties_go_to_the_lowest_row():
    # (1,0), (0,1), (-1,0), (0,-1) all score 2 + 2 = 4 (their two nearest are the neighbours at
    # distance^2 2); the outlier comes first, so the first honest row is row 1.
    u = f32([[50, 50], [1, 0], [0, 1], [-1, 0], [0, -1]])
    np.testing.assert_array_equal(krum_scores(u, 1)[1:], [4, 4, 4, 4])
    assert krum(u, 1).selected_rows == (1,)
    assert multi_krum(u, 1, 2).selected_rows == (1, 2)
    # Only the row order decides: reversed, the tie goes to (0,-1), now row 0.
    rev = krum(u[::-1], 1)
    assert rev.selected_rows == (0,)
    np.testing.assert_array_equal(rev.vector, [0.0, -1.0])


def test_krum_errors_name_num_byzantine_and_k():
    four = f32([[0], [1], [2], [3]])
    with pytest.raises(ValueError, match=r"num_byzantine = 1 .*k = 4"):
        krum(four, 1)                    # needs k > 2 * 1 + 2 = 4
    with pytest.raises(ValueError, match="num_byzantine = 2"):
        multi_krum(CLUSTER, 2, 1)
    with pytest.raises(ValueError, match="num_byzantine must be >= 0"):
        krum(CLUSTER, -1)
    assert krum(four, 0).selected_rows in {(1,), (2,)}   # f = 0 needs k > 2 only
    with pytest.raises(ValueError, match="num_selected"):
        multi_krum(CLUSTER, 1, 0)
    with pytest.raises(ValueError, match=r"num_selected must be in \[1, k - num_byzantine\] = \[1, 4\]"):
        multi_krum(CLUSTER, 1, 5)


def test_robust_rules_resist_one_huge_update_and_mean_does_not():
    rng = np.random.default_rng(0)
    honest = (1.0 + 0.1 * rng.standard_normal((6, 50))).astype(np.float32)
    u = honest.copy()
    u[2] *= 1e6
    rest = np.delete(honest, 2, axis=0)
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    assert np.abs(mean(u, np.ones(6)).vector - 1.0).min() > 1e4      # dragged ~1e6 / 6 away
    for res in (coordinate_median(u), trimmed_mean(u, 0.2), krum(u, 1), multi_krum(u, 1, 3)):
        assert np.all(res.vector >= lo - 1e-6) and np.all(res.vector <= hi + 1e-6)
    assert 2 not in krum(u, 1).selected_rows and 2 not in multi_krum(u, 1, 4).selected_rows


def test_column_blocks_do_not_change_the_result(monkeypatch):
    # n = 5 in blocks of 2 (the last one short) gives the hand-computed values above.
    u = f32([[1, 0, 1, 5, 1], [100, -50, 3, 1, 2], [3, 1, 2, 9, 3], [2, 2, 10, 2, 4], [4, 3, 0, 0, 5]])
    monkeypatch.setattr(robust, "_CHUNK", 2)
    np.testing.assert_array_equal(trimmed_mean(u, 0.2).vector[:2], [3.0, 1.0])
    np.testing.assert_array_equal(coordinate_median(u).vector, [3, 1, 2, 2, 3])
    np.testing.assert_array_equal(krum_scores(CLUSTER, 1), [3, 39602, 2, 3, 3])


# Seven columns in blocks of 3 (cols 0-2, 3-5 and a short 6): each pair's distance lies in one
# block or spreads over two, so a score is right only if every block's part is added. f = 1: the
# two nearest. Row 1 differs from all in block 0 only (9, 9, 9: 243 to the centre row 2), rows
# 0 and 3 in block 1, row 4 in the last block; rows 0, 3, 4 are 1 from the centre, 2 apart.
# Scores: row 0: 1 + 2 = 3; row 1: 243 + 244 = 487; row 2: 1 + 1 = 2; rows 3, 4: 3. Krum: row 2.
# The last block alone would see only row 4's 1 (every other score 0, krum row 0, the outlier's
# 0 among them); the first block alone only the outlier (krum row 0 again).
BLOCKS = f32([[0, 0, 0, 1, 0, 0, 0], [9, 9, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0],
              [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1]])


def test_krum_adds_the_squared_distances_of_every_column_block(monkeypatch):
    monkeypatch.setattr(robust, "_CHUNK", 3)
    d = squared_distances(BLOCKS)
    assert d[1, 2] == 243 and d[0, 1] == d[1, 3] == d[1, 4] == 244
    assert d[0, 2] == d[2, 3] == d[2, 4] == 1 and d[0, 3] == d[0, 4] == d[3, 4] == 2
    np.testing.assert_array_equal(krum_scores(BLOCKS, 1), [3, 487, 2, 3, 3])
    assert krum(BLOCKS, 1).selected_rows == (2,)
    assert multi_krum(BLOCKS, 1, 3).selected_rows == (0, 2, 3)   # 3, 2, 3 (ties: lower rows)
    # Integer-valued rows over many blocks (and a short last one) against numpy brute force:
    # every sum is exact in float64, so the block sums must equal it bit for bit.
    rng = np.random.default_rng(3)
    u = rng.integers(-8, 9, size=(7, 100)).astype(np.float32)
    u[5] += 20                                                    # an outlier, away in every block
    brute = ((u[:, None, :].astype(np.float64) - u[None, :, :]) ** 2).sum(axis=2)
    for chunk in (7, 16, 100, 1 << 15):
        monkeypatch.setattr(robust, "_CHUNK", chunk)
        np.testing.assert_array_equal(squared_distances(u), brute)
        scores = krum_scores(u, 2)                                # k - f - 2 = 3 nearest
        expected = [np.sort(np.delete(brute[i], i))[:3].sum() for i in range(7)]
        np.testing.assert_array_equal(scores, expected)
        assert krum(u, 2).selected_rows == (int(np.argmin(expected)),)
        assert 5 not in multi_krum(u, 2, 4).selected_rows


def test_results_depend_on_contents_and_row_order_only():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((7, 1000)).astype(np.float32)
    w = rng.uniform(1, 10, 7)
    fortran = np.asfortranarray(u)
    strided = np.repeat(u, 2, axis=1)[:, ::2]    # same contents, non-contiguous rows
    for rule in AGGREGATION_RULES:
        results = [robust_aggregate(rule, x, w, trim_fraction=0.2, num_byzantine=1, num_selected=3)
                   for x in (u, u.copy(), fortran, strided)]
        for other in results[1:]:
            assert other.selected_rows == results[0].selected_rows
            np.testing.assert_array_equal(other.vector, results[0].vector)


def test_robust_aggregate_dispatches_each_rule():
    w = np.array([1.0, 2.0, 1.0, 1.0, 1.0])
    kw = dict(trim_fraction=0.2, num_byzantine=1, num_selected=2)
    expected = {"mean": mean(CLUSTER, w), "median": coordinate_median(CLUSTER),
                "trimmed_mean": trimmed_mean(CLUSTER, 0.2), "krum": krum(CLUSTER, 1),
                "multi_krum": multi_krum(CLUSTER, 1, 2)}
    assert set(expected) == set(AGGREGATION_RULES)
    for rule, want in expected.items():
        got = robust_aggregate(rule, CLUSTER, w, **kw)
        assert isinstance(got, RobustResult) and got.selected_rows == want.selected_rows
        np.testing.assert_array_equal(got.vector, want.vector)
    with pytest.raises(ValueError, match="'bulyan' is not one of mean, median"):
        robust_aggregate("bulyan", CLUSTER, w, **kw)
