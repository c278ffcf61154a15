"""Split a dataset's example indices among clients: iid, dirichlet (label skew), shards.

Every scheme returns one sorted int64 index array per client; together they are disjoint and
cover every example exactly once, so sample counts always add up to the dataset size. All
randomness comes from one numpy Generator(PCG64(seed)): the same seed gives the same split on
every rank and every platform, with no communication.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from feddm_hpc.errors import ConfigError

SCHEMES = ("iid", "dirichlet", "dirichlet_balanced", "shards")
DIRICHLET_TRIES = 100  # resamples before declaring the settings impossible
FILL_ROUNDS = 8  # dirichlet_balanced: steps in which client quotas are filled


def partition(labels: Optional[np.ndarray], num_clients: int, scheme: str, *, seed: int,
              alpha: float = 0.5, classes_per_client: int = 2, min_samples: int = 1,
              num_examples: Optional[int] = None) -> list:
    """Indices of each client's examples. `labels` may be None (unlabelled data) only for
    iid, and then `num_examples` gives the dataset size. `min_samples` (the caller passes
    the batch size) is the least any client may hold."""
    if scheme not in SCHEMES:
        raise ConfigError(f"data.partition: unknown scheme {scheme!r}; valid: "
                          f"{', '.join(SCHEMES)}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) \
            or num_clients < 1:
        raise ConfigError(f"federation.num_clients: must be a positive integer, "
                          f"got {num_clients!r}")
    if labels is None:
        if scheme != "iid":
            raise ConfigError(f"data.partition: scheme {scheme!r} needs labels but the "
                              "dataset has none; use data.partition=iid")
        if num_examples is None:
            raise ValueError("partition: num_examples is required when labels is None")
        n = int(num_examples)
    else:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
            raise ValueError("partition: labels must be a 1-D array of non-negative integers")
        n = labels.size
    if num_clients * min_samples > n:
        raise ConfigError(
            f"federation.num_clients={num_clients} x client.batch_size={min_samples} needs "
            f"{num_clients * min_samples} examples but the dataset has {n}; use fewer clients "
            "or a smaller batch")
    rng = np.random.Generator(np.random.PCG64(seed))
    if scheme == "iid":
        parts = _iid(n, num_clients, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, min_samples, rng)
    elif scheme == "dirichlet_balanced":
        parts = _dirichlet_balanced(labels, num_clients, alpha, rng)
    else:
        parts = _shards(labels, num_clients, classes_per_client, min_samples, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _iid(n: int, num_clients: int, rng) -> list:
    # array_split of a permutation: sizes differ by at most one.
    return np.array_split(rng.permutation(n), num_clients)


def _dirichlet(labels, num_clients, alpha, min_samples, rng) -> list:
    """Label skew as in NIID-Bench / FedMA (Wang et al. 2020, Li et al. 2022): for each class,
    draw client proportions from Dir(alpha) and cut that class's shuffled indices accordingly.
    Clients already holding an equal share get no more of later classes, which keeps client
    sizes from collapsing onto a few clients (the source of most min-size failures)."""
    _check_alpha(alpha)
    n = labels.size
    by_class = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
    best = -1
    for _ in range(DIRICHLET_TRIES):
        parts = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, dtype=np.int64)
        for idx in by_class:
            if idx.size == 0:
                continue
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            p = np.where(sizes < n / num_clients, p, 0.0)
            total = p.sum()
            # All clients full only happens through rounding; fall back to uniform shares.
            p = p / total if total > 0 else np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for c, piece in enumerate(np.split(idx, cuts)):
                parts[c].append(piece)
                sizes[c] += piece.size
        best = max(best, int(sizes.min()))
        if sizes.min() >= min_samples:
            return [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    raise ConfigError(
        f"data.dirichlet_alpha={alpha} with federation.num_clients={num_clients}: after "
        f"{DIRICHLET_TRIES} draws some client still had fewer than client.batch_size="
        f"{min_samples} examples (best draw's smallest client: {best}); raise "
        "data.dirichlet_alpha, lower federation.num_clients or client.batch_size, or use "
        "data.partition=dirichlet_balanced (equal client sizes)")


def _check_alpha(alpha) -> None:
    try:
        ok = float(alpha) > 0 and np.isfinite(float(alpha))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"data.dirichlet_alpha: must be a positive number, got {alpha!r}")


def _dirichlet_balanced(labels, num_clients, alpha, rng) -> list:
    """Label skew with equal client sizes (Hsu et al. 2019): each client draws class
    proportions q ~ Dir(alpha) and fills its equal quota from them, without replacement.
    Unlike per-class Dirichlet it cannot starve clients, so it works with many clients and
    small alpha (where `dirichlet` leaves clients empty however often it resamples). Quotas
    are filled round-robin in FILL_ROUNDS steps, in a random client order, so that the classes
    running out near the end distort every client a little instead of the last few a lot."""
    _check_alpha(alpha)
    supply = np.bincount(labels).astype(np.int64)
    quota = np.array([p.size for p in np.array_split(np.arange(labels.size), num_clients)])
    q = rng.dirichlet(np.full(supply.size, float(alpha)), size=num_clients)
    counts = np.zeros((num_clients, supply.size), dtype=np.int64)
    order = rng.permutation(num_clients)
    for step in range(1, FILL_ROUNDS + 1):
        for c in order:
            _fill(c, quota[c] * step // FILL_ROUNDS - counts[c].sum(), q, supply, counts, rng)
    parts = [[] for _ in range(num_clients)]
    for k in range(supply.size):
        pool = rng.permutation(np.flatnonzero(labels == k))
        for c, piece in enumerate(np.split(pool, np.cumsum(counts[:, k])[:-1])):
            parts[c].append(piece)
    return [np.concatenate(p) for p in parts]


def _fill(c, need, q, supply, counts, rng) -> None:
    """Give client c `need` more examples, drawn by its class proportions q[c] from what is
    left in `supply` (updated in place)."""
    while need > 0:  # each pass takes >= 1 example: supply covers every quota in total
        p = np.where(supply > 0, q[c], 0.0)
        # q can underflow to 0 on every class left (tiny alpha): then take them evenly.
        p = p / p.sum() if p.sum() > 0 else (supply > 0) / (supply > 0).sum()
        take = np.minimum(rng.multinomial(need, p), supply)
        counts[c] += take
        supply -= take
        need -= int(take.sum())


def _shard_counts(class_sizes: np.ndarray, num_shards: int) -> np.ndarray:
    """Shards per class, proportional to class size, at least one per present class
    (largest-remainder rounding, ties to the lower class id for determinism)."""
    present = class_sizes > 0
    counts = present.astype(np.int64)
    extra = num_shards - counts.sum()
    want = class_sizes / class_sizes.sum() * num_shards - counts
    want = np.maximum(want, 0.0)
    if want.sum() > 0:
        want = want / want.sum() * extra
    base = np.floor(want).astype(np.int64)
    counts += base
    rest = int(num_shards - counts.sum())
    order = np.lexsort((np.arange(want.size), -(want - base)))
    counts[order[:rest]] += 1
    return counts


def _shards(labels, num_clients, classes_per_client, min_samples, rng) -> list:
    """McMahan et al.'s pathological non-IID split, made exact: every class is cut into
    single-class shards (so a client with k shards sees at most k classes, which the classic
    cut of the label-sorted array does not guarantee) and each client gets k random shards."""
    k = classes_per_client
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"data.classes_per_client: must be a positive integer, got {k!r}")
    num_shards = num_clients * k
    class_sizes = np.bincount(labels)
    num_present = int((class_sizes > 0).sum())
    if num_shards < num_present:
        raise ConfigError(
            f"data.partition=shards: federation.num_clients={num_clients} x "
            f"data.classes_per_client={k} = {num_shards} shards cannot hold all {num_present} "
            "classes; raise one of them (or use data.partition=dirichlet)")
    counts = _shard_counts(class_sizes, num_shards)
    if np.any(counts > class_sizes):
        raise ConfigError(f"data.partition=shards: {num_shards} shards is more than a small "
                          "class has examples; lower federation.num_clients or "
                          "data.classes_per_client")
    shards = []
    for cls, m in enumerate(counts):
        if m:
            shards.extend(np.array_split(rng.permutation(np.flatnonzero(labels == cls)), m))
    order = rng.permutation(num_shards)
    parts = [np.concatenate([shards[s] for s in order[c * k:(c + 1) * k]])
             for c in range(num_clients)]
    smallest = min(p.size for p in parts)
    if smallest < min_samples:
        raise ConfigError(
            f"data.partition=shards: a client got {smallest} examples, fewer than "
            f"client.batch_size={min_samples}; lower federation.num_clients, "
            "data.classes_per_client or client.batch_size")
    return parts


def label_histograms(labels: np.ndarray, parts: list, num_classes: int) -> np.ndarray:
    """[num_clients, num_classes] int64: how many examples of each class each client holds."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes)[:num_classes]
                     for p in parts]).astype(np.int64)


def summarize_partition(hist: np.ndarray) -> str:
    """One log line describing a partition's sizes and label skew."""
    hist = np.asarray(hist)
    sizes = hist.sum(axis=1)
    present = (hist > 0).sum(axis=1)
    return (f"partition: {hist.shape[0]} clients, {int(sizes.sum())} examples; per client "
            f"min/median/max = {int(sizes.min())}/{int(np.median(sizes))}/{int(sizes.max())}; "
            f"classes present mean {present.mean():.2f} (min {int(present.min())}, "
            f"max {int(present.max())}) of {hist.shape[1]}")
