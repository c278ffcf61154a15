"""Samples and scores of a partially shared run (federation.shared_parts): its model is one per
client (the shared parts, the client's own private parts), so what it generates is the mixture
of the clients' models.

An N-sample evaluation draws an equal share from every client's model (client c gets
N // K samples, one more for the first N % K clients), each with its own seed
(seeding.CLIENT_SAMPLE: clients never start from the same noise), concatenated in client
order; the mixture is scored like a global model's samples (comparable FD). Each client's
share is also scored against that client's own training images (FD at n = its share, so
biased upwards against an N-sample FD: compare per-client FDs with each other, not with the
mixture's), with its class histogram against the client's label distribution.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from feddm_hpc import seeding

MIN_CLIENT_SAMPLES = 10   # below this a client's share gets no FD of its own (PRDC's k = 5)


def share_counts(num: int, num_clients: int) -> List[int]:
    """Samples per client of an equal split of `num` (the first num % K clients one more)."""
    base, extra = divmod(num, num_clients)
    return [base + (1 if c < extra else 0) for c in range(num_clients)]


def generate_mixture(comm, model, schedule, client_params: Sequence[np.ndarray], image_shape,
                     num: int, sampler: str, steps: int, eta: float, seed: int, round_index: int,
                     device: str, prediction: str = "eps"
                     ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Collective. `client_params[c]`: client c's flat model vector (the root's values are
    used; other ranks pass arrays of the same size). Returns (float32 images [num, C, H, W],
    owning client id per image) on the root, (None, None) elsewhere. Rank-count invariant as
    generation.generate_samples is."""
    from feddm_hpc.evaluation.generation import generate_samples

    counts = share_counts(num, len(client_params))
    images, owners = [], []
    for cid, (params, n) in enumerate(zip(client_params, counts)):
        if n == 0:
            continue
        x = generate_samples(comm, model, schedule, params, image_shape, n, sampler, steps, eta,
                             seeding.client_sample_seed(seed, cid), round_index, device, prediction=prediction)
        if comm.rank == 0:
            images.append(x)
            owners.append(np.full(n, cid, dtype=np.int64))
    if comm.rank != 0:
        return None, None
    return np.concatenate(images), np.concatenate(owners)


def per_client_scores(fake: np.ndarray, owners: np.ndarray, reference,
                      client_indices: Sequence[np.ndarray], label_histogram=None,
                      seed: int = 0) -> dict:
    """Root: each client's share of the mixture against its own training images (FD at n = its
    share, from a seeded subset of its shard of that size) and, with labels, the total-variation
    distance of its class histogram to the client's label distribution."""
    from feddm_hpc.evaluation.generation import to_uint8_nhwc
    from feddm_hpc.evaluation.per_client import evaluate_per_client
    from feddm_hpc.evaluation.scores import evaluate_samples

    clients = sorted(int(c) for c in np.unique(owners))
    fds: List[Optional[float]] = []
    mine: Dict[int, np.ndarray] = {}
    for cid in clients:
        fake_u8 = to_uint8_nhwc(fake[owners == cid])
        mine[cid] = fake_u8
        shard = np.sort(np.asarray(client_indices[cid]))
        n = min(len(fake_u8), shard.size)
        if reference.extractor is None or n < MIN_CLIENT_SAMPLES:
            fds.append(None)
            continue
        # evaluate_samples takes a seeded subset of n of the shard's images
        scores = evaluate_samples(fake_u8[:n], reference.images[shard], reference.extractor,
                                  reference.num_classes, seed=seed)
        fds.append(float(scores["fd"]))
    valid = [f for f in fds if f is not None]
    out = {"clients": clients, "samples": [int((owners == c).sum()) for c in clients],
           "fd_own_data": fds,
           "fd_own_data_mean": float(np.mean(valid)) if valid else None,
           "fd_own_data_std": float(np.std(valid, ddof=1)) if len(valid) > 1 else None}
    if label_histogram is not None and reference.extractor is not None:
        per = evaluate_per_client(mine, reference.extractor, label_histogram)
        out["class_histogram_distance"] = per["client_class_histogram_distance"]
    return out
