import numpy as np
import pytest

from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.placement import assign_clients, client_to_rank, select_device, threads_per_rank


def test_every_client_on_exactly_one_rank_and_balanced():
    sizes = [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    hosted = assign_clients(sizes, 3)
    flat = sorted(c for h in hosted for c in h)
    assert flat == list(range(10))
    loads = [sum(sizes[c] for c in h) for h in hosted]
    assert max(loads) - min(loads) <= max(sizes)
    assert all(h == sorted(h) for h in hosted)
    assert client_to_rank(hosted)[0] in range(3)


def test_balanced_by_samples_not_by_count():
    hosted = assign_clients([1000, 10, 10, 10, 10], 2)
    assert hosted[0] == [0]
    assert hosted[1] == [1, 2, 3, 4]


def test_deal_matches_the_documented_rule_by_hand():
    """Heaviest first onto the least-loaded rank, ties to the lowest rank, equal sizes in id order."""
    # Equal sizes: dealt round-robin in id order.
    assert assign_clients([5] * 7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    # 10 -> r0; 7, 7 -> r1, r2; 5 -> r1 (tie at 7, lower rank); 3 -> r2 (7);
    # 3 -> r0 (tie at 10 with r2, lower rank); 1 -> r2 (10).
    sizes = [10, 7, 7, 5, 3, 3, 1]
    assert assign_clients(sizes, 3) == [[0, 5], [1, 3], [2, 4, 6]]
    # The same deal whatever sequence type holds the sizes, and for the ids in another order
    # (ids follow their sizes: client 6 of size 10 goes first, then 4 and 5 of size 7).
    expected = [[0, 5], [1, 3], [2, 4, 6]]
    assert assign_clients(tuple(sizes), 3) == assign_clients(np.array(sizes), 3) == expected
    assert assign_clients(sizes[::-1], 3) == [[2, 6], [3, 4], [0, 1, 5]]


def test_more_ranks_than_clients_is_an_error():
    with pytest.raises(ConfigError, match="federation.num_clients"):
        assign_clients([10, 10], 3)


@pytest.mark.parametrize("setting, local_rank, cuda, count, expected", [
    ("auto", 0, False, 0, "cpu"),
    ("auto", 3, True, 2, "cuda:1"),
    ("auto", 2, True, 2, "cuda:0"),
    ("cuda", 1, True, 4, "cuda:1"),
    ("cpu", 1, True, 4, "cpu"),
    ("cuda:1", 0, True, 2, "cuda:1"),
])
def test_device_selection(setting, local_rank, cuda, count, expected):
    assert select_device(setting, local_rank, cuda_available=cuda, device_count=count) == expected


def test_device_errors():
    with pytest.raises(ConfigError, match="system.device"):
        select_device("cuda", 0, cuda_available=False, device_count=0)
    with pytest.raises(ConfigError, match="system.device"):
        select_device("cuda:2", 0, cuda_available=True, device_count=2)


def test_threads_precedence():
    assert threads_per_rank(3, 2, env={"OMP_NUM_THREADS": "5"}, cores=16) == 3
    assert threads_per_rank(0, 2, env={"OMP_NUM_THREADS": "5", "SLURM_CPUS_PER_TASK": "4"}, cores=16) == 5
    assert threads_per_rank(0, 2, env={"SLURM_CPUS_PER_TASK": "4"}, cores=16) == 4
    assert threads_per_rank(0, 4, env={}, cores=16) == 4
    assert threads_per_rank(0, 3, env={}, cores=2) == 1


def test_round_placement_balances_steps_and_allows_idle_ranks():
    from feddm_hpc.federation.placement import round_placement

    # equal steps: arrivals dealt alternately in their given order, then sorted per rank
    assert round_placement([7, 3, 9, 1], [10, 10, 10, 10], 2) == [[7, 9], [1, 3]]
    assert round_placement([5], [10], 3) == [[5], [], []]
    groups = round_placement([0, 1, 2], [30, 10, 10], 2)
    assert groups == [[0], [1, 2]]


def test_per_round_placement_needs_stateless_clients():
    from feddm_hpc.config import config_from_tree

    with pytest.raises(ConfigError, match="system.placement"):
        config_from_tree({"system": {"placement": "per_round"}, "federation": {"algorithm": "scaffold"},
                          "client": {"optimizer": "sgd", "momentum": 0.0, "grad_clip": None}})
    with pytest.raises(ConfigError, match="system.placement"):
        config_from_tree({"system": {"placement": "per_round"},
                          "compression": {"uplink": "quant", "bits": 4, "error_feedback": True}})
    assert config_from_tree({"system": {"placement": "per_round"}}).system.placement == "per_round"
