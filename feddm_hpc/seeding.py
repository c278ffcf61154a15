"""Counter-based seeds: every random draw derives from (seed, purpose, round, client_id).

Nothing derives from the MPI rank, so a client's training is the same whichever rank hosts it,
and nothing carries hidden generator state across rounds, so a resume needs no RNG snapshot.
"""
from __future__ import annotations

import enum

import numpy as np


# Distinct streams for distinct purposes, so that e.g. the cohort draw never correlates with training.
# DROPOUT is the model's dropout layers; PARTICIPATION is client dropout (failing to report).
# Every purpose of the package is a member here: @unique refuses two purposes sharing a number at
# import, and tests/test_seeding.py fails on a purpose number defined anywhere else. New purposes
# are appended: renumbering would change every existing run's random draws.
@enum.unique
class Purpose(enum.IntEnum):
    COHORT = 0
    TRAIN = 1
    DROPOUT = 2
    ENCODE = 3
    SAMPLE = 4
    PARTITION = 5
    INIT = 6
    PARTICIPATION = 7
    SPEED = 8
    CONTROL_ENCODE = 9
    PERSONAL_SPLIT = 10
    PERSONAL_TRAIN = 11
    PERSONAL_DROPOUT = 12
    PERSONAL_EVAL = 13
    DP_NOISE = 14        # the server's Gaussian noise of client-level DP (feddm_hpc.privacy.dp)
    ATTACK = 15          # who is attacked and the Gaussian attack (federation/attacks.py)
    COHORT_PASS = 16     # the permutation of one pass of shuffled cohorts (sample_cohort)
    # Secure aggregation's mask seeds (privacy/secagg.py). It shared 16 with COHORT_PASS until
    # both streams were moved here; the masks cancel exactly, so no result depends on it.
    SECAGG = 17
    # Each client's own samples of a partially shared run (evaluation/mixture.py): the seed
    # its generation uses in place of the run's, so clients never share starting noise.
    CLIENT_SAMPLE = 18
    # The scaling harness's simulated network links (scaling/network.py); its large number
    # predates this table and is kept so that committed scaling studies draw the same links.
    NETWORK = 7_000_001


(COHORT, TRAIN, DROPOUT, ENCODE, SAMPLE, PARTITION, INIT, PARTICIPATION, SPEED, CONTROL_ENCODE,
 PERSONAL_SPLIT, PERSONAL_TRAIN, PERSONAL_DROPOUT, PERSONAL_EVAL, DP_NOISE, ATTACK, COHORT_PASS,
 SECAGG, CLIENT_SAMPLE, NETWORK) = (int(p) for p in Purpose)


def seed_for(seed: int, purpose: int, round_index: int = 0, client_id: int = 0) -> int:
    """A 63-bit integer seed for torch.Generator.manual_seed or numpy."""
    ss = np.random.SeedSequence([int(seed), int(purpose), int(round_index), int(client_id)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def client_sample_seed(seed: int, client_id: int) -> int:
    """The seed client `client_id`'s samples use in place of the run's seed (partial sharing:
    each client's model draws its own noise; evaluation/mixture.py, diffusion/grids.py)."""
    return seed_for(seed, Purpose.CLIENT_SAMPLE, 0, client_id)


def numpy_rng(seed: int, purpose: int, round_index: int = 0, client_id: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([int(seed), int(purpose), int(round_index), int(client_id)])))


def sample_cohort(seed: int, round_index: int, num_clients: int, per_round,
                  scheme: str = "uniform") -> np.ndarray:
    """The clients of one round, sorted by id; identical on every rank without communication.

    uniform: m of the N clients uniformly without replacement, independently each round (what the
    DP accounting assumes). shuffled: random reshuffling; a pass of ceil(N/m) rounds cuts one
    seeded permutation of the clients into cohorts, so every client takes part once per pass and
    a few rounds cannot leave whole clients (and the labels only they hold) out of training. When m
    does not divide N, the pass's last cohort is topped up with the permutation's first clients,
    so every cohort still has m members. Both are functions of (seed, round) alone: resumable and
    rank-invariant.
    """
    if per_round is None or per_round >= num_clients:
        return np.arange(num_clients, dtype=np.int64)
    if scheme == "shuffled":
        rounds_per_pass = -(-num_clients // per_round)
        pass_index, k = divmod(int(round_index), rounds_per_pass)
        perm = numpy_rng(seed, COHORT_PASS, pass_index).permutation(num_clients)
        chunk = perm[k * per_round:(k + 1) * per_round]
        chunk = np.concatenate([chunk, perm[:per_round - len(chunk)]])
        return np.sort(chunk).astype(np.int64)
    rng = numpy_rng(seed, COHORT, round_index)
    return np.sort(rng.choice(num_clients, size=per_round, replace=False)).astype(np.int64)
