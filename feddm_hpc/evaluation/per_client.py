"""Per-client evaluation: how close the class histogram of generated samples comes to each
client's own label distribution (global samples against every client, or each personalized
model's samples against its own client)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np


def client_histogram_distances(fake_histogram, label_histogram) -> list:
    """Total-variation distance between one class histogram of generated samples and each
    client's own label distribution (rows of partition.json's `label_histogram`)."""
    from feddm_hpc.evaluation.quality import histogram_distance

    return [histogram_distance(fake_histogram, row) if np.sum(row) > 0 else None
            for row in np.asarray(label_histogram, dtype=np.float64)]


def evaluate_per_client(fake_images: Union[np.ndarray, Mapping[int, np.ndarray]], extractor,
                        label_histogram: Sequence[Sequence[int]]) -> dict:
    """Class-histogram distance of generated samples to each client's label distribution.

    `fake_images`: one array (samples of the global model, compared with every client) or a
    mapping client id -> that client's own samples (personalized models). Images are uint8
    [N,H,W,C] or float [N,C,H,W] in [-1,1]. The fake histogram is the extractor's predictions
    (its test error biases it slightly); the client side is the true label counts.
    """
    from feddm_hpc.evaluation.quality import class_histogram, histogram_distance

    hist = np.asarray(label_histogram, dtype=np.float64)
    k = hist.shape[1]
    if isinstance(fake_images, Mapping):
        per, fake_hists = [], {}
        for cid, imgs in sorted(fake_images.items()):
            h = class_histogram(extractor.predict(imgs), k)
            fake_hists[int(cid)] = h.tolist()
            per.append(histogram_distance(h, hist[cid]) if hist[cid].sum() > 0 else None)
        clients = [int(c) for c in sorted(fake_images)]
        out = {"clients": clients, "class_histograms": fake_hists}
    else:
        h = class_histogram(extractor.predict(fake_images), k)
        per = client_histogram_distances(h, hist)
        clients = list(range(hist.shape[0]))
        out = {"clients": clients, "class_histogram": h.tolist()}
    valid = [v for v in per if v is not None]
    out.update(client_class_histogram_distance=per,
               mean_client_distance=float(np.mean(valid)) if valid else None,
               max_client_distance=float(np.max(valid)) if valid else None)
    return out


def read_label_histogram(run_dir) -> Optional[list]:
    """partition.json's per-client label counts, or None (unlabelled data or no file)."""
    path = Path(run_dir) / "partition.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("label_histogram")
