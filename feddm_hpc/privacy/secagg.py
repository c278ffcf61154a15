"""Simulated secure aggregation (Bonawitz et al. 2017) of integer-quantized client updates.

The server should learn only the sum of the cohort's updates, never one client's update. Each
client quantizes its update on a shared public grid, adds masks to the integer codes in the ring
Z_{2**32} and sends only the masked vector; the masks cancel, or are removed, in the sum.

Public grid. Every coordinate is clipped to [-r, r] (r = clip_range, a public config value) and
mapped to a code q = stochastic_round((x + r) / (2r) * L) in [0, L], L = 2**bits - 1. Every
client uses the same grid, so codes add: the sum of m clients' codes decodes as
sum_q * (2r / L) - m * r. (The uplink codec in compression/quantize.py cannot be used: it gives
each client its own per-chunk min and scale, so codes of different clients do not add.) The sum
is exact in the ring as long as m * L < 2**32 (check_ring_capacity).

Double masking. For each pair i < j of the cohort, the clients share a seed s_ij (in the protocol
the result of a Diffie-Hellman key agreement); client i adds PRG(s_ij) for every j > i and
subtracts PRG(s_ji) for every j < i, so the pairwise masks of the whole cohort sum to zero. Each
client also adds a self-mask PRG(b_i) from a secret seed b_i of its own. All arithmetic is uint32,
which numpy wraps modulo 2**32. Masking needs only public information (the cohort) and the
client's own secrets, so it runs on whichever rank hosts the client.

Unmasking. The root sums the masked payloads that arrived (ring_sum). The clients whose payloads
never arrived (dropped) leave their pairwise masks with the survivors uncancelled; in the
protocol the survivors reveal their Shamir shares of each dropped client's key (from which the
server rebuilds s_dj for every survivor j) and of each survivor's b_j, and the server subtracts
those masks. The result is the survivors' exact code sum, bit for bit.

What is simulated, and what is not:
- There is no Diffie-Hellman and no Shamir secret sharing. Every seed is a deterministic function
  of (run seed, round, client ids) through np.random.SeedSequence, and the unmasking recomputes
  the seeds instead of reconstructing them from shares. Anyone who knows the run seed can unmask
  any client, so this measures cost and correctness, not secrecy.
- The threshold t (round_threshold: a majority, and at least privacy.secagg_min_clients) is
  enforced only as a check: unmasking raises unless at least t clients survive (in the protocol
  fewer than t shares cannot reconstruct a secret), and the round then aggregates nothing.
- The honest-but-curious variant: no signatures, no consistency-check round, and clients are
  assumed to drop only between sending their shares and sending their masked input (a client
  that drops earlier is simply not in the cohort).
- protocol_bytes counts the protocol's extra messages under a stated cost model; the masked
  payload itself is masked_payload_size bytes and is counted by the transport.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from feddm_hpc import seeding

SECAGG_PURPOSE = seeding.SECAGG   # the mask seeds' stream (feddm_hpc/seeding.py holds them all)

VALID_BITS = (2, 4, 8, 16)
RING_BITS = 32
RING_DTYPE = np.uint32
RING_BYTES = 4  # a masked coordinate is uniform in the whole ring: no packing below 32 bits

# Cost model of protocol_bytes (documented there).
KEY_BYTES = 32  # an X25519 public key
SHARE_BYTES = 32  # one Shamir share of a 32-byte secret: one field element
ID_BYTES = 4  # a client id where a message must carry one
TAG_BYTES = 16  # AEAD (AES-GCM) authentication tag of one share ciphertext


# ---------------------------------------------------------------------------------------------
# Public grid

def levels(bits: int) -> int:
    """L = 2**bits - 1, the largest code."""
    if bits not in VALID_BITS:
        raise ValueError(f"secure aggregation: bits must be one of {VALID_BITS}, got {bits}")
    return (1 << bits) - 1


def grid_scale(bits: int, clip_range: float) -> float:
    """Distance 2r / L between neighbouring grid points; stochastic rounding errs by less."""
    return 2.0 * _check_range(clip_range) / levels(bits)


def _check_range(clip_range: float) -> float:
    r = float(clip_range)
    if not (np.isfinite(r) and r > 0):
        raise ValueError(f"secure aggregation: clip_range must be finite and > 0, got {clip_range}")
    return r


def max_clients(bits: int) -> int:
    """The most clients whose code sum cannot wrap the ring: m * L < 2**32."""
    return ((1 << RING_BITS) - 1) // levels(bits)


def check_ring_capacity(num_clients: int, bits: int) -> None:
    """ValueError unless num_clients * (2**bits - 1) < 2**32, so that the ring sum of that many
    clients' codes is their true integer sum (the masks wrap freely; the codes must not)."""
    if num_clients * levels(bits) >= 1 << RING_BITS:
        raise ValueError(f"secure aggregation: {num_clients} clients of {bits}-bit codes can sum "
                         f"past 2**{RING_BITS} (at most {max_clients(bits)} fit)")


def encode_grid(x: np.ndarray, bits: int, clip_range: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Codes of x on the public grid, as uint32 in [0, 2**bits - 1].

    Clips to [-r, r], then q = floor(v + u) with v = (x + r) / (2r) * L and u ~ U[0, 1) drawn as
    x.size float64 uniforms in element order, so E[q] = v exactly (unbiased) and |q - v| < 1.
    float64 throughout: with 16-bit codes float32 would keep only a few bits of u. ValueError if
    x has NaN or Inf (a diverged update must not be clipped silently into the aggregate)."""
    top = levels(bits)
    r = _check_range(clip_range)
    x = np.asarray(x)
    if not np.isfinite(x).all():
        raise ValueError("update contains NaN or Inf values; it cannot be put on the grid")
    v = np.clip(x.reshape(-1), -r, r).astype(np.float64)
    v += r
    v *= top / (2.0 * r)
    v += rng.random(v.size)
    np.floor(v, out=v)
    np.minimum(v, top, out=v)  # v = L plus u near 1 can round up to L + 1
    return v.astype(RING_DTYPE)


def decode_grid_sum(sum_codes: np.ndarray, bits: int, clip_range: float, num_clients: int
                    ) -> np.ndarray:
    """float64 estimate of the sum of num_clients clipped updates from the sum of their codes:
    sum_q * (2r / L) - m * r (each code decodes to q * 2r / L - r). num_clients = 1 decodes one
    client's codes. Checks the ring capacity, since a wrapped sum would decode to garbage."""
    if num_clients < 1:
        raise ValueError(f"secure aggregation: num_clients must be >= 1, got {num_clients}")
    check_ring_capacity(num_clients, bits)
    r = _check_range(clip_range)
    out = np.asarray(sum_codes).astype(np.float64)
    out *= 2.0 * r / levels(bits)
    out -= num_clients * r
    return out


# ---------------------------------------------------------------------------------------------
# Seeds and masks

def pair_seed(seed: int, round_index: int, i: int, j: int) -> np.random.SeedSequence:
    """s_ij, the seed clients i and j share (stands in for their Diffie-Hellman agreement).
    Symmetric: pair_seed(.., i, j) == pair_seed(.., j, i). ValueError if i == j."""
    if i == j:
        raise ValueError(f"secure aggregation: a pair needs two clients, got {i} twice")
    lo, hi = min(i, j), max(i, j)
    return np.random.SeedSequence([int(seed), SECAGG_PURPOSE, int(round_index), lo, hi])


def self_seed(seed: int, round_index: int, i: int) -> np.random.SeedSequence:
    """b_i, client i's self-mask seed. Its entropy (.., i, i) is never a pair's (.., lo, hi)
    with lo < hi, even though SeedSequence ignores trailing zeros: only (.., 0, 0) has any, and
    no pair does (hi >= 1)."""
    return np.random.SeedSequence([int(seed), SECAGG_PURPOSE, int(round_index), int(i), int(i)])


def prg(seed_seq: np.random.SeedSequence, n: int) -> np.ndarray:
    """n uint32 words, uniform on the whole ring, as a function of the seed alone."""
    return np.random.Generator(np.random.PCG64(seed_seq)).integers(
        0, 1 << RING_BITS, n, dtype=RING_DTYPE)


def pair_mask(seed: int, round_index: int, i: int, j: int, n: int) -> np.ndarray:
    """PRG(s_ij): client min(i, j) adds it, client max(i, j) subtracts it."""
    return prg(pair_seed(seed, round_index, i, j), n)


def self_mask(seed: int, round_index: int, i: int, n: int) -> np.ndarray:
    """PRG(b_i), added by client i alone."""
    return prg(self_seed(seed, round_index, i), n)


def _cohort(cohort: Iterable[int]) -> list[int]:
    """The cohort as a sorted list of distinct ints (the order clients are given in is moot)."""
    ids = sorted(int(c) for c in cohort)
    if len(set(ids)) != len(ids):
        raise ValueError("secure aggregation: the cohort lists a client twice")
    if ids and ids[0] < 0:
        raise ValueError(f"secure aggregation: client ids must be >= 0, got {ids[0]}")
    return ids


def _as_ring(codes: np.ndarray) -> np.ndarray:
    """codes as a fresh 1-D uint32 array; only unsigned dtypes up to 32 bits are accepted,
    so no value can change in the cast."""
    codes = np.asarray(codes)
    if codes.dtype.kind != "u" or codes.dtype.itemsize > RING_BYTES:
        raise ValueError(f"secure aggregation: codes must be unsigned integers of at most "
                         f"{RING_BITS} bits, got {codes.dtype}")
    return codes.reshape(-1).astype(RING_DTYPE)  # astype copies: the caller's codes stay


def mask_codes(codes: np.ndarray, client_id: int, cohort: Sequence[int], seed: int,
               round_index: int) -> np.ndarray:
    """Client client_id's masked payload: codes + PRG(b_i) + sum_{j > i} PRG(s_ij)
    - sum_{j < i} PRG(s_ji) over the cohort, mod 2**32 (a new uint32 array).

    Uses only public information (cohort, round) and the client's own seeds, so any rank can
    mask any client. Cost: one PRG vector per cohort member."""
    ids = _cohort(cohort)
    i = int(client_id)
    if i not in ids:
        raise ValueError(f"secure aggregation: client {i} is not in the cohort")
    out = _as_ring(codes)
    n = out.size
    np.add(out, self_mask(seed, round_index, i, n), out=out)
    for j in ids:
        if j > i:
            np.add(out, pair_mask(seed, round_index, i, j, n), out=out)
        elif j < i:
            np.subtract(out, pair_mask(seed, round_index, j, i, n), out=out)
    return out


def ring_sum(payloads: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of uint32 vectors of equal length mod 2**32 (what the root computes on arrival)."""
    if not payloads:
        raise ValueError("secure aggregation: ring_sum of no payloads")
    n = np.asarray(payloads[0]).size
    out = np.zeros(n, dtype=RING_DTYPE)
    for p in payloads:
        p = np.asarray(p)
        if p.dtype != RING_DTYPE or p.size != n:
            raise ValueError(f"secure aggregation: payloads must be uint32 vectors of {n} words, "
                             f"got {p.dtype} of {p.size}")
        np.add(out, p.reshape(-1), out=out)
    return out


def default_threshold(cohort_size: int) -> int:
    """A strict majority, floor(n/2) + 1: the paper's bound against an honest-but-curious
    server colluding with fewer than half of the clients."""
    return cohort_size // 2 + 1


def round_threshold(cohort_size: int, min_clients: int) -> int:
    """The survivors a round needs before anything is unmasked: a strict majority of the cohort
    and never fewer than `min_clients` (privacy.secagg_min_clients, at least 2: the "sum" of one
    client is that client's update in the clear)."""
    return max(int(min_clients), default_threshold(cohort_size))


def _check_threshold(cohort_size: int, survivors: int, threshold: int) -> None:
    if not 1 <= threshold <= cohort_size:
        raise ValueError(f"secure aggregation: threshold must be in [1, {cohort_size}], "
                         f"got {threshold}")
    if survivors < threshold:
        raise ValueError(f"secure aggregation: {survivors} survivors are fewer than the "
                         f"threshold {threshold}; the dropped clients' masks cannot be removed")


def unmask_sum(masked_sum: np.ndarray, survivors: Sequence[int], dropped: Sequence[int],
               cohort: Sequence[int], seed: int, round_index: int,
               threshold: int | None = None) -> np.ndarray:
    """The survivors' code sum (uint32, exact) from the ring sum of their masked payloads.

    survivors and dropped must split the cohort (dropped: advertised keys and sent shares, but
    its masked input never arrived). Removes each survivor's self-mask and, for every dropped d
    and survivor j, the pairwise mask j left uncancelled: j added PRG(s_jd) if d > j, subtracted
    PRG(s_dj) if d < j. Pairs of survivors cancelled in the sum already.

    The seeds are recomputed (the protocol reconstructs them from the survivors' shares). The
    threshold (default: default_threshold of the cohort size) is only checked: ValueError if
    fewer clients survived. Cost: one PRG vector per survivor and per (dropped, survivor) pair."""
    ids = _cohort(cohort)
    alive, gone = _cohort(survivors), _cohort(dropped)
    if set(alive) & set(gone) or sorted(alive + gone) != ids:
        raise ValueError("secure aggregation: survivors and dropped must split the cohort")
    _check_threshold(len(ids), len(alive), default_threshold(len(ids)) if threshold is None
                     else int(threshold))
    s = np.asarray(masked_sum)
    if s.dtype != RING_DTYPE:
        raise ValueError(f"secure aggregation: the masked sum must be uint32, got {s.dtype}")
    out = s.reshape(-1).copy()
    n = out.size
    for j in alive:
        np.subtract(out, self_mask(seed, round_index, j, n), out=out)
    for d in gone:
        for j in alive:
            m = pair_mask(seed, round_index, j, d, n)
            if d > j:
                np.subtract(out, m, out=out)
            else:
                np.add(out, m, out=out)
    return out


# ---------------------------------------------------------------------------------------------
# Bytes

def masked_payload_size(n: int) -> int:
    """Bytes of one masked vector of n coordinates: 4 each. The masked words are uniform on the
    whole ring, so unlike the codes they cannot be packed into fewer than 32 bits."""
    return RING_BYTES * int(n)


def share_ciphertext_bytes(share_bytes: int = SHARE_BYTES, id_bytes: int = ID_BYTES,
                           tag_bytes: int = TAG_BYTES) -> int:
    """One client's encrypted message to one peer: (sender id, recipient id, share of s_sk,
    share of b) under AEAD, i.e. 2 ids + 2 shares + the tag."""
    return 2 * id_bytes + 2 * share_bytes + tag_bytes


def protocol_bytes(cohort_size: int, num_dropped: int, threshold: int,
                   key_bytes: int = KEY_BYTES, share_bytes: int = SHARE_BYTES,
                   id_bytes: int = ID_BYTES, tag_bytes: int = TAG_BYTES) -> dict[str, dict[str, int]]:
    """Extra bytes of one round of the protocol, beyond the masked payloads, by phase:
    {phase: {"up": clients to server, "down": server to clients}} plus "total".

    Cost model (n = cohort_size, d = num_dropped, s = n - d survivors; honest-but-curious
    version, no signatures, ids only where a message must carry them):
    - advertise_keys: each client sends its two public keys (c_pk for encryption, s_pk for the
      masks): up = n * 2 * key_bytes. The server broadcasts the list (id, c_pk, s_pk) of all n
      clients to each: down = n * n * (id_bytes + 2 * key_bytes).
    - share_keys: each client sends one AEAD ciphertext per peer, holding its Shamir shares of
      s_sk and b (share_ciphertext_bytes: 2 ids + 2 shares + tag): up = n * (n - 1) * c. The
      server forwards each to its recipient: down = up. Every one of the n is still online.
    - masked_input: zero here; the payloads (masked_payload_size each) are the transport's.
    - unmasking: the server sends each survivor the survivor list: down = s * s * id_bytes.
      Each survivor answers with its share of s_sk of each dropped client and of b of each
      survivor, itself included, in list order: up = s * (d + s) * share_bytes.
    A Shamir share is one field element whatever the threshold t, and the server needs only t
    shares per secret, but every survivor sends all of its own (the paper's round 4); so t only
    enters as the check: ValueError unless 1 <= t <= n and s >= t."""
    n, d = int(cohort_size), int(num_dropped)
    if n < 1 or not 0 <= d <= n:
        raise ValueError(f"secure aggregation: need cohort_size >= 1 and 0 <= num_dropped <= "
                         f"cohort_size, got {n} and {d}")
    s = n - d
    _check_threshold(n, s, int(threshold))
    c = share_ciphertext_bytes(share_bytes, id_bytes, tag_bytes)
    phases = {
        "advertise_keys": {"up": n * 2 * key_bytes, "down": n * n * (id_bytes + 2 * key_bytes)},
        "share_keys": {"up": n * (n - 1) * c, "down": n * (n - 1) * c},
        "masked_input": {"up": 0, "down": 0},
        "unmasking": {"up": s * (d + s) * share_bytes, "down": s * s * id_bytes},
    }
    phases["total"] = {k: sum(p[k] for p in phases.values()) for k in ("up", "down")}
    return phases
